/* bench_gemm.c: speed of gemm_linear per backend and thread count on the
 * model's product shapes, next to the machine's measured FMA peak. Not a
 * test: it checks nothing, it prints (and with --json writes) numbers.
 *
 * For each shape (m, n, k) the weights are random and packed once, as the
 * model packs them at load, in each precision asked for (fp32, and bf16:
 * weights rounded to bfloat16, half the bytes to stream, widened to float
 * in registers); every product gets bias and a ReLU (the encoder's
 * epilogue). Products are repeated for --seconds; the figure is GFLOP/s
 * (2 m n k per product) of the fastest one, timed alone or, when one takes
 * under a millisecond, in groups: on a shared machine (this one often is)
 * the fastest product is the one that had the cores to itself. The
 * "cpu-time" column divides by CPU time per thread instead, over all of
 * them. The peak is an AVX-512 (else AVX2) FMA loop on the same threads,
 * timed the same way: it is what "% of peak" divides by.
 *
 * usage: bench_gemm [--backends avx512,avx2,portable,cblas] [--threads 1,2]
 *                   [--precisions fp32,bf16] [--shape M,N,K]... [--seconds S]
 *                   [--json FILE]
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/gemm.h"
#include "engine/rng.h"
#include "tests/bench/bench_common.h"

enum { MAX_SHAPES = 32, MAX_LIST = 8 };

typedef struct shape {
    int m, n, k;
    const char *what; /* where the model computes it */
} shape;

static const shape default_shapes[] = {
    {3136 * 8, 64, 576, "3x3 conv stage 1, batch 8"},
    {784 * 8, 512, 128, "1x1 conv stage 2 expand, batch 8"},
    {49 * 8, 2048, 512, "1x1 conv stage 4 expand, batch 8"},
    {1, 30522, 512, "fc_out, 1 sequence"},
    {32, 30522, 512, "fc_out, 32 sequences"},
    {128, 30522, 512, "fc_out, 128 sequences"},
    {32, 1536, 512, "self_qkv, 32 sequences"},
};

/* FMA peak in GFLOP/s on `threads` threads (bench_common.h). */
static double fma_peak(int threads, int avx512)
{
    return bench_fma_peak(threads, avx512, 300000, 1000, 20000);
}

static int parse_list(char *text, char **items, int max)
{
    int n = 0;
    for (char *tok = strtok(text, ","); tok && n < max; tok = strtok(NULL, ","))
        items[n++] = tok;
    return n;
}

/* Speed of gemm_linear on one shape (see the top of the file). */
typedef struct speed {
    double wall_gflops, cpu_gflops;
} speed;

static speed time_product(const gemm_weights *w, int m, const float *x, float *y, double seconds, int threads)
{
    const gemm_epilogue relu = {.relu = 1};
    gemm_linear(w, m, x, w->n_in, y, w->n_out, &relu); /* warm-up: caches, page faults, thread start */
    double t = bench_now();
    gemm_linear(w, m, x, w->n_in, y, w->n_out, &relu);
    t = bench_now() - t;
    const long group = t < 1e-3 ? (long)(1e-3 / (t > 1e-7 ? t : 1e-7)) + 1 : 1;
    double fastest = 1e30, cpu = 0;
    long groups = 0;
    const double start = bench_now();
    do {
        const double t0 = bench_now(), c0 = bench_cpu_now();
        for (long i = 0; i < group; i++)
            gemm_linear(w, m, x, w->n_in, y, w->n_out, &relu);
        const double elapsed = (bench_now() - t0) / group;
        cpu += bench_cpu_now() - c0;
        fastest = elapsed < fastest ? elapsed : fastest;
        groups++;
    } while (bench_now() - start < seconds);
    const double flop = 2.0 * m * w->n_out * w->n_in;
    return (speed){flop / fastest / 1e9, flop * groups * group / (cpu / threads) / 1e9};
}

