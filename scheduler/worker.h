/* worker.h: captioning batches of image files, the work of every worker
 * rank (and of the single process of a run without MPI).
 *
 * A worker holds the model (its checkpoint mapped: ranks on one node share
 * the page cache), the vocabulary and two staging areas of `batch` images.
 * sched_worker_loop pulls chunks of tasks from a feed (the MPI master's
 * messages, or the in-process master) while a staging area is free; while
 * the engine computes, a helper thread reads and preprocesses the next
 * chunk (libvips, one image at a time), so file reading and decoding
 * overlap the model; a chunk that arrives while the engine has nothing to
 * do is preprocessed at once with all OpenMP threads. Every result goes
 * back through the feed, a chunk's results together and in its order.
 *
 * Greedy decoding (the default) is continuously batched: the worker keeps
 * a gen_session (generate.h) of 2 x batch sequences; a chunk is encoded and
 * its images join the session as soon as it has slots for all of them,
 * every step decodes one token of every unfinished caption, and a chunk is
 * delivered when its last caption is finished. So the decoder runs at
 * about batch to 2 x batch sequences while long captions finish, and an
 * image's caption and confidence are those it gets decoded alone. Beam
 * search computes a chunk at once (gen_decode). Captions come with their
 * confidence (and token probabilities when asked); images that cannot be
 * decoded become per-image errors.
 *
 * Whether an image's caption can depend on the other images computed
 * beside it (and so on the chunking and the number of ranks) is the
 * engine's matter (gemm.h): OpenBLAS's sgemm (the cblas backend) rounds a
 * row differently depending on the number of rows of the product (M < 256
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
#include "engine/gemm.h"
#include "engine/generate.h"
#include "io/image.h"
#include "scheduler/protocol.h"

typedef struct sched_worker sched_worker;

typedef struct sched_worker_options {
    const char *checkpoint;  // model weights file
    const char *vocab;       // vocab.txt
    cfg_model cfg;           // model configuration (max_len already applied)
    img_options img;         // preprocessing (size, mean, std: see sched_image_options)
    int batch;               // most images of a chunk, encoded together (>= 1); greedy decoding
                             //   keeps up to 2 x batch captions in progress
    int rank;                // recorded in every result
    int prefetch;            // 1: preprocess the next chunk in a helper thread
    gen_decoding decoding;   // how captions are decoded (generate.h)
    model_precision precision;// which weights are bfloat16 (engine/model.h)
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

/* Captions chunks from the feed until it ends (everything received is
 * finished and delivered) or cancels (chunks not encoded yet are dropped;
 * captions being decoded are finished, at most max_len more steps, and
 * their chunks delivered). Returns 0 then; -1 when the feed fails, a
 * delivery fails or a chunk holds more than `batch` tasks (err filled;
 * undelivered work is dropped). */
int sched_worker_loop(sched_worker *w, const sched_feed *feed, rc_error *err);

#endif
