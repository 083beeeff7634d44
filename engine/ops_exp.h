/* ops_exp.h: the engine's exp for softmax-like sums (internal to engine/ops*.c).
 *
 * exp(x) for x <= 0 in float: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by
 * a degree-6 polynomial (relative error about 2e-7), 2^k through the
 * exponent bits; below -87 (where expf underflows) it returns about 1e-38.
 * One scalar form and one of 8 lanes (AVX2), the same operations in the
 * same order (fused where the other is), so the same bits: code that takes
 * the vector form for whole blocks and the scalar one for the tail gets
 * what the scalar form alone would give.
 */
#ifndef RC_OPS_EXP_H
#define RC_OPS_EXP_H

#include <math.h>
#include <stdint.h>

/* The x86 vector paths (chosen at run time from CPUID, compiled through
 * target attributes whatever the file's flags) need x86 intrinsics. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define OPS_X86 1
#endif

#define OPS_EXP_LOW -87.0f
#define OPS_EXP_LOG2E 1.44269504088896341f
#define OPS_EXP_LN2_HI 0.693359375f
#define OPS_EXP_LN2_LO -2.12194440e-4f
static const float ops_exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                      4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

static inline float ops_exp_nonpositive(float x)
{
    x = x > OPS_EXP_LOW ? x : OPS_EXP_LOW; /* a NaN becomes OPS_EXP_LOW, as _mm256_max_ps does */
    const float k = nearbyintf(x * OPS_EXP_LOG2E);
    const float r = fmaf(-k, OPS_EXP_LN2_LO, fmaf(-k, OPS_EXP_LN2_HI, x));
    float p = ops_exp_poly[0];
    for (int i = 1; i < 6; i++)
        p = fmaf(p, r, ops_exp_poly[i]);
    p = fmaf(p * r, r, r) + 1.0f;
    const union { int32_t bits; float value; } scale = {.bits = ((int32_t)k + 127) << 23};
    return p * scale.value;
}

#ifdef OPS_X86
/* ops_exp_nonpositive of each lane. */
static inline __attribute__((target("avx2,fma"))) __m256 ops_exp8_nonpositive(__m256 x)
{
    const __m256 v = _mm256_max_ps(x, _mm256_set1_ps(OPS_EXP_LOW));
    const __m256 k =
        _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(OPS_EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(OPS_EXP_LN2_LO),
                                      _mm256_fnmadd_ps(k, _mm256_set1_ps(OPS_EXP_LN2_HI), v));
    __m256 p = _mm256_set1_ps(ops_exp_poly[0]);
    for (int i = 1; i < 6; i++)
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ops_exp_poly[i]));
    p = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
#endif

#endif