int main(int argc, char **argv)
{
    char backends_text[256] = "avx512,avx2,portable,cblas", threads_text[64] = "1,2";
    char precisions_text[64] = "fp32,bf16";
    shape shapes[MAX_SHAPES];
    int n_shapes = 0;
    double seconds = 1.0;
    const char *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--backends") == 0 && val)
            snprintf(backends_text, sizeof backends_text, "%s", val), i++;
        else if (strcmp(arg, "--threads") == 0 && val)
            snprintf(threads_text, sizeof threads_text, "%s", val), i++;
        else if (strcmp(arg, "--precisions") == 0 && val)
            snprintf(precisions_text, sizeof precisions_text, "%s", val), i++;
        else if (strcmp(arg, "--seconds") == 0 && val)
            seconds = atof(val), i++;
        else if (strcmp(arg, "--json") == 0 && val)
            json_path = val, i++;
        else if (strcmp(arg, "--shape") == 0 && val && n_shapes < MAX_SHAPES) {
            shape s = {0, 0, 0, "custom"};
            if (sscanf(val, "%d,%d,%d", &s.m, &s.n, &s.k) != 3 || s.m < 1 || s.n < 1 || s.k < 1) {
                fprintf(stderr, "bench_gemm: --shape wants M,N,K, got '%s'\n", val);
                return 2;
            }
            shapes[n_shapes++] = s;
            i++;
        } else {
            fprintf(stderr, "usage: bench_gemm [--backends LIST] [--threads LIST] [--precisions LIST] "
                            "[--shape M,N,K]... [--seconds S] [--json FILE]\n");
            return 2;
        }
    }
    if (!n_shapes) {
        n_shapes = (int)(sizeof default_shapes / sizeof default_shapes[0]);
        memcpy(shapes, default_shapes, sizeof default_shapes);
    }
    char *backends[MAX_LIST], *thread_items[MAX_LIST], *precision_items[MAX_LIST];
    const int n_backends = parse_list(backends_text, backends, MAX_LIST);
    const int n_threads = parse_list(threads_text, thread_items, MAX_LIST);
    const int n_precisions = parse_list(precisions_text, precision_items, MAX_LIST);
    gemm_precision precisions[MAX_LIST];
    for (int p = 0; p < n_precisions; p++) {
        rc_error err = {{0}};
        if (gemm_precision_parse(precision_items[p], &precisions[p], &err) < 0) {
            fprintf(stderr, "bench_gemm: %s\n", err.msg);
            return 2;
        }
    }
    gemm_init();

    const int avx512 = gemm_backend_supported("avx512");
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("OPENBLAS_CORETYPE=%s; FMA peak (%s):", coretype ? coretype : "(unset)", avx512 ? "AVX-512" : "AVX2");
    double peaks[MAX_LIST];
    for (int t = 0; t < n_threads; t++) {
        peaks[t] = fma_peak(atoi(thread_items[t]), avx512);
        printf(" %.1f GFLOP/s on %s thread(s);", peaks[t], thread_items[t]);
    }
    printf("\n\n%-20s %-34s %-9s %-4s %7s %8s %6s %8s %6s\n", "shape (m, n, k)", "", "backend", "prec", "threads",
           "GFLOP/s", "%peak", "cpu-time", "%peak");
    FILE *json = json_path ? fopen(json_path, "w") : NULL;
    if (json_path && !json) {
        fprintf(stderr, "bench_gemm: cannot write %s\n", json_path);
        return 1;
    }
    if (json)
        fprintf(json, "{\"openblas_coretype\": \"%s\", \"results\": [\n", coretype ? coretype : "");
    int first_record = 1;
    rng_state rng;
    rng_seed(&rng, 7);
    for (int s = 0; s < n_shapes; s++) {
        const shape *sh = &shapes[s];
        float *w = malloc(sizeof(float) * sh->n * sh->k), *bias = malloc(sizeof(float) * sh->n);
        float *x = malloc(sizeof(float) * sh->m * sh->k), *y = malloc(sizeof(float) * sh->m * sh->n);
        if (!w || !bias || !x || !y) {
            fprintf(stderr, "bench_gemm: out of memory for shape %d,%d,%d\n", sh->m, sh->n, sh->k);
            return 1;
        }
        for (size_t i = 0; i < (size_t)sh->n * sh->k; i++)
            w[i] = (float)(0.05 * rng_normal(&rng));
        for (int i = 0; i < sh->n; i++)
            bias[i] = (float)(0.1 * rng_normal(&rng));
        for (size_t i = 0; i < (size_t)sh->m * sh->k; i++)
            x[i] = (float)rng_normal(&rng);
        char label[64];
        snprintf(label, sizeof label, "(%d, %d, %d)", sh->m, sh->n, sh->k);
        for (int b = 0; b < n_backends; b++) {
            rc_error err = {{0}};
            if (gemm_set_backend(backends[b], &err) < 0) {
                printf("%-20s %-34s %-9s skipped: %s\n", label, sh->what, backends[b], err.msg);
                continue;
            }
            for (int p = 0; p < n_precisions; p++) {
                gemm_weights gw = {.n_out = sh->n, .n_in = sh->k, .w = w, .bias = bias, .precision = precisions[p]};
                if (gemm_pack(&gw, &err) < 0) {
                    fprintf(stderr, "bench_gemm: %s\n", err.msg);
                    return 1;
                }
                const char *precision = gemm_precision_name(precisions[p]);
                for (int t = 0; t < n_threads; t++) {
                    const int threads = atoi(thread_items[t]);
                    omp_set_num_threads(threads);
                    const speed sp = time_product(&gw, sh->m, x, y, seconds, threads);
                    printf("%-20s %-34s %-9s %-4s %7d %8.1f %5.0f%% %8.1f %5.0f%%\n", label, sh->what, backends[b],
                           precision, threads, sp.wall_gflops, 100 * sp.wall_gflops / peaks[t], sp.cpu_gflops,
                           100 * sp.cpu_gflops / peaks[t]);
                    fflush(stdout);
                    if (json)
                        fprintf(json,
                                "%s  {\"m\": %d, \"n\": %d, \"k\": %d, \"backend\": \"%s\", \"precision\": "
                                "\"%s\", \"threads\": %d, \"gflops\": %.2f, \"cpu_time_gflops\": %.2f, "
                                "\"peak_gflops\": %.2f}",
                                first_record ? "" : ",\n", sh->m, sh->n, sh->k, backends[b], precision, threads,
                                sp.wall_gflops, sp.cpu_gflops, peaks[t]);
                    first_record = 0;
                }
                gemm_unpack(&gw);
            }
        }
        free(w), free(bias), free(x), free(y);
    }
    if (json) {
        fprintf(json, "\n]}\n");
        fclose(json);
    }
    return 0;
}
