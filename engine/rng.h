/* rng.h: a small deterministic random number generator (splitmix64 seeding
 * a xoshiro256** stream), so that random models and synthetic data are the
 * same on every machine for the same seed. State lives in the caller. */
#ifndef RC_RNG_H
#define RC_RNG_H

#include <stdint.h>

typedef struct rng_state {
    uint64_t s[4];
} rng_state;

void rng_seed(rng_state *r, uint64_t seed);
uint64_t rng_next(rng_state *r);
/* Uniform in [0, 1). */
double rng_uniform(rng_state *r);
/* Standard normal (Box-Muller). */
double rng_normal(rng_state *r);

#endif
