#include "random_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "encoder.h"
#include "generate.h"
#include "model.h"
#include "rng.h"

/* Calibration: images the random encoder is run on to set vis_proj. */
enum { CALIBRATION_IMAGES = 8 };
/* Standard deviation of each vis_proj output over the calibration tokens:
 * inside Hardtanh's linear range, so memory tokens stay image-dependent. */
static const double VIS_TOKEN_STD = 0.5;

static int ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* Fills one float tensor according to what its name says it is. */
static void draw(const cfg_model *cfg, const model_tensor_spec *spec, float *x, int64_t numel, int64_t fan_in,
                 rng_state *r)
{
    const int is_bn = strstr(spec->name, ".normalization.") != NULL;
    /* The last convolution of each bottleneck gets a small BatchNorm scale so
     * that the residual stream grows slowly over the 16 blocks. */
    const int is_residual_branch_end = is_bn && strstr(spec->name, ".layer.2.") != NULL;
    const double linear_bound = 1.0 / sqrt((double)fan_in);
    for (int64_t i = 0; i < numel; i++) {
        double v;
        if (ends_with(spec->name, "convolution.weight"))
            v = rng_normal(r) * sqrt(2.0 / (double)fan_in);
        else if (is_bn && ends_with(spec->name, ".weight"))
            v = is_residual_branch_end ? 0.1 + 0.2 * rng_uniform(r) : 0.5 + 0.5 * rng_uniform(r);
        else if (is_bn && (ends_with(spec->name, ".bias") || ends_with(spec->name, "running_mean")))
            v = 0.1 * rng_normal(r);
        else if (ends_with(spec->name, "running_var"))
            v = 0.5 + 1.5 * rng_uniform(r);
        else if (strstr(spec->name, ".norm") && ends_with(spec->name, ".weight"))
            v = 0.8 + 0.4 * rng_uniform(r);
        else if (strstr(spec->name, ".norm") && ends_with(spec->name, ".bias"))
            v = 0.1 * rng_normal(r);
        else if (strcmp(spec->name, "pos_encoder") == 0 || strcmp(spec->name, "embedding.weight") == 0)
            v = rng_normal(r);
        else /* nn.Linear weights and biases: PyTorch's default range */
            v = linear_bound * (2.0 * rng_uniform(r) - 1.0);
        x[i] = (float)v;
    }
}

/* For each image, the smallest margin (best other logit - eos logit) seen
 * along its greedy path: raising bias[eos] above it stops that image there. */
typedef struct eos_margins {
    int eos;
    float *min_margin; /* (n_images) */
} eos_margins;

static void track_eos_margin(void *ctx, int image, int step, const float *logits, int vocab)
{
    eos_margins *em = ctx;
    float best = -INFINITY;
    for (int v = 0; v < vocab; v++)
        if (v != em->eos && logits[v] > best)
            best = logits[v];
    const float margin = best - logits[em->eos];
    if (step == 0 || margin < em->min_margin[image])
        em->min_margin[image] = margin;
}

static int compare_floats(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Raises fc_out.bias[eos] to the median of the calibration images' smallest
 * margins, so that about half of the captions end early and the others run
 * to max_len: both paths of the decoder get exercised by demos and tests. */
static int calibrate_eos(captioner *m, const float *memory, int n, rc_error *err)
{
    const cfg_model *cfg = &m->cfg;
    eos_margins em = {cfg->eos_token_id, malloc(sizeof(float) * n)};
    int *ids = malloc(sizeof(int) * n * cfg->max_len), *lens = malloc(sizeof(int) * n);
    int rc = -1;
    if (!em.min_margin || !ids || !lens)
        rc_fail(err, "out of memory calibrating a random model");
    else if (gen_greedy(m, n, memory, &(gen_options){.on_logits = track_eos_margin, .ctx = &em}, ids, lens, err) == 0) {
        qsort(em.min_margin, n, sizeof(float), compare_floats);
        const float median = em.min_margin[n / 2];
        if (median > 0)
            ((float *)m->fc_out.bias)[cfg->eos_token_id] += median * 1.001f;
        rc = 0;
    }
    free(em.min_margin), free(ids), free(lens);
    return rc;
}

/* Smooth random colour fields with a few blobs, normalised like real inputs:
 * different enough from each other to tell image-dependent directions of the
 * feature space from the common ones. images: (n, 3, S, S). */
static void calibration_images(const cfg_model *cfg, int n, rng_state *r, float *images)
{
    const int S = cfg->image_size;
    for (int b = 0; b < n; b++) {
        double fx[3], fy[3], phase[3], amp[3], cx[3], cy[3], radius[3], bright[3];
        for (int k = 0; k < 3; k++) {
            fx[k] = 1 + 6 * rng_uniform(r), fy[k] = 1 + 6 * rng_uniform(r), phase[k] = 6.3 * rng_uniform(r);
            amp[k] = 0.2 + 0.8 * rng_uniform(r);
            cx[k] = rng_uniform(r), cy[k] = rng_uniform(r), radius[k] = 0.05 + 0.2 * rng_uniform(r);
            bright[k] = 2 * rng_uniform(r) - 1;
        }
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    const double u = (double)x / S, v = (double)y / S;
                    double value = amp[c] * sin(6.283 * (fx[c] * u + fy[c] * v) + phase[c]);
                    for (int k = 0; k < 3; k++) {
                        const double d2 = ((u - cx[k]) * (u - cx[k]) + (v - cy[k]) * (v - cy[k])) / (radius[k] * radius[k]);
                        value += 1.5 * bright[k] * exp(-d2);
                    }
                    images[(((size_t)b * 3 + c) * S + y) * S + x] = (float)(value + 0.1 * rng_normal(r));
                }
    }
}

