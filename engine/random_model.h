/* random_model.h: random weights in the real checkpoint's layout.
 *
 * The real checkpoint cannot be downloaded everywhere, so demos, tests and
 * benchmarks use a model of the same architecture and key names with random
 * weights. Every tensor is drawn independently (no two decoder layers alike,
 * non-zero attention biases, non-trivial LayerNorms and BatchNorm running
 * statistics), with scales that keep activations well-conditioned through
 * the whole ResNet and keep the graph layer's Hardtanh out of saturation, so
 * that different images get different captions.
 */
#ifndef RC_RANDOM_MODEL_H
#define RC_RANDOM_MODEL_H

#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "err.h"

typedef struct random_model {
    ckpt_tensor *tensors; /* (n_tensors) in PyTorch's state_dict order */
    int n_tensors;
    void *data;           /* one block holding every tensor's elements */
} random_model;

/* Draws a model for cfg from seed. */
int random_model_build(random_model *rm, const cfg_model *cfg, uint64_t seed, rc_error *err);
void random_model_free(random_model *rm);

#endif
