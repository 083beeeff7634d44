#include "ops.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops_exp.h"

int ops_conv_out(int in, int kernel, int stride, int pad)
{
    return (in + 2 * pad - kernel) / stride + 1;
}

void ops_pad(const float *x, int h, int w, int c, int pad, float *y)
{
    const size_t row = (size_t)w * c, border = (size_t)pad * c, band = (size_t)pad * (w + 2 * pad) * c;
    memset(y, 0, sizeof(float) * band); /* the rows above */
    y += band;
    for (int iy = 0; iy < h; iy++, y += row + 2 * border) {
        memset(y, 0, sizeof(float) * border);
        memcpy(y + border, x + iy * row, sizeof(float) * row);
        memset(y + border + row, 0, sizeof(float) * border);
    }
    memset(y, 0, sizeof(float) * band); /* the rows below */
}

void ops_maxpool(const float *x, int h, int w, int c, int kernel, int stride, int pad, float *y)
{
    const int oh = ops_conv_out(h, kernel, stride, pad), ow = ops_conv_out(w, kernel, stride, pad);
    for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
            float *dst = y + ((size_t)oy * ow + ox) * c;
            for (int ch = 0; ch < c; ch++)
                dst[ch] = -INFINITY;
            for (int ky = 0; ky < kernel; ky++) {
                const int iy = oy * stride - pad + ky;
                if (iy < 0 || iy >= h)
                    continue;
                for (int kx = 0; kx < kernel; kx++) {
                    const int ix = ox * stride - pad + kx;
                    if (ix < 0 || ix >= w)
                        continue;
                    const float *src = x + ((size_t)iy * w + ix) * c;
                    for (int ch = 0; ch < c; ch++)
                        dst[ch] = src[ch] > dst[ch] ? src[ch] : dst[ch];
                }
            }
        }
}

void ops_chw_to_hwc(const float *x, int c, int h, int w, float *y)
{
    const size_t plane = (size_t)h * w;
    for (size_t p = 0; p < plane; p++)
        for (int ch = 0; ch < c; ch++)
            y[p * c + ch] = x[ch * plane + p];
}

/* Sums of a row in LAYERNORM_LANES interleaved double lanes (element i to
 * lane i % LAYERNORM_LANES), then the lanes in order: independent chains
 * the compiler vectorises, where one running double sum waited on each
 * addition (12 x 128 rows took 7% of a decoding step at batch 128). */
enum { LAYERNORM_LANES = 8, LAYERNORM_PARALLEL_MIN = 1 << 14 };

/* The lanes' total. */
static double lanes_total(const double *lane)
{
    double total = 0.0;
    for (int j = 0; j < LAYERNORM_LANES; j++)
        total += lane[j];
    return total;
}

static void layernorm_row(const float *x, float *y, int dim, const float *gamma, const float *beta, float eps)
{
    double lane[LAYERNORM_LANES] = {0};
    int i = 0;
    for (; i + LAYERNORM_LANES <= dim; i += LAYERNORM_LANES)
        for (int j = 0; j < LAYERNORM_LANES; j++)
            lane[j] += x[i + j];
    for (int j = 0; i < dim; i++, j++)
        lane[j] += x[i];
    const float mean = (float)(lanes_total(lane) / dim);
    memset(lane, 0, sizeof lane);
    for (i = 0; i + LAYERNORM_LANES <= dim; i += LAYERNORM_LANES)
        for (int j = 0; j < LAYERNORM_LANES; j++) {
            const float d = x[i + j] - mean;
            lane[j] += (double)d * d;
        }
    for (int j = 0; i < dim; i++, j++) {
        const float d = x[i] - mean;
        lane[j] += (double)d * d;
    }
    const float inv = (float)(1.0 / sqrt(lanes_total(lane) / dim + eps));
    for (i = 0; i < dim; i++)
        y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
}

void ops_layernorm(const float *x, float *y, int n, int dim, const float *gamma, const float *beta, float eps)
{
#pragma omp parallel for schedule(static) if ((size_t)n * dim >= LAYERNORM_PARALLEL_MIN)
    for (int r = 0; r < n; r++)
        layernorm_row(x + (size_t)r * dim, y + (size_t)r * dim, dim, gamma, beta, eps);
}

void ops_clamp(float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] < lo ? lo : (x[i] > hi ? hi : x[i]);
}

