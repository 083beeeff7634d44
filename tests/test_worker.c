/* The worker's loop (scheduler/worker.h) with greedy decoding's continuous
 * batching, driven by a scripted feed, on the committed tiny model and
 * images written by `radcap synth`.
 *
 * The reference for every image is the engine run on that image alone:
 * img_preprocess_file, enc_forward and gen_decode of one image (exact
 * equality: the engine's products compute each row the same way whatever
 * the number of rows). Checked: every chunk is delivered once, whole and
 * in its order, with each image's caption ids and confidence as alone and
 * per-image errors for files that cannot be read; chunks of every size
 * from 1 to batch; the end of the feed finishes everything; a cancellation
 * drops the chunks not started and finishes those being decoded.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/config.h"
#include "engine/encoder.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "io/image.h"
#include "scheduler/worker.h"
#include "tests/helpers/testutil.h"

#define TINY "tests/fixtures/tiny"
#define N_IMAGES 14
#define BATCH 3

typedef struct expected {
    int ok;
    int len;
    int ids[128];
    double mean_logprob, min_token_prob;
} expected;

static struct {
    char dir[4096];
    char vocab[4200];
    char paths[N_IMAGES][4300];
    cfg_model cfg;
    img_options img;
    expected want[N_IMAGES];      // greedy decoding
    expected want_beam[N_IMAGES]; // beam search, 3 beams (a chunk at once)
} S;

/* Images 0..N-1: synthetic JPEGs, except 4 and 9, which do not exist. */
static int setup(void **state)
{
    (void)state;
    rc_error err = {{0}};
    if (img_system_init("test_worker", &err) < 0 || cfg_load(&S.cfg, TINY "/config.json", &err) < 0)
        fail_msg("%s", err.msg);
    char *dir = tu_mkdtemp("worker");
    assert_non_null(dir);
    snprintf(S.dir, sizeof S.dir, "%s", dir);
    free(dir);
    snprintf(S.vocab, sizeof S.vocab, "%s/vocab.txt", S.dir);
    assert_int_equal(tu_write_synthetic_vocab(S.vocab, S.cfg.vocab_size), 0);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "%s synth --out %s/archive --count %d --seed 9 --size 96x96 >/dev/null",
             tu_radcap_bin(), S.dir, N_IMAGES);
    assert_int_equal(tu_run(cmd), 0);
    for (int i = 0; i < N_IMAGES; i++)
        snprintf(S.paths[i], sizeof S.paths[i], "%s/archive/valid/ROCOv2_2023_valid_%06d.jpg", S.dir,
                 i == 4 || i == 9 ? 900 + i : i + 1);
    sched_image_options(&S.cfg, 100000000, 0, &S.img);
    /* the reference: each image alone */
    captioner m;
    if (model_load(&m, &S.cfg, TINY "/model.bin", &err) < 0)
        fail_msg("%s", err.msg);
    const int L = cfg_memory_tokens(&S.cfg);
    float *pixels = malloc(sizeof(float) * 3 * S.cfg.image_size * S.cfg.image_size);
    float *memory = malloc(sizeof(float) * L * S.cfg.embed_dim);
    int lengths[2] = {0, 0};
    for (int i = 0; i < N_IMAGES; i++) {
        expected *e = &S.want[i];
        rc_error image_err = {{0}};
        e->ok = img_preprocess_file(S.paths[i], &S.img, pixels, NULL, &image_err) == 0;
        if (!e->ok)
            continue;
        expected *b = &S.want_beam[i];
        b->ok = 1;
        const gen_output out = {.ids = e->ids, .lens = &e->len, .mean_logprob = &e->mean_logprob,
                                .min_token_prob = &e->min_token_prob};
        const gen_output beam_out = {.ids = b->ids, .lens = &b->len, .mean_logprob = &b->mean_logprob,
                                     .min_token_prob = &b->min_token_prob};
        gen_decoding beam;
        gen_decoding_default(&beam);
        beam.beam = 3;
        if (enc_forward(&m, 1, pixels, &(enc_outputs){.memory = memory}, &err) < 0 ||
            gen_decode(&m, 1, memory, NULL, NULL, &out, &err) < 0 ||
            gen_decode(&m, 1, memory, &beam, NULL, &beam_out, &err) < 0)
            fail_msg("%s", err.msg);
        lengths[e->len == S.cfg.max_len]++;
    }
    /* captions of different lengths, so that chunks finish at different steps */
    printf("  reference: %d captions ended by [SEP], %d cut at max_len\n", lengths[0], lengths[1]);
    assert_true(lengths[0] > 0 && lengths[1] > 0);
    assert_false(S.want[4].ok || S.want[9].ok);
    free(pixels), free(memory);
    model_free(&m);
    return 0;
}

/* A feed handing out the images in chunks of the sizes given, then the
 * end, or a cancellation once cancel_after chunks were handed out. */
typedef struct script {
    const int *sizes;   // chunk sizes, 0-terminated
    int cancel_after;   // -1: never
    int next_image, handed;
    int delivered[N_IMAGES]; // times each image was delivered
    int chunk_first[64];     // first image of each chunk handed out
    int chunk_n[64];
    int chunks_delivered;
    int beam;                // decoding: 1 greedy, else beam search
} script;

