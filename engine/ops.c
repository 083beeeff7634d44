#include "ops.h"

#include <float.h>
#include <math.h>
#include <string.h>

int ops_conv_out(int in, int kernel, int stride, int pad)
{
    return (in + 2 * pad - kernel) / stride + 1;
}

void ops_im2col(const float *x, int h, int w, int c, int kernel, int stride, int pad, float *cols)
{
    const int oh = ops_conv_out(h, kernel, stride, pad), ow = ops_conv_out(w, kernel, stride, pad);
    const size_t row_len = (size_t)kernel * kernel * c;
    for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
            float *dst = cols + ((size_t)oy * ow + ox) * row_len;
            for (int ky = 0; ky < kernel; ky++) {
                const int iy = oy * stride - pad + ky;
                for (int kx = 0; kx < kernel; kx++, dst += c) {
                    const int ix = ox * stride - pad + kx;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                        memset(dst, 0, sizeof(float) * c);
                    else
                        memcpy(dst, x + ((size_t)iy * w + ix) * c, sizeof(float) * c);
                }
            }
        }
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
    const float scale = 1.0f / sqrtf((float)head_dim);
    for (int h = 0; h < n_heads; h++) {
        const float *qh = q + (size_t)h * head_dim;
        float max_score = -INFINITY;
        for (int t = 0; t < n_keys; t++) {
            const float *k = kv + (size_t)t * ld_kv + (size_t)h * head_dim;
            float dot = 0.0f;
            for (int i = 0; i < head_dim; i++)
                dot += qh[i] * scale * k[i];
            scores[t] = dot;
            max_score = dot > max_score ? dot : max_score;
        }
        float total = 0.0f;
        for (int t = 0; t < n_keys; t++) {
            scores[t] = expf(scores[t] - max_score);
            total += scores[t];
        }
        float *oh = out + (size_t)h * head_dim;
        memset(oh, 0, sizeof(float) * head_dim);
        for (int t = 0; t < n_keys; t++) {
            const float p = scores[t] / total;
            const float *v = kv + (size_t)t * ld_kv + v_offset + (size_t)h * head_dim;
            for (int i = 0; i < head_dim; i++)
                oh[i] += p * v[i];
        }
    }
}

int ops_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
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
