#include "random_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "rng.h"

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
    /* vis_proj sees post-ReLU features with a large common mean; scaling it
     * down keeps the memory tokens inside Hardtanh's linear range so that
     * each image's memory, and so its caption, stays distinct. */
    if (strncmp(spec->name, "vis_proj.", 9) == 0)
        for (int64_t i = 0; i < numel; i++)
            x[i] *= 0.25f;
    /* A mild end-of-sequence preference gives captions of varied lengths. */
    if (strcmp(spec->name, "fc_out.bias") == 0)
        x[cfg->eos_token_id] += 1.5f;
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