static sched_feed_status script_next(void *ctx, int wait, sched_chunk *chunk, rc_error *err)
{
    script *sc = ctx;
    (void)wait, (void)err;
    if (sc->cancel_after >= 0 && sc->handed == sc->cancel_after)
        return SCHED_FEED_CANCEL;
    const int n = sc->sizes[sc->handed];
    if (n == 0 || sc->next_image >= N_IMAGES)
        return SCHED_FEED_END;
    chunk->n = n;
    chunk->tasks = calloc((size_t)n, sizeof *chunk->tasks);
    for (int k = 0; k < n; k++) {
        chunk->tasks[k].index = sc->next_image + k;
        chunk->tasks[k].path = strdup(S.paths[sc->next_image + k]);
    }
    sc->chunk_first[sc->handed] = sc->next_image;
    sc->chunk_n[sc->handed++] = n;
    sc->next_image += n;
    return SCHED_FEED_CHUNK;
}

static int script_deliver(void *ctx, const sched_result *results, int n, rc_error *err)
{
    script *sc = ctx;
    (void)err;
    /* a whole chunk, in its order */
    int c = 0;
    while (c < sc->handed && sc->chunk_first[c] != results[0].index)
        c++;
    assert_true(c < sc->handed);
    assert_int_equal(n, sc->chunk_n[c]);
    for (int k = 0; k < n; k++) {
        const sched_result *r = &results[k];
        const int i = (int)r->index;
        assert_int_equal(i, sc->chunk_first[c] + k);
        sc->delivered[i]++;
        const expected *e = sc->beam > 1 ? &S.want_beam[i] : &S.want[i];
        assert_int_equal(r->rank, 5);
        if (!e->ok) {
            assert_false(r->ok);
            assert_non_null(strstr(r->error, S.paths[i]));
            continue;
        }
        if (!r->ok)
            fail_msg("image %d failed: %s", i, r->error);
        assert_int_equal(r->n_ids, e->len);
        assert_memory_equal(r->ids, e->ids, sizeof(int) * e->len);
        assert_non_null(r->caption);
        assert_null(r->token_probs);
        if (e->len > 0) {
            assert_true(r->mean_logprob == e->mean_logprob);
            assert_true(r->min_token_prob == e->min_token_prob);
        }
        assert_true(r->infer_seconds > 0);
        assert_int_equal(r->file_size > 0, 1);
    }
    sc->chunks_delivered++;
    return 0;
}

static void run_script(script *sc, int prefetch)
{
    rc_error err = {{0}};
    sched_worker_options o = {.checkpoint = TINY "/model.bin",
                              .vocab = S.vocab,
                              .cfg = S.cfg,
                              .img = S.img,
                              .batch = BATCH,
                              .rank = 5,
                              .prefetch = prefetch};
    gen_decoding_default(&o.decoding);
    o.decoding.beam = sc->beam;
    sched_worker *w = sched_worker_open(&o, &err);
    if (!w)
        fail_msg("%s", err.msg);
    const sched_feed feed = {script_next, script_deliver, sc};
    if (sched_worker_loop(w, &feed, &err) < 0)
        fail_msg("%s", err.msg);
    sched_worker_close(w);
}

static void test_every_chunk_delivered_as_alone(void **state)
{
    (void)state;
    static const int sizes[][N_IMAGES + 1] = {
        {3, 3, 3, 3, 2, 0},
        {1, 2, 3, 1, 1, 3, 2, 1, 0},
        {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
    };
    for (int prefetch = 0; prefetch < 2; prefetch++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            script sc = {.sizes = sizes[k], .cancel_after = -1, .beam = 1};
            run_script(&sc, prefetch);
            for (int i = 0; i < N_IMAGES; i++)
                assert_int_equal(sc.delivered[i], 1);
            assert_int_equal(sc.chunks_delivered, sc.handed);
        }
}

/* A cancellation: chunks taken from the feed and already decoding are
 * finished; none is delivered twice or in part. */
static void test_cancel_finishes_what_is_decoding(void **state)
{
    (void)state;
    static const int sizes[] = {3, 3, 3, 3, 2, 0};
    for (int after = 1; after <= 4; after++) {
        script sc = {.sizes = sizes, .cancel_after = after, .beam = 1};
        run_script(&sc, 1);
        /* chunks only received are dropped (the first one, when the
         * cancellation comes right after it); from the second on, the first
         * has joined the decoder when the feed is asked again */
        assert_true(sc.chunks_delivered <= after);
        if (after >= 2)
            assert_true(sc.chunks_delivered >= 1);
        for (int c = 0; c < sc.handed; c++) {
            int seen = 0;
            for (int k = 0; k < sc.chunk_n[c]; k++)
                seen += sc.delivered[sc.chunk_first[c] + k];
            assert_true(seen == 0 || seen == sc.chunk_n[c]);
        }
        for (int i = 0; i < N_IMAGES; i++)
            assert_true(sc.delivered[i] <= 1);
    }
}

/* Beam search keeps computing a chunk at once. */
static void test_beam_search(void **state)
{
    (void)state;
    static const int sizes[] = {3, 1, 3, 2, 3, 2, 0};
    script sc = {.sizes = sizes, .cancel_after = -1, .beam = 3};
    run_script(&sc, 1);
    for (int i = 0; i < N_IMAGES; i++)
        assert_int_equal(sc.delivered[i], 1);
    /* the test means something only if beam search differs from greedy somewhere */
    int differ = 0;
    for (int i = 0; i < N_IMAGES; i++)
        differ += S.want[i].ok && (S.want[i].len != S.want_beam[i].len ||
                                   memcmp(S.want[i].ids, S.want_beam[i].ids, sizeof(int) * S.want[i].len) != 0);
    printf("  beam search differs from greedy on %d images\n", differ);
    assert_true(differ > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_chunk_delivered_as_alone),
        cmocka_unit_test(test_cancel_finishes_what_is_decoding),
        cmocka_unit_test(test_beam_search),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