/* Runs the random model on calibration images, then (1) rescales vis_proj so
 * that each of its outputs has mean ~0 and standard deviation VIS_TOKEN_STD
 * over the calibration tokens (the ResNet's output has a large component
 * common to all images; left in, it pushes the graph layer's Hardtanh into
 * saturation and every image gets the same caption), and (2) sets the
 * end-of-sequence bias (calibrate_eos). */
static int calibrate(random_model *rm, const cfg_model *cfg, rng_state *r, rc_error *err)
{
    ckpt_file view;
    if (ckpt_view(&view, rm->tensors, rm->n_tensors, "random model", err) < 0)
        return -1;
    captioner m;
    if (model_build(&m, cfg, &view, err) < 0)
        return -1;
    const int n = CALIBRATION_IMAGES, S = cfg->image_size, L = cfg_memory_tokens(cfg);
    const int C = cfg->hidden_sizes[cfg->n_stages - 1], D = cfg->embed_dim;
    float *images = malloc(sizeof(float) * n * 3 * S * S), *tokens = malloc(sizeof(float) * n * L * D);
    float *memory = malloc(sizeof(float) * n * L * D);
    int rc = -1;
    if (!images || !tokens || !memory) {
        rc_fail(err, "out of memory calibrating a random model");
        goto done;
    }
    calibration_images(cfg, n, r, images);
    if (enc_forward(&m, n, images, &(enc_outputs){.vis_tokens = tokens}, err) < 0)
        goto done;
    /* vis_proj.weight (D, C) and .bias (D) are the model's own, in rm->data */
    float *weight = (float *)m.vis_proj.w, *bias = (float *)m.vis_proj.bias;
    for (int j = 0; j < D; j++) {
        double sum = 0, sq = 0;
        for (int t = 0; t < n * L; t++) {
            const double y = tokens[(size_t)t * D + j] - bias[j];
            sum += y;
            sq += y * y;
        }
        const double mean = sum / (n * L), var = sq / (n * L) - mean * mean;
        const double scale = VIS_TOKEN_STD / sqrt(var > 1e-12 ? var : 1e-12);
        for (int k = 0; k < C; k++)
            weight[(size_t)j * C + k] *= (float)scale;
        bias[j] = (float)(-mean * scale + 0.1 * rng_normal(r));
    }
    /* the model packed vis_proj's weights when it was built: build it again
     * so that the memory tokens below come from the rescaled ones */
    model_free(&m); /* closes the view it took over */
    if (ckpt_view(&view, rm->tensors, rm->n_tensors, "random model", err) < 0 || model_build(&m, cfg, &view, err) < 0)
        goto done_unbuilt;
    if (enc_forward(&m, n, images, &(enc_outputs){.memory = memory}, err) < 0 || calibrate_eos(&m, memory, n, err) < 0)
        goto done;
    rc = 0;
done:
    model_free(&m);
done_unbuilt:
    free(memory);
    free(images);
    free(tokens);
    return rc;
}

int random_model_build(random_model *rm, const cfg_model *cfg, uint64_t seed, rc_error *err)
{
    memset(rm, 0, sizeof *rm);
    model_tensor_spec *specs;
    int n;
    if (model_tensor_specs(cfg, &specs, &n, err) < 0)
        return -1;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < specs[i].ndim; d++)
            numel *= specs[i].shape[d];
        total += (size_t)numel * (specs[i].is_counter ? sizeof(int64_t) : sizeof(float));
    }
    rm->tensors = calloc(n, sizeof *rm->tensors);
    rm->data = malloc(total);
    if (!rm->tensors || !rm->data) {
        free(specs);
        random_model_free(rm);
        return rc_fail(err, "out of memory for a random model (%zu bytes)", total);
    }
    rm->n_tensors = n;
    rng_state r;
    rng_seed(&r, seed);
    char *cursor = rm->data;
    int64_t fan_in = 1;
    for (int i = 0; i < n; i++) {
        const model_tensor_spec *s = &specs[i];
        ckpt_tensor *t = &rm->tensors[i];
        t->name = strdup(s->name);
        if (!t->name) {
            free(specs);
            random_model_free(rm);
            return rc_fail(err, "out of memory");
        }
        t->ndim = s->ndim;
        t->numel = 1;
        for (int d = 0; d < s->ndim; d++) {
            t->shape[d] = s->shape[d];
            t->numel *= s->shape[d];
        }
        t->data = cursor;
        if (s->is_counter) {
            t->dtype = CKPT_I64;
            int64_t batches = (int64_t)(rng_next(&r) % 100000);
            memcpy(cursor, &batches, sizeof batches);
            cursor += sizeof(int64_t);
        } else {
            t->dtype = CKPT_F32;
            /* a bias takes the fan-in of the weight listed just before it */
            if (s->ndim >= 2)
                fan_in = t->numel / s->shape[0];
            draw(cfg, s, (float *)cursor, t->numel, fan_in, &r);
            cursor += sizeof(float) * (size_t)t->numel;
        }
    }
    free(specs);
    if (calibrate(rm, cfg, &r, err) < 0) {
        random_model_free(rm);
        return -1;
    }
    return 0;
}

void random_model_free(random_model *rm)
{
    for (int i = 0; rm->tensors && i < rm->n_tensors; i++)
        free(rm->tensors[i].name);
    free(rm->tensors);
    free(rm->data);
    memset(rm, 0, sizeof *rm);
}
