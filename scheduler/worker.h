/* worker.h: captioning batches of image files, the work of every worker
 * rank (and of the single process of a run without MPI).
 *
 * A worker holds the model (its checkpoint mapped: ranks on one node share
 * the page cache), the vocabulary and two staging areas of `batch` images.
 * sched_worker_loop pulls chunks of tasks from a feed (the MPI master's
 * messages, or the in-process master), and while the engine captions one
 * chunk a helper thread decodes and preprocesses the next one (libvips,
 * one image at a time), so file reading and decoding overlap the model;
 * a chunk that was not ready in time is preprocessed afterwards with all
 * OpenMP threads. Every result goes back through the feed.
 *
 * Captioning is the engine's batched decoding (gen_decode with the
 * options' decoding: greedy by default, or beam search), each caption with
 * its confidence (and token probabilities when asked): images that cannot be
 * decoded become per-image errors, the others are packed, encoded and
 * decoded together. Whether an image's caption can depend on the other
 * images of its batch (and so on the chunking and the number of ranks) is
 * the engine's matter (gemm.h): OpenBLAS's sgemm (the cblas backend) rounds
 * a row differently depending on the number of rows of the product (M < 256
 * tiles take other kernels), so activations differ in the last bits with
 * the batch; greedy tokens then agree unless two logits nearly tie (they
 * agreed on every image tested). A backend that computes every output
 * element in one fixed order makes captions batch-independent.
 *
 * A worker is used by one thread (it starts and joins its helper itself).
 */
#ifndef RC_SCHED_WORKER_H
#define RC_SCHED_WORKER_H

#include "engine/config.h"
#include "engine/err.h"
#include "engine/generate.h"
#include "io/image.h"
#include "scheduler/protocol.h"

typedef struct sched_worker sched_worker;

typedef struct sched_worker_options {
    const char *checkpoint;  // model weights file
    const char *vocab;       // vocab.txt
    cfg_model cfg;           // model configuration (max_len already applied)
    img_options img;         // preprocessing (size, mean, std: see sched_image_options)
    int batch;               // most images captioned together (>= 1)
    int rank;                // recorded in every result
    int prefetch;            // 1: preprocess the next chunk in a helper thread
    gen_decoding decoding;   // how captions are decoded (generate.h)
} sched_worker_options;

/* Preprocessing options of the model configuration cfg: the card's
 * defaults with cfg's image size, mean and std, and max_pixels. */
void sched_image_options(const cfg_model *cfg, long long max_pixels, int exif_orientation, img_options *out);

/* Loads the model and the vocabulary and allocates the batch buffers.
 * Fails with the loader's message (naming the file) when the checkpoint or
 * vocabulary cannot be read or do not fit the configuration. */
sched_worker *sched_worker_open(const sched_worker_options *options, rc_error *err);

/* Releases everything (NULL is allowed). */
void sched_worker_close(sched_worker *w);

/* A chunk of tasks handed to the worker; it owns its paths. */
typedef struct sched_chunk {
    sched_task *tasks; // (n)
    int n;
} sched_chunk;

/* Frees the tasks and their paths and zeroes the chunk. */
void sched_chunk_free(sched_chunk *chunk);

typedef enum sched_feed_status {
    SCHED_FEED_CHUNK = 0, /* *chunk filled: caption it */
    SCHED_FEED_EMPTY,     /* nothing yet (only when not waiting): go on with what you have */
    SCHED_FEED_END,       /* no more work will come: finish what you have */
    SCHED_FEED_CANCEL,    /* stop now: drop what was not computed yet */
    SCHED_FEED_ERROR,     /* the feed failed (err filled) */
} sched_feed_status;

/* Where a worker's work comes from and where its results go. */
typedef struct sched_feed {
    /* The next chunk. With wait 0 it returns at once (SCHED_FEED_EMPTY when
     * no chunk is ready); with wait 1 it blocks until a chunk, the end or
     * a cancellation. A chunk it returns is the caller's to free. */
    sched_feed_status (*next)(void *ctx, int wait, sched_chunk *chunk, rc_error *err);
    /* The results of one chunk, in its order (borrowed for the call).
     * Returns 0, or -1 (err filled) to stop the loop. */
    int (*deliver)(void *ctx, const sched_result *results, int n, rc_error *err);
    void *ctx;
} sched_feed;

/* Captions chunks from the feed until it ends or cancels, each chunk as
 * one batch. Returns 0 then; -1 when the feed fails, a delivery fails or a
 * chunk holds more than `batch` tasks (err filled). */
int sched_worker_loop(sched_worker *w, const sched_feed *feed, rc_error *err);

#endif
