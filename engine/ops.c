#include "ops.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The AVX2 paths below (chosen at run time from CPUID, compiled through
 * target attributes whatever the file's flags) need x86 intrinsics. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#endif

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

void ops_layernorm(float *x, int n, int dim, const float *gamma, const float *beta, float eps)
{
    for (int r = 0; r < n; r++) {
        float *row = x + (size_t)r * dim;
        double sum = 0.0;
        for (int i = 0; i < dim; i++)
            sum += row[i];
        const float mean = (float)(sum / dim);
        double sq = 0.0;
        for (int i = 0; i < dim; i++) {
            const float d = row[i] - mean;
            sq += (double)d * d;
        }
        const float inv = (float)(1.0 / sqrt(sq / dim + eps));
        for (int i = 0; i < dim; i++)
            row[i] = (row[i] - mean) * inv * gamma[i] + beta[i];
    }
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

void ops_attention(const float *q, const float *kv, int n_keys, int ld_kv, int v_offset, int n_heads,
                   int head_dim, float *out, float *scores)
{
    ops_attention_rows(q, kv, NULL, n_keys, ld_kv, v_offset, n_heads, head_dim, out, scores);
}

/* Attention's inner loops in OPS_LANES interleaved partial sums (element i
 * of a block goes to lane i): independent chains that the compiler keeps in
 * vector registers, where one running sum would wait on each addition's
 * latency (that made attention a third of a decoding step at batch 32).
 * The order is fixed by the code, so results are the same on every machine. */
enum { OPS_LANES = 16 };

/* a[0..n) . b[0..n): per-lane sums, then the lanes added pairwise. */
static float dot_lanes(const float *restrict a, const float *restrict b, int n)
{
    float lane[OPS_LANES] = {0};
    int i = 0;
    for (; i + OPS_LANES <= n; i += OPS_LANES)
        for (int j = 0; j < OPS_LANES; j++)
            lane[j] += a[i + j] * b[i + j];
    for (int j = 0; i < n; i++, j++)
        lane[j] += a[i] * b[i];
    /* unrolled so that the lanes stay in registers (as loops, the additions
     * went one by one through memory: a fifth of cross-attention's time) */
#pragma GCC unroll 4
    for (int width = OPS_LANES / 2; width > 0; width /= 2)
#pragma GCC unroll 8
        for (int j = 0; j < width; j++)
            lane[j] += lane[j + width];
    return lane[0];
}

#ifdef HAVE_AVX2_PATH
/* dot_lanes of eight heads at once (q and k at head 0 of the eight,
 * head_dim a multiple of OPS_LANES), times scale, into out[0..8): the same
 * products and sums in the same order, so the same bits. One head at a time,
 * each reduction of 16 lanes to one was a chain of dependent shuffles and
 * adds (about 66 cycles a head, half of cross-attention's time); eight
 * heads share each step of the tree instead: lanes j and j + 8 in one add,
 * then j + 4, j + 2, j + 1 between vectors that hold two, four, eight heads. */
__attribute__((target("avx2"))) static void dot_lanes_8(const float *q, const float *k, int head_dim, float scale,
                                                        float *out)
{
    __m256 half[8]; /* head h's lanes j + lane[j + 8], j < 8 */
    for (int h = 0; h < 8; h++) {
        const float *a = q + (size_t)h * head_dim, *b = k + (size_t)h * head_dim;
        __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps(); /* lanes 0..7, 8..15 */
        for (int i = 0; i < head_dim; i += OPS_LANES) {
            low = _mm256_add_ps(low, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
            high = _mm256_add_ps(high, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
        }
        half[h] = _mm256_add_ps(low, high);
    }
    /* j + 4: heads h and h + 1 side by side, lanes 0..3 each */
    __m256 quarter[4];
    for (int p = 0; p < 4; p++)
        quarter[p] = _mm256_add_ps(_mm256_permute2f128_ps(half[2 * p], half[2 * p + 1], 0x20),
                                   _mm256_permute2f128_ps(half[2 * p], half[2 * p + 1], 0x31));
    /* j + 2: lanes 0..1 of heads (0, 2 | 1, 3) and (4, 6 | 5, 7) */
    __m256 eighth[2];
    for (int p = 0; p < 2; p++)
        eighth[p] = _mm256_add_ps(_mm256_shuffle_ps(quarter[2 * p], quarter[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(quarter[2 * p], quarter[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* j + 1: heads 0, 2, 4, 6 | 1, 3, 5, 7 */
    const __m256 sums = _mm256_add_ps(_mm256_shuffle_ps(eighth[0], eighth[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm256_shuffle_ps(eighth[0], eighth[1], _MM_SHUFFLE(3, 1, 3, 1)));
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
    static const int head_of_lane[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int j = 0; j < 8; j++)
        out[head_of_lane[j]] = lanes[j];
}
#endif

/* acc[0..width) = sum over keys t of p[t] * (the t-th row of v)[0..width),
 * each lane one running sum in key order. Inlined with width OPS_LANES the
 * block stays in registers over all keys; added up in the output itself,
 * each key's update waited on the previous one's store. */
static inline __attribute__((always_inline)) void weighted_rows(float *acc, const float *p, const float *v,
                                                                const int *rows, int n_keys, int ld_kv, int width)
{
    for (int j = 0; j < width; j++)
        acc[j] = 0.0f;
    for (int t = 0; t < n_keys; t++) {
        const float *vt = v + (size_t)(rows ? rows[t] : t) * ld_kv;
        for (int j = 0; j < width; j++)
            acc[j] += p[t] * vt[j];
    }
}

void ops_attention_rows(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv, int v_offset,
                        int n_heads, int head_dim, float *out, float *scores)
{
    /* Keys outer, heads inner: each key's and value's row is read once, in
     * order. Head by head, the reads would jump a whole row (4 KB in the
     * card's model) at each key, a new page each time, which the hardware
     * prefetchers do not follow: the caches' misses made attention a quarter
     * of a decoding step at batch 32. */
    const float scale = 1.0f / sqrtf((float)head_dim);
    int grouped = 0; /* heads done eight at a time */
#ifdef HAVE_AVX2_PATH
    if (head_dim % OPS_LANES == 0 && __builtin_cpu_supports("avx2"))
        grouped = n_heads / 8 * 8;
#endif
    for (int t = 0; t < n_keys; t++) {
        const float *k = kv + (size_t)(rows ? rows[t] : t) * ld_kv;
#ifdef HAVE_AVX2_PATH
        for (int h0 = 0; h0 < grouped; h0 += 8) {
            float eight[8];
            dot_lanes_8(q + (size_t)h0 * head_dim, k + (size_t)h0 * head_dim, head_dim, scale, eight);
            for (int h = 0; h < 8; h++)
                scores[(size_t)(h0 + h) * n_keys + t] = eight[h];
        }
#endif
        for (int h = grouped; h < n_heads; h++)
            scores[(size_t)h * n_keys + t] =
                dot_lanes(q + (size_t)h * head_dim, k + (size_t)h * head_dim, head_dim) * scale;
    }
    for (int h = 0; h < n_heads; h++) {
        float *s = scores + (size_t)h * n_keys, max_score = -INFINITY, total = 0.0f;
        for (int t = 0; t < n_keys; t++)
            max_score = s[t] > max_score ? s[t] : max_score;
        for (int t = 0; t < n_keys; t++) {
            s[t] = expf(s[t] - max_score);
            total += s[t];
        }
        for (int t = 0; t < n_keys; t++)
            s[t] = s[t] / total;
    }
    /* Values head by head, in OPS_LANES-wide blocks of the head's output */
    for (int h = 0; h < n_heads; h++) {
        const float *p = scores + (size_t)h * n_keys;
        for (int d0 = 0; d0 < head_dim; d0 += OPS_LANES) {
            const int width = head_dim - d0 < OPS_LANES ? head_dim - d0 : OPS_LANES;
            const float *v = kv + v_offset + (size_t)h * head_dim + d0;
            float acc[OPS_LANES];
            if (width == OPS_LANES)
                weighted_rows(acc, p, v, rows, n_keys, ld_kv, OPS_LANES);
            else
                weighted_rows(acc, p, v, rows, n_keys, ld_kv, width);
            memcpy(out + (size_t)h * head_dim + d0, acc, sizeof(float) * width);
        }
    }
}

int ops_argmax(const float *x, int n)
{
    /* The first index of the largest non-NaN value (what "replace when
     * strictly larger" gives, from x[0]), found in two passes the compiler
     * vectorises: the maximum in lanes (see dot_lanes), then its first
     * position. One pass that compares each element with x[best] waits on
     * every comparison: it took 2.4% of a caption's time over 30522 logits. */
    if (n <= 0 || isnan(x[0]))
        return 0;
    float lane[OPS_LANES];
    for (int j = 0; j < OPS_LANES; j++)
        lane[j] = x[0];
    int i = 0;
    for (; i + OPS_LANES <= n; i += OPS_LANES)
        for (int j = 0; j < OPS_LANES; j++)
            lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    float max_x = x[0];
    for (; i < n; i++)
        max_x = x[i] > max_x ? x[i] : max_x;
    for (int j = 0; j < OPS_LANES; j++)
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

/* exp(x) for x <= 0 in float: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by
 * a degree-6 polynomial (relative error about 2e-7), 2^k through the
 * exponent bits; below -87 (where expf underflows) it returns about 1e-38.
 * The same steps in scalar code and 8 at a time with AVX2. */
#define EXP_LOW -87.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
static const float exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

static float exp_nonpositive(float x)
{
    x = x > EXP_LOW ? x : EXP_LOW;
    const float k = nearbyintf(x * EXP_LOG2E);
    const float r = (x - k * EXP_LN2_HI) - k * EXP_LN2_LO;
    float p = exp_poly[0];
    for (int i = 1; i < 6; i++)
        p = p * r + exp_poly[i];
    p = p * r * r + r + 1.0f;
    const union { int32_t bits; float value; } scale = {.bits = ((int32_t)k + 127) << 23};
    return p * scale.value;
}

#ifdef HAVE_AVX2_PATH
/* The sum of exp(x[i] - shift) over i < n8 (a multiple of 8), in float
 * lanes summed in double every 256 elements. */
__attribute__((target("avx2,fma"))) static double sum_exp_avx2(const float *x, int n8, float shift)
{
    const __m256 low = _mm256_set1_ps(EXP_LOW), log2e = _mm256_set1_ps(EXP_LOG2E);
    const __m256 ln2_hi = _mm256_set1_ps(EXP_LN2_HI), ln2_lo = _mm256_set1_ps(EXP_LN2_LO);
    const __m256 one = _mm256_set1_ps(1.0f), sub = _mm256_set1_ps(shift);
    double total = 0.0;
    for (int start = 0; start < n8; start += 256) {
        const int end = start + 256 < n8 ? start + 256 : n8;
        __m256 acc = _mm256_setzero_ps();
        for (int i = start; i < end; i += 8) {
            __m256 v = _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sub), low);
            const __m256 k = _mm256_round_ps(_mm256_mul_ps(v, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            const __m256 r = _mm256_fnmadd_ps(k, ln2_lo, _mm256_fnmadd_ps(k, ln2_hi, v));
            __m256 p = _mm256_set1_ps(exp_poly[0]);
            for (int c = 1; c < 6; c++)
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_poly[c]));
            p = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), one);
            const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
            acc = _mm256_fmadd_ps(p, _mm256_castsi256_ps(bits), acc);
        }
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
#ifdef HAVE_AVX2_PATH
    if (n >= 8 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        vector_part = n / 8 * 8;
#endif
    float max_x = -INFINITY;
#ifdef HAVE_AVX2_PATH
    if (vector_part)
        max_x = max_avx2(x, vector_part);
#endif
    for (int i = vector_part; i < n; i++)
        max_x = x[i] > max_x ? x[i] : max_x;
    if (!isfinite(max_x))
        return max_x;
    double total = 0.0;
#ifdef HAVE_AVX2_PATH
    if (vector_part)
        total = sum_exp_avx2(x, vector_part, max_x);
#endif
    for (int i = vector_part; i < n; i++)
        total += exp_nonpositive(x[i] - max_x);
    return max_x + (float)log(total);
}
