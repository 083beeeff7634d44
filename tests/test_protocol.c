/* The scheduler's messages (scheduler/protocol.h): byte layouts written
 * out by hand, round trips of every kind, and rejection of every
 * truncation and of malformed fields. Also the progress line
 * (scheduler/progress.h), whose numbers are worked out in the comments. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "scheduler/progress.h"
#include "scheduler/protocol.h"

/* Encodes msg and checks the bytes against the expected ones. */
static void assert_encodes_to(const sched_msg *msg, const unsigned char *expected, size_t len)
{
    sched_buf buf = {0};
    rc_error err = {{0}};
    assert_int_equal(sched_encode(msg, &buf, &err), 0);
    assert_int_equal(buf.len, len);
    assert_memory_equal(buf.data, expected, len);
    sched_buf_free(&buf);
}

/* Decoding must fail, with a message containing `needle`. */
static void assert_decode_fails(const unsigned char *bytes, size_t len, const char *needle)
{
    sched_msg msg;
    rc_error err = {{0}};
    assert_int_equal(sched_decode(bytes, len, &msg, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' lacks '%s'", err.msg, needle);
    sched_msg_free(&msg);
}

/* The magic 0x52434d32 little-endian is 32 4d 43 52 ("2MCR"). */
#define MAGIC 0x32, 0x4d, 0x43, 0x52

static void test_layout_by_hand(void **state)
{
    (void)state;
    /* STOP (kind 4), mode now (1) */
    const unsigned char stop[] = {MAGIC, 4, 1};
    assert_encodes_to(&(sched_msg){.kind = SCHED_MSG_STOP, .stop = SCHED_STOP_NOW}, stop, sizeof stop);
    /* REQUEST (kind 1): the header only */
    const unsigned char request[] = {MAGIC, 1};
    assert_encodes_to(&(sched_msg){.kind = SCHED_MSG_REQUEST}, request, sizeof request);
    /* WORK (kind 2) of one task: index 258 = 0x0102 as i64, path "ab" */
    sched_task task = {258, "ab"};
    const unsigned char work[] = {MAGIC, 2, 1, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 'a', 'b'};
    assert_encodes_to(&(sched_msg){.kind = SCHED_MSG_WORK, .tasks = &task, .n_tasks = 1}, work, sizeof work);
    /* FATAL (kind 7) "x" */
    const unsigned char fatal[] = {MAGIC, 7, 1, 0, 0, 0, 'x'};
    assert_encodes_to(&(sched_msg){.kind = SCHED_MSG_FATAL, .text = "x"}, fatal, sizeof fatal);
    /* RESULTS (kind 3) of one ok result: index 5, rank 2, decode 0.5 s
     * (0x3fe0000000000000), infer 2.0 s (0x4000000000000000), size 300
     * (0x012c), mtime -1 (all ff), no error, caption "hi", ids {7, -1},
     * mean log-probability -0.5 (0xbfe0000000000000), minimum probability
     * 0.25 (0x3fd0000000000000), token probabilities {0.5f (0x3f000000),
     * 1.0f (0x3f800000)} */
    int ids[2] = {7, -1};
    float probs[2] = {0.5f, 1.0f};
    sched_result r = {.index = 5, .ok = 1, .caption = "hi", .ids = ids, .n_ids = 2, .decode_seconds = 0.5,
                      .infer_seconds = 2.0, .file_size = 300, .file_mtime_ns = -1, .rank = 2,
                      .mean_logprob = -0.5, .min_token_prob = 0.25, .token_probs = probs};
    const unsigned char results[] = {
        MAGIC, 3, 1, 0, 0, 0,                                 /* header, 1 result */
        5, 0, 0, 0, 0, 0, 0, 0,                               /* index */
        1,                                                    /* ok */
        2, 0, 0, 0,                                           /* rank */
        0, 0, 0, 0, 0, 0, 0xe0, 0x3f,                         /* 0.5 */
        0, 0, 0, 0, 0, 0, 0, 0x40,                            /* 2.0 */
        0x2c, 0x01, 0, 0, 0, 0, 0, 0,                         /* 300 */
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,       /* -1 */
        0, 0, 0, 0,                                           /* no error */
        2, 0, 0, 0, 'h', 'i',                                 /* caption */
        2, 0, 0, 0, 7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,       /* ids */
        0, 0, 0, 0, 0, 0, 0xe0, 0xbf,                         /* -0.5 */
        0, 0, 0, 0, 0, 0, 0xd0, 0x3f,                         /* 0.25 */
        2, 0, 0, 0, 0, 0, 0, 0x3f, 0, 0, 0x80, 0x3f,          /* probabilities */
    };
    assert_encodes_to(&(sched_msg){.kind = SCHED_MSG_RESULTS, .results = &r, .n_results = 1}, results,
                      sizeof results);
    /* and it decodes back to the same values */
    sched_msg msg;
    rc_error err = {{0}};
    assert_int_equal(sched_decode(results, sizeof results, &msg, &err), 0);
    assert_int_equal(msg.kind, SCHED_MSG_RESULTS);
    assert_int_equal(msg.n_results, 1);
    const sched_result *d = &msg.results[0];
    assert_int_equal(d->index, 5);
    assert_int_equal(d->ok, 1);
    assert_int_equal(d->rank, 2);
    assert_true(d->decode_seconds == 0.5 && d->infer_seconds == 2.0);
    assert_int_equal(d->file_size, 300);
    assert_int_equal(d->file_mtime_ns, -1);
    assert_null(d->error);
    assert_string_equal(d->caption, "hi");
    assert_int_equal(d->n_ids, 2);
    assert_int_equal(d->ids[0], 7);
    assert_int_equal(d->ids[1], -1);
    assert_true(d->mean_logprob == -0.5 && d->min_token_prob == 0.25);
    assert_non_null(d->token_probs);
    assert_true(d->token_probs[0] == 0.5f && d->token_probs[1] == 1.0f);
    sched_msg_free(&msg);
    /* a probability count other than 0 or n_ids is refused */
    unsigned char wrong[sizeof results];
    memcpy(wrong, results, sizeof results);
    wrong[sizeof results - 12] = 1;
    assert_decode_fails(wrong, sizeof results - 4, "2 tokens");
    /* without token probabilities: count 0 */
    r.token_probs = NULL;
    unsigned char without[sizeof results - 8];
    memcpy(without, results, sizeof without);
    without[sizeof without - 4] = 0;
    assert_encodes_to(&(sched_msg){.kind = SCHED_MSG_RESULTS, .results = &r, .n_results = 1}, without,
                      sizeof without);
}

/* Encodes, decodes, and encodes again: the bytes are identical. */
static void roundtrip(const sched_msg *msg, sched_msg *decoded)
{
    sched_buf a = {0}, b = {0};
    rc_error err = {{0}};
    assert_int_equal(sched_encode(msg, &a, &err), 0);
    assert_int_equal(sched_decode(a.data, a.len, decoded, &err), 0);
    assert_int_equal(sched_encode(decoded, &b, &err), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    /* every proper prefix is refused, never read past */
    for (size_t len = 0; len < a.len; len++) {
        sched_msg partial;
        unsigned char *copy = malloc(len ? len : 1);
        memcpy(copy, a.data, len);
        assert_int_equal(sched_decode(copy, len, &partial, &err), -1);
        sched_msg_free(&partial);
        free(copy);
    }
    sched_buf_free(&a);
    sched_buf_free(&b);
}

static void test_roundtrips(void **state)
{
    (void)state;
    sched_msg d;
    /* a chunk with a non-ASCII path and a long one */
    char long_path[5000];
    memset(long_path, 'p', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    sched_task tasks[3] = {{0, "/data/r\xc3\xb6ntgen/a.jpg"}, {INT64_MAX, long_path}, {-7, ""}};
    roundtrip(&(sched_msg){.kind = SCHED_MSG_WORK, .tasks = tasks, .n_tasks = 3}, &d);
    assert_int_equal(d.n_tasks, 3);
    assert_string_equal(d.tasks[0].path, tasks[0].path);
    assert_string_equal(d.tasks[1].path, long_path);
    assert_int_equal(d.tasks[1].index, INT64_MAX);
    assert_string_equal(d.tasks[2].path, "");
    assert_int_equal(d.tasks[2].index, -7);
    sched_msg_free(&d);

    /* results: ok with an empty caption, failed, NaN timings */
    int ids[3] = {101, 2047, 0};
    float probs[3] = {0.125f, 1e-30f, 0.999f};
    sched_result r[3] = {
        {.index = 1, .ok = 1, .caption = "", .ids = NULL, .n_ids = 0, .file_size = -1, .file_mtime_ns = -1,
         .mean_logprob = NAN, .min_token_prob = NAN},
        {.index = 2, .ok = 0, .error = "a.jpg: not an image", .decode_seconds = NAN, .infer_seconds = 0, .rank = 3,
         .mean_logprob = NAN, .min_token_prob = NAN},
        {.index = 3, .ok = 1, .caption = "chest x-ray", .ids = ids, .n_ids = 3, .decode_seconds = 1e-3,
         .infer_seconds = 0.25, .file_size = INT64_MAX, .file_mtime_ns = 1700000000123456789LL, .rank = 1,
         .mean_logprob = -1.25, .min_token_prob = 1e-30, .token_probs = probs},
    };
    roundtrip(&(sched_msg){.kind = SCHED_MSG_RESULTS, .results = r, .n_results = 3}, &d);
    assert_int_equal(d.n_results, 3);
    assert_string_equal(d.results[0].caption, "");
    assert_int_equal(d.results[0].n_ids, 0);
    assert_false(d.results[1].ok);
    assert_string_equal(d.results[1].error, "a.jpg: not an image");
    assert_null(d.results[1].caption);
    assert_true(isnan(d.results[1].decode_seconds));
    assert_int_equal(d.results[1].rank, 3);
    assert_int_equal(d.results[2].file_mtime_ns, 1700000000123456789LL);
    assert_memory_equal(d.results[2].ids, ids, sizeof ids);
    assert_true(isnan(d.results[0].mean_logprob) && isnan(d.results[0].min_token_prob));
    assert_null(d.results[0].token_probs);
    assert_true(d.results[2].mean_logprob == -1.25 && d.results[2].min_token_prob == 1e-30);
    assert_memory_equal(d.results[2].token_probs, probs, sizeof probs);
    sched_msg_free(&d);

    for (int kind = SCHED_MSG_REQUEST; kind < SCHED_MSG_N_KINDS; kind++) {
        sched_msg m = {.kind = (sched_msg_kind)kind, .text = "why", .stop = SCHED_STOP_DRAIN};
        roundtrip(&m, &d);
        assert_int_equal(d.kind, kind);
        if (kind == SCHED_MSG_FATAL)
            assert_string_equal(d.text, "why");
        sched_msg_free(&d);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    const unsigned char bad_magic[] = {0x31, 0x4d, 0x43, 0x53, 1};
    assert_decode_fails(bad_magic, sizeof bad_magic, "magic");
    const unsigned char kind0[] = {MAGIC, 0}, kind8[] = {MAGIC, 8};
    assert_decode_fails(kind0, sizeof kind0, "unknown kind");
    assert_decode_fails(kind8, sizeof kind8, "unknown kind");
    const unsigned char trailing[] = {MAGIC, 1, 0};
    assert_decode_fails(trailing, sizeof trailing, "left over");
    const unsigned char stop2[] = {MAGIC, 4, 2};
    assert_decode_fails(stop2, sizeof stop2, "mode");
    /* a path holding a NUL */
    const unsigned char nul[] = {MAGIC, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 'a', 0, 'b'};
    assert_decode_fails(nul, sizeof nul, "NUL");
    /* a count of 2^32 - 1 tasks in 4 bytes */
    const unsigned char many[] = {MAGIC, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    assert_decode_fails(many, sizeof many, "count");
    /* a string length past the end */
    const unsigned char long_text[] = {MAGIC, 7, 9, 0, 0, 0, 'x'};
    assert_decode_fails(long_text, sizeof long_text, "truncated");
    /* a result with status byte 2, and an ok result with an error text */
    unsigned char result[] = {
        MAGIC, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 1 result, index 0 */
        2,                                             /* status byte */
        0, 0, 0, 0,                                    /* rank */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* decode, infer */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* size, mtime */
        1, 0, 0, 0, 'e',                                /* error "e" */
        0, 0, 0, 0,                                     /* caption "" */
        0, 0, 0, 0,                                     /* no ids */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* confidence */
        0, 0, 0, 0,                                     /* no probabilities */
    };
    assert_decode_fails(result, sizeof result, "status byte");
    result[17] = 1; /* magic 4 + kind 1 + count 4 + index 8 */
    assert_decode_fails(result, sizeof result, "inconsistent");
    result[17] = 0; /* failed with an error text: valid */
    sched_msg msg;
    rc_error err = {{0}};
    assert_int_equal(sched_decode(result, sizeof result, &msg, &err), 0);
    assert_string_equal(msg.results[0].error, "e");
    sched_msg_free(&msg);
    /* encoding refuses a chunk above the limit */
    sched_buf buf = {0};
    assert_int_equal(sched_encode(&(sched_msg){.kind = SCHED_MSG_WORK, .n_tasks = SCHED_MAX_ITEMS + 1}, &buf, &err),
                     -1);
    sched_buf_free(&buf);
}

static void test_progress_line(void **state)
{
    (void)state;
    sched_progress p;
    /* 5000 images, 1000 done before; 200 results (3 failed) in 10 s:
     * done 1200 = 24.0%, 200 / 10 = 20.0 images/s, ETA (5000 - 1200) / 20
     * = 190 s = 3m10s */
    sched_progress_start(&p, 5000, 1000, 100.0);
    for (int i = 0; i < 200; i++)
        sched_progress_add(&p, i % 70 != 0); /* i = 0, 70, 140 fail */
    char line[256];
    sched_progress_format(&p, 110.0, line, sizeof line);
    assert_string_equal(line, "progress 1200/5000 (24.0%), 20.0 images/s, 3 errors, ETA 3m10s");
    /* before any result: no rate, unknown ETA */
    sched_progress_start(&p, 10, 0, 0.0);
    sched_progress_format(&p, 5.0, line, sizeof line);
    assert_string_equal(line, "progress 0/10 (0.0%), 0.0 images/s, 0 errors, ETA ?");
    /* one error: singular */
    sched_progress_add(&p, 0);
    sched_progress_format(&p, 1.0, line, sizeof line);
    assert_string_equal(line, "progress 1/10 (10.0%), 1.0 images/s, 1 error, ETA 9s");

    char d[32];
    sched_format_duration(45.4, d, sizeof d);
    assert_string_equal(d, "45s");
    sched_format_duration(725, d, sizeof d); /* 12 min 5 s */
    assert_string_equal(d, "12m05s");
    sched_format_duration(11220, d, sizeof d); /* 3 h 7 min */
    assert_string_equal(d, "3h07m");
    sched_format_duration(-1, d, sizeof d);
    assert_string_equal(d, "?");
    sched_format_duration(INFINITY, d, sizeof d);
    assert_string_equal(d, "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_by_hand),
        cmocka_unit_test(test_roundtrips),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_progress_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
