/* ops_attention.c: single-query scaled dot-product attention over several
 * heads (ops_attention, ops_attention_rows, ops_attention_plain: ops.h).
 *
 * Every sum has one order, fixed here, so that the AVX-512 path and the
 * plain C one give the same bits (a caption does not depend on the CPU):
 *   score(h, t)  = tree(lane) * scale, where lane[j] is the fmaf chain from 0
 *                  over i = j, j + 16, ... < head_dim of q[h, i] * k_t[h, i]
 *                  and tree adds lane[j] += lane[j + w] for w = 8, 4, 2, 1;
 *   weight(h, t) = e(t) / total, e(t) = ops_exp_nonpositive(score(h, t) -
 *                  the head's largest score), total = the SOFTMAX_LANES lanes
 *                  (lane j: e(t) for t = j mod SOFTMAX_LANES, summed in key
 *                  order) added pairwise as above;
 *   out(h, d)    = the fmaf chain from 0 over keys t in order of
 *                  weight(h, t) * v_t[h, d].
 * Interleaved lanes are independent chains that stay in vector registers,
 * where one running sum waited on each addition's latency.
 *
 * Keys are read in order, each row once per pass: head by head, the reads
 * jumped a whole row at each key (4 KB in the card's model), a new page
 * each time, which the hardware prefetchers do not follow.
 */
#include <stddef.h>
#include <string.h>

#include "ops.h"
#include "ops_exp.h"

enum { DOT_LANES = 16, SOFTMAX_LANES = 8 };

/* The t-th key row (its values are v_offset further). */
static inline const float *key_row(const float *kv, const int *rows, int t, int ld_kv)
{
    return kv + (size_t)(rows ? rows[t] : t) * ld_kv;
}

/* ---- the definition, in plain C ----------------------------------------- */

/* The total of lane[0..n) (n a power of two) by the definition's tree:
 * lane[j] += lane[j + w] for w = n / 2, n / 4, ..., 1; unrolled so that
 * the lanes stay in registers. */
static inline __attribute__((always_inline)) float tree_sum(float *lane, int n)
{
#pragma GCC unroll 4
    for (int width = n / 2; width > 0; width /= 2)
#pragma GCC unroll 8
        for (int j = 0; j < width; j++)
            lane[j] += lane[j + width];
    return lane[0];
}

static float dot_tree(const float *restrict a, const float *restrict b, int n)
{
    float lane[DOT_LANES] = {0};
    int i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int j = 0; j < DOT_LANES; j++)
            lane[j] = fmaf(a[i + j], b[i + j], lane[j]);
    for (int j = 0; i < n; i++, j++)
        lane[j] = fmaf(a[i], b[i], lane[j]);
    return tree_sum(lane, DOT_LANES);
}

static void scores_plain(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv, int n_heads,
                         int head_dim, float scale, float *scores)
{
    for (int t = 0; t < n_keys; t++) {
        const float *k = key_row(kv, rows, t, ld_kv);
        for (int h = 0; h < n_heads; h++)
            scores[(size_t)h * n_keys + t] =
                dot_tree(q + (size_t)h * head_dim, k + (size_t)h * head_dim, head_dim) * scale;
    }
}

static void values_plain(const float *weights, const float *kv, const int *rows, int n_keys, int ld_kv, int v_offset,
                         int n_heads, int head_dim, float *out)
{
    for (int h = 0; h < n_heads; h++)
        for (int d0 = 0; d0 < head_dim; d0 += DOT_LANES) {
            const int width = head_dim - d0 < DOT_LANES ? head_dim - d0 : DOT_LANES;
            const float *w = weights + (size_t)h * n_keys;
            float acc[DOT_LANES] = {0};
            for (int t = 0; t < n_keys; t++) {
                const float *v = key_row(kv, rows, t, ld_kv) + v_offset + (size_t)h * head_dim + d0;
                for (int j = 0; j < width; j++)
                    acc[j] = fmaf(w[t], v[j], acc[j]);
            }
            memcpy(out + (size_t)h * head_dim + d0, acc, sizeof(float) * width);
        }
}

/* ---- AVX-512 --------------------------------------------------------------- */

#ifdef OPS_X86
#define AVX512 __attribute__((target("avx512f")))

