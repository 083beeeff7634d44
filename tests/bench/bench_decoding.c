/* bench_decoding.c: what beam search costs next to greedy decoding, on the
 * full card configuration with random weights (random_model.h). Not a test:
 * it checks nothing, it prints figures and one JSON line.
 *
 * Random images (smooth colour fields with noise) go through the encoder
 * once; their memory tokens are then decoded greedily and with 4 beams, in
 * batches of --batch images, each mode repeated for --seconds and timed by
 * its fastest pass (the machine is shared). Images/s counts decoding alone
 * and, adding the encoder's measured time per image, end to end. The
 * captions of the two modes differ in length, so tokens per caption are
 * printed too. The target: beam 4 at most 2.5x greedy's cost per
 * image.
 *
 * usage: bench_decoding [--batch N] [--images N] [--seconds S] [--beam K]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/encoder.h"
#include "engine/gemm.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/random_model.h"
#include "engine/rng.h"
#include "tests/bench/bench_common.h"

static void random_images(const cfg_model *cfg, int n, float *images)
{
    rng_state r;
    rng_seed(&r, 7);
    const int S = cfg->image_size;
    for (int b = 0; b < n; b++)
        for (int c = 0; c < 3; c++) {
            const double fx = 1 + 5 * rng_uniform(&r), fy = 1 + 5 * rng_uniform(&r), phase = 6.3 * rng_uniform(&r);
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    images[(((size_t)b * 3 + c) * S + y) * S + x] =
                        (float)(sin(6.283 * (fx * x + fy * y) / S + phase) + 0.3 * rng_normal(&r));
        }
}

typedef struct timing {
    double best_seconds; // fastest pass over all images
    double tokens;       // generated tokens per caption, [SEP] included when generated
} timing;

static int time_decoding(const captioner *m, int n_images, int batch, const float *memory, const gen_decoding *d,
                         double seconds, timing *out)
{
    const cfg_model *c = &m->cfg;
    const size_t per_image = (size_t)cfg_memory_tokens(c) * c->embed_dim;
    int *ids = malloc(sizeof(int) * batch * c->max_len), *lens = malloc(sizeof(int) * batch);
    double *mean = malloc(sizeof(double) * batch), *low = malloc(sizeof(double) * batch);
    const gen_output o = {.ids = ids, .lens = lens, .mean_logprob = mean, .min_token_prob = low};
    rc_error err = {{0}};
    out->best_seconds = INFINITY;
    const double start = bench_now();
    int rc = 0;
    do {
        long tokens = 0;
        const double t0 = bench_now();
        for (int first = 0; first < n_images && rc == 0; first += batch) {
            const int n = n_images - first < batch ? n_images - first : batch;
            rc = gen_decode(m, n, memory + first * per_image, d, NULL, &o, &err);
            for (int i = 0; i < n; i++)
                tokens += lens[i] + (lens[i] < c->max_len);
        }
        const double t = bench_now() - t0;
        out->best_seconds = t < out->best_seconds ? t : out->best_seconds;
        out->tokens = (double)tokens / n_images;
    } while (rc == 0 && bench_now() - start < seconds);
    if (rc < 0)
        fprintf(stderr, "bench_decoding: %s\n", err.msg);
    free(ids), free(lens), free(mean), free(low);
    return rc;
}

int main(int argc, char **argv)
{
    int batch = 8, n_images = 16, beam = 4;
    double seconds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch"))
            batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--images"))
            n_images = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--beam"))
            beam = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_decoding [--batch N] [--images N] [--seconds S] [--beam K]\n");
            return 2;
        }
    }
    if (batch < 1 || n_images < 1 || beam < 2 || beam > GEN_MAX_BEAM) {
        fprintf(stderr, "bench_decoding: need batch >= 1, images >= 1, beam 2..%d\n", GEN_MAX_BEAM);
        return 2;
    }
    gemm_init();
    cfg_model cfg;
    cfg_default(&cfg);
    rc_error err = {{0}};
    random_model rm;
    ckpt_file ckpt;
    captioner m;
    if (random_model_build(&rm, &cfg, 42, &err) < 0 || ckpt_view(&ckpt, rm.tensors, rm.n_tensors, "random", &err) < 0 ||
        model_build(&m, &cfg, &ckpt, &err) < 0) {
        fprintf(stderr, "bench_decoding: %s\n", err.msg);
        return 1;
    }
    const size_t per_image = (size_t)cfg_memory_tokens(&cfg) * cfg.embed_dim;
    float *images = malloc(sizeof(float) * 3 * cfg.image_size * cfg.image_size * batch);
    float *memory = malloc(sizeof(float) * per_image * n_images);
    double encode_seconds = 0;
    for (int first = 0; first < n_images; first += batch) {
        const int n = n_images - first < batch ? n_images - first : batch;
        random_images(&cfg, n, images);
        const double t0 = bench_now();
        if (enc_forward(&m, n, images, &(enc_outputs){.memory = memory + first * per_image}, &err) < 0) {
            fprintf(stderr, "bench_decoding: %s\n", err.msg);
            return 1;
        }
        encode_seconds += bench_now() - t0;
    }
    const double encode_per_image = encode_seconds / n_images;

    gen_decoding greedy, beams;
    gen_decoding_default(&greedy);
    gen_decoding_default(&beams);
    beams.beam = beam;
    timing tg, tb;
    if (time_decoding(&m, n_images, batch, memory, &greedy, seconds, &tg) < 0 ||
        time_decoding(&m, n_images, batch, memory, &beams, seconds, &tb) < 0)
        return 1;
    const double g_dec = tg.best_seconds / n_images, b_dec = tb.best_seconds / n_images;
    const double g_e2e = g_dec + encode_per_image, b_e2e = b_dec + encode_per_image;
    printf("full card configuration, random weights, %d images in batches of %d, gemm %s\n", n_images, batch,
           gemm_backend_name());
    printf("  encoder                  %7.2f images/s\n", 1 / encode_per_image);
    printf("  greedy decoding          %7.2f images/s (%.1f tokens per caption)\n", 1 / g_dec, tg.tokens);
    printf("  beam %-2d decoding         %7.2f images/s (%.1f tokens per caption)\n", beam, 1 / b_dec, tb.tokens);
    printf("  end to end: greedy %.2f, beam %d %.2f images/s\n", 1 / g_e2e, beam, 1 / b_e2e);
    printf("  beam %d cost per image: %.2fx greedy's decoding, %.2fx end to end (target <= 2.5x)\n", beam,
           b_dec / g_dec, b_e2e / g_e2e);
    printf("{\"bench\":\"decoding\",\"batch\":%d,\"images\":%d,\"beam\":%d,\"encoder_img_per_s\":%.3f,"
           "\"greedy_decode_img_per_s\":%.3f,\"beam%d_decode_img_per_s\":%.3f,\"greedy_img_per_s\":%.3f,"
           "\"beam%d_img_per_s\":%.3f,\"greedy_tokens\":%.2f,\"beam%d_tokens\":%.2f,"
           "\"beam%d_decode_cost_ratio\":%.3f,\"beam%d_cost_ratio\":%.3f}\n",
           batch, n_images, beam, 1 / encode_per_image, 1 / g_dec, beam, 1 / b_dec, 1 / g_e2e, beam, 1 / b_e2e,
           tg.tokens, beam, tb.tokens, beam, b_dec / g_dec, beam, b_e2e / g_e2e);
    free(images), free(memory);
    model_free(&m);
    random_model_free(&rm);
    return 0;
}
