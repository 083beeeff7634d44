/* master.h: a run from the master's side: the manifest, the results
 * database, handing out work and storing what comes back.
 *
 * The master (rank 0, or the only process) reads the manifest, opens the
 * database, and either resumes the latest unfinished run with the same
 * fingerprint or starts a new run. The fingerprint covers what decides the
 * captions: the model configuration, max_len, max_pixels, the EXIF option,
 * the decoding options (beam search, repetition control, token scores),
 * the manifest's absolute path, and the SHA-256 of the checkpoint and of
 * the vocabulary; not the batch size, thread or rank counts, which may
 * change between a run and its resumption. Images already `ok` in the run
 * are skipped; failed ones are tried again. The manifest's reference
 * captions are stored with the run before any work starts.
 *
 * Work: with one rank the master captions itself (sched_worker_loop, the
 * in-process feed). With more, it only dispatches: a worker asks for a
 * chunk when it holds none in reserve, and gets the next images in
 * manifest order, min(batch, ceil(remaining / (2 x workers))) of them, so
 * chunks shrink near the end and no rank idles long while another
 * finishes. Results are written as they arrive, in transactions of
 * `commit_every` results or `commit_seconds`, whichever comes first: a
 * kill -9 loses at most that much. Images the manifest lists but that do
 * not exist are stored as errors straight away.
 *
 * Stopping: on a signal (signals.h) on the master, or an INTERRUPT from a
 * worker, no more work is handed out, every worker is told to stop after
 * its current batch, the results in flight are collected and committed and
 * the run is marked `interrupted`. The same command later resumes it.
 *
 * End: the run is marked `completed`, and when references exist its scores
 * are computed and stored (scoring.h).
 */
#ifndef RC_SCHED_MASTER_H
#define RC_SCHED_MASTER_H

#include <stdint.h>

#include "engine/config.h"
#include "engine/err.h"
#include "engine/gemm.h"
#include "engine/generate.h"
#include "io/manifest.h"
#include "pipeline/log.h"
#include "pipeline/ptb.h"
#include "scheduler/scoring.h"
#include "scheduler/worker.h"

typedef struct sched_run_options {
    const char *manifest;        // manifest file or folder
    manifest_kind manifest_kind; // MANIFEST_AUTO to detect
    const char *image_dir;       // CSV manifests: the image folder, or NULL for the default
    const char *db;              // results database
    const char *checkpoint;      // model weights
    const char *vocab;           // vocab.txt
    const char *config_path;     // model configuration file, or NULL (recorded only)
    cfg_model cfg;               // the configuration in force (max_len applied)
    long long max_pixels;        // larger images are refused before decoding
    int exif_orientation;        // 1: apply EXIF orientation
    int batch;                   // images per batch, and the largest chunk
    int threads;                 // OpenMP threads of a captioning rank (recorded only)
    int prefetch;                // 1: preprocess the next batch during the current one
    int new_run;                 // 1: start a new run even if one could be resumed
    int score;                   // 1: score the run at the end when references exist
    ptb_options ptb;             // tokenisation for scoring
    double progress_seconds;     // between progress lines when the log is not a terminal
    int commit_every;            // results per transaction at most
    double commit_seconds;       // seconds a result may wait before its commit
    gen_decoding decoding;       // beam search, repetition control, confidence (generate.h); default greedy
    model_precision precision;   // which weights are bfloat16: MODEL_FP32 (default), MODEL_BF16, MODEL_BF16_ALL
    int since_last;              // 1: only images new or changed since the last completed run
    int change_by_content;       // with since_last: compare SHA-256 of the files, not size and mtime
    long long max_errors;        // stop (failed) once this session has more failed images; < 0 no limit
    const char *settings_json;   // the effective settings (job.h), stored with the run; may be NULL
    const char *program_version; // the build that starts the run (radcap --version), stored with it; may be NULL
} sched_run_options;

/* Fills the defaults: batch 8, prefetch on, scoring on, progress every
 * 30 s, commits every 64 results or 2 s, MANIFEST_AUTO; the paths NULL
 * and cfg the model card's. */
void sched_run_options_default(sched_run_options *o);

/* How a run went. */
typedef enum sched_run_end {
    SCHED_RUN_COMPLETED = 0, /* every image of the manifest has a row */
    SCHED_RUN_INTERRUPTED,   /* stopped by a signal; resumable */
    SCHED_RUN_FAILED,        /* could not go on (err says why) */
} sched_run_end;

typedef struct sched_run_outcome {
    sched_run_end end;
    int abort_job;           // 1: a rank failed; the caller should end the MPI job (MPI_Abort)
    int signal;              // the signal that stopped the run, or 0
    int64_t run_id;          // 0 when no run was recorded
    int resumed;             // 1: an earlier run was continued
    int64_t n_total;         // entries of the manifest
    int64_t n_skipped;       // already ok when this session started
    int64_t n_unchanged;     // incremental runs: left out as unchanged since an earlier run
    int64_t n_ok, n_error;   // the run's items by status, at the end
    int64_t session_done;    // results stored by this session
    int64_t session_errors;  // of which failed
    double seconds;          // this session's wall time from the first hand-out to the end
    double master_cpu_seconds; // CPU time the master process used in that time (user + system)
    int n_ranks;             // ranks of the job (1 without MPI)
    int n_workers;           // ranks that captioned
    int scored;              // 1: scores were computed and stored
    sched_scores scores;     // when scored (release with sched_scores_free)
} sched_run_outcome;

/* Runs the master of a job of n_ranks ranks: with n_ranks == 1 it captions
 * itself (loading the model), otherwise ranks 1..n_ranks-1 must be running
 * sched_worker_rank (worker_rank.h). hosts (n_ranks names, or NULL) are recorded with the
 * run. Returns 0 when the run completed or was interrupted (see out->end),
 * -1 when it failed (err filled; out->abort_job says whether to end the
 * MPI job). Log lines go to log. */
int sched_master_run(const sched_run_options *o, int n_ranks, char *const *hosts, rc_log *log,
                     sched_run_outcome *out, rc_error *err);

#endif