void ops_roll_mean(const float *x, int len, int dim, int half, float *y)
{
    const float inv = 1.0f / (float)(2 * half + 1);
    for (int t = 0; t < len; t++) {
        float *dst = y + (size_t)t * dim;
        memset(dst, 0, sizeof(float) * dim);
        /* same summation order as torch.stack(rolls for s = -half..half).mean() */
        for (int s = -half; s <= half; s++) {
            int src_t = ((t - s) % len + len) % len;
            const float *src = x + (size_t)src_t * dim;
            for (int i = 0; i < dim; i++)
                dst[i] += src[i];
        }
        for (int i = 0; i < dim; i++)
            dst[i] *= inv;
    }
}

/* Lanes of argmax's first pass: independent comparisons the compiler keeps
 * in vector registers (see ops_attention.c for the same idea in sums). */
enum { ARGMAX_LANES = 16 };

int ops_argmax(const float *x, int n)
{
    /* The first index of the largest non-NaN value (what "replace when
     * strictly larger" gives, from x[0]), found in two passes the compiler
     * vectorises: the maximum in lanes, then its first position. One pass
     * that compares each element with x[best] waits on every comparison:
     * it took 2.4% of a caption's time over 30522 logits. */
    if (n <= 0 || isnan(x[0]))
        return 0;
    float lane[ARGMAX_LANES];
    for (int j = 0; j < ARGMAX_LANES; j++)
        lane[j] = x[0];
    int i = 0;
    for (; i + ARGMAX_LANES <= n; i += ARGMAX_LANES)
        for (int j = 0; j < ARGMAX_LANES; j++)
            lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    float max_x = x[0];
    for (; i < n; i++)
        max_x = x[i] > max_x ? x[i] : max_x;
    for (int j = 0; j < ARGMAX_LANES; j++)
        max_x = lane[j] > max_x ? lane[j] : max_x;
    for (i = 0; x[i] != max_x; i++)
        ;
    return i;
}

float ops_logsumexp(const float *x, int n)
{
    float max_x = -INFINITY;
    for (int i = 0; i < n; i++)
        max_x = x[i] > max_x ? x[i] : max_x;
    if (!isfinite(max_x))
        return max_x;
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += exp((double)(x[i] - max_x));
    return max_x + (float)log(total);
}

#ifdef OPS_X86
/* The sum of exp(x[i] - shift) over i < n8 (a multiple of 8), in float
 * lanes summed in double every 256 elements. */
__attribute__((target("avx2,fma"))) static double sum_exp_avx2(const float *x, int n8, float shift)
{
    const __m256 sub = _mm256_set1_ps(shift);
    double total = 0.0;
    for (int start = 0; start < n8; start += 256) {
        const int end = start + 256 < n8 ? start + 256 : n8;
        __m256 acc = _mm256_setzero_ps();
        for (int i = start; i < end; i += 8)
            acc = _mm256_add_ps(acc, ops_exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), sub)));
        float lanes[8];
        _mm256_storeu_ps(lanes, acc);
        for (int j = 0; j < 8; j++)
            total += lanes[j];
    }
    return total;
}

/* The largest of x[0..n8) (n8 a multiple of 8, at least 8). */
__attribute__((target("avx2"))) static float max_avx2(const float *x, int n8)
{
    __m256 best = _mm256_loadu_ps(x);
    for (int i = 8; i < n8; i += 8)
        best = _mm256_max_ps(best, _mm256_loadu_ps(x + i));
    float lanes[8];
    _mm256_storeu_ps(lanes, best);
    float max_x = lanes[0];
    for (int j = 1; j < 8; j++)
        max_x = lanes[j] > max_x ? lanes[j] : max_x;
    return max_x;
}
#endif

float ops_logsumexp_fast(const float *x, int n)
{
    int vector_part = 0;
#ifdef OPS_X86
    if (n >= 8 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        vector_part = n / 8 * 8;
#endif
    float max_x = -INFINITY;
#ifdef OPS_X86
    if (vector_part)
        max_x = max_avx2(x, vector_part);
#endif
    for (int i = vector_part; i < n; i++)
        max_x = x[i] > max_x ? x[i] : max_x;
    if (!isfinite(max_x))
        return max_x;
    double total = 0.0;
#ifdef OPS_X86
    if (vector_part)
        total = sum_exp_avx2(x, vector_part, max_x);
#endif
    for (int i = vector_part; i < n; i++)
        total += ops_exp_nonpositive(x[i] - max_x);
    return max_x + (float)log(total);
}