/* The 16 sums of the lanes of acc[0..16) by the tree of the definition, in
 * the order (4 * (c % 4) + c / 4 for c = 0..15): each step adds the lanes
 * w apart of two vectors and packs the halves side by side. */
static inline AVX512 __m512 tree16(const __m512 *acc)
{
    __m512 w8[8], w4[4], w2[2];
    for (int m = 0; m < 8; m++) /* lanes j + j + 8: pairs 2m | 2m + 1, 8 lanes each */
        w8[m] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * m], acc[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(acc[2 * m], acc[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int m = 0; m < 4; m++) /* j + 4: pairs 4m .. 4m + 3, one quarter (4 lanes) each */
        w4[m] = _mm512_add_ps(_mm512_shuffle_f32x4(w8[2 * m], w8[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(w8[2 * m], w8[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int m = 0; m < 2; m++) /* j + 2: quarter c holds pairs 8m + c and 8m + 4 + c, 2 lanes each */
        w2[m] = _mm512_add_ps(_mm512_shuffle_ps(w4[2 * m], w4[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(w4[2 * m], w4[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* j + 1: lane 4c + r holds pair c + 4r */
    return _mm512_add_ps(_mm512_shuffle_ps(w2[0], w2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(w2[0], w2[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Scores of 16 (key, head) pairs at a time, pairs in key-major order (the
 * card's 8 heads: two keys), so each reduction tree serves 16 dot products
 * and the keys are read in order. head_dim is a multiple of 16. */
static AVX512 void scores_avx512(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv,
                                 int n_heads, int head_dim, float scale, float *scores)
{
    const int pairs = n_keys * n_heads;
    int t = 0, h = 0; /* the chunk's first pair */
    for (int u0 = 0; u0 < pairs; u0 += 16) {
        const int count = pairs - u0 < 16 ? pairs - u0 : 16;
        __m512 acc[16];
        int key_of[16], head_of[16];
        const float *k = key_row(kv, rows, t, ld_kv);
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++) {
            acc[c] = _mm512_setzero_ps();
            if (c >= count)
                continue;
            const float *a = q + (size_t)h * head_dim, *b = k + (size_t)h * head_dim;
            for (int i = 0; i < head_dim; i += 16)
                acc[c] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc[c]);
            key_of[c] = t, head_of[c] = h;
            if (++h == n_heads) {
                h = 0;
                if (++t < n_keys)
                    k = key_row(kv, rows, t, ld_kv);
            }
        }
        float sums[16];
        _mm512_storeu_ps(sums, _mm512_mul_ps(tree16(acc), _mm512_set1_ps(scale)));
        for (int l = 0; l < 16; l++) {
            const int c = l / 4 + 4 * (l % 4);
            if (c < count)
                scores[(size_t)head_of[c] * n_keys + key_of[c]] = sums[l];
        }
    }
}

/* out[d0 .. d0 + 16 * vecs) over all keys; heads of head_dim (a multiple of
 * 16) each take their own weights. Inlined with vecs constant, the
 * accumulators stay in registers. */
static inline __attribute__((always_inline)) AVX512 void values_block(const float *weights, const float *kv,
                                                                     const int *rows, int n_keys, int ld_kv,
                                                                     int head_dim, int d0, int vecs, float *out)
{
    __m512 acc[8];
    const float *w[8];
    for (int z = 0; z < vecs; z++) {
        acc[z] = _mm512_setzero_ps();
        w[z] = weights + (size_t)((d0 + 16 * z) / head_dim) * n_keys;
    }
    for (int t = 0; t < n_keys; t++) {
        const float *v = key_row(kv, rows, t, ld_kv) + d0;
        for (int z = 0; z < vecs; z++)
            acc[z] = _mm512_fmadd_ps(_mm512_set1_ps(w[z][t]), _mm512_loadu_ps(v + 16 * z), acc[z]);
    }
    for (int z = 0; z < vecs; z++)
        _mm512_storeu_ps(out + d0 + 16 * z, acc[z]);
}

/* 128 outputs (8 vectors) per pass over the keys: enough independent
 * chains to hide the multiply-adds' latency, few enough for the registers. */
static AVX512 void values_avx512(const float *weights, const float *kv, const int *rows, int n_keys, int ld_kv,
                                 int v_offset, int dim, int head_dim, float *out)
{
    int d0 = 0;
    for (; d0 + 128 <= dim; d0 += 128)
        values_block(weights, kv + v_offset, rows, n_keys, ld_kv, head_dim, d0, 8, out);
    for (; d0 < dim; d0 += 16)
        values_block(weights, kv + v_offset, rows, n_keys, ld_kv, head_dim, d0, 1, out);
}

/* s[t] = ops_exp_nonpositive(s[t] - shift) for t < n8 (a multiple of 8),
 * their sums in lane t % 8 added to lanes[0..8) (SOFTMAX_LANES). */
_Static_assert(SOFTMAX_LANES == 8, "exp_lanes_avx2 keeps the softmax lanes in one AVX2 vector");
__attribute__((target("avx2,fma"))) static void exp_lanes_avx2(float *s, int n8, float shift, float *lanes)
{
    __m256 total = _mm256_loadu_ps(lanes);
    for (int t = 0; t < n8; t += 8) {
        const __m256 e = ops_exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + t), _mm256_set1_ps(shift)));
        _mm256_storeu_ps(s + t, e);
        total = _mm256_add_ps(total, e);
    }
    _mm256_storeu_ps(lanes, total);
}
#endif

/* One head's scores s[0..n) become its weights; the first vector_part (a
 * multiple of 8, 0 when the CPU lacks AVX2) go through exp_lanes_avx2, the
 * same bits as the scalar loop (ops_exp.h). */
static void softmax(float *s, int n, int vector_part)
{
    float max_score = -INFINITY, lanes[SOFTMAX_LANES] = {0};
    for (int t = 0; t < n; t++)
        max_score = s[t] > max_score ? s[t] : max_score;
    int t = 0;
#ifdef OPS_X86
    if (vector_part > 0) {
        exp_lanes_avx2(s, vector_part, max_score, lanes);
        t = vector_part;
    }
#endif
    for (; t < n; t++) {
        s[t] = ops_exp_nonpositive(s[t] - max_score);
        lanes[t % SOFTMAX_LANES] += s[t];
    }
    const float sum = tree_sum(lanes, SOFTMAX_LANES);
    for (t = 0; t < n; t++)
        s[t] = s[t] / sum;
}

/* ---- entry points ---------------------------------------------------------- */

static void attention(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv, int v_offset,
                      int n_heads, int head_dim, float *out, float *scores, int vector)
{
    const float scale = 1.0f / sqrtf((float)head_dim);
#ifdef OPS_X86
    const int avx512 = vector && head_dim % 16 == 0 && __builtin_cpu_supports("avx512f");
    const int softmax_vector = vector && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    const int avx512 = 0, softmax_vector = 0;
    (void)vector;
#endif
#ifdef OPS_X86
    if (avx512)
        scores_avx512(q, kv, rows, n_keys, ld_kv, n_heads, head_dim, scale, scores);
    else
#endif
        scores_plain(q, kv, rows, n_keys, ld_kv, n_heads, head_dim, scale, scores);
    for (int h = 0; h < n_heads; h++)
        softmax(scores + (size_t)h * n_keys, n_keys, softmax_vector ? n_keys / 8 * 8 : 0);
#ifdef OPS_X86
    if (avx512)
        values_avx512(scores, kv, rows, n_keys, ld_kv, v_offset, n_heads * head_dim, head_dim, out);
    else
#endif
        values_plain(scores, kv, rows, n_keys, ld_kv, v_offset, n_heads, head_dim, out);
}

void ops_attention_rows(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv, int v_offset,
                        int n_heads, int head_dim, float *out, float *scores)
{
    attention(q, kv, rows, n_keys, ld_kv, v_offset, n_heads, head_dim, out, scores, 1);
}

void ops_attention(const float *q, const float *kv, int n_keys, int ld_kv, int v_offset, int n_heads,
                   int head_dim, float *out, float *scores)
{
    attention(q, kv, NULL, n_keys, ld_kv, v_offset, n_heads, head_dim, out, scores, 1);
}

void ops_attention_plain(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv, int v_offset,
                         int n_heads, int head_dim, float *out, float *scores)
{
    attention(q, kv, rows, n_keys, ld_kv, v_offset, n_heads, head_dim, out, scores, 0);
}
