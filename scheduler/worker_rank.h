/* worker_rank.h: the life of an MPI worker rank.
 *
 * It loads the model, then asks the master for chunks, captions them
 * (worker.h: the next chunk is preprocessed while the current one runs)
 * and sends back each batch's results, until the master says STOP. A
 * worker always asks for its next chunk as soon as it has none in reserve,
 * so the reply arrives while it computes; it holds at most three chunks:
 * the one computing, the one preprocessing and one on its way.
 *
 * When the model cannot be loaded it sends FATAL with the reason (naming
 * the file) and returns: the master then ends the job. A signal on this
 * rank (under mpirun or srun every rank gets SIGTERM) is passed on to the
 * master as INTERRUPT; the worker finishes the batch it is computing,
 * drops what it has not started, waits for the master's STOP, and leaves
 * with DONE, its last message.
 */
#ifndef RC_SCHED_WORKER_RANK_H
#define RC_SCHED_WORKER_RANK_H

#include "engine/err.h"
#include "pipeline/log.h"
#include "scheduler/worker.h"

/* Runs the worker rank (MPI initialised, rank >= 1). Returns 0 after the
 * master's STOP; -1 (err filled) when the model could not be loaded (FATAL
 * was sent) or MPI failed. */
int sched_worker_rank(const sched_worker_options *wo, rc_log *log, rc_error *err);

#endif
