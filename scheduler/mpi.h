/* mpi.h: the scheduler's use of MPI, with every return code checked.
 *
 * A run uses MPI only when a launcher started it: mpirun/mpiexec (Open MPI
 * sets OMPI_COMM_WORLD_SIZE), srun with PMIx (PMIX_RANK) or PMI-1/2
 * (PMI_RANK). A plain `radcap run` never initialises MPI, so it works
 * where Open MPI is installed but no launcher is (and starts faster).
 *
 * MPI_COMM_WORLD gets MPI_ERRORS_RETURN, so that a failed call comes back
 * as an rc_error naming the call and the MPI error string instead of
 * aborting without a word. Messages are sched_msg (protocol.h) sent as
 * MPI_BYTE with their kind as the tag. Waiting is done by polling
 * (MPI_Iprobe and a sleep of about a millisecond): Open MPI's blocking
 * calls spin, and would take a core away from the computing ranks.
 */
#ifndef RC_SCHED_MPI_H
#define RC_SCHED_MPI_H

#include "engine/err.h"
#include "scheduler/protocol.h"

/* 1 when the environment says an MPI launcher started this process. */
int sched_mpi_launched(void);

/* MPI_Init_thread asking for MPI_THREAD_FUNNELED (only the main thread
 * calls MPI); sets MPI_ERRORS_RETURN; gives this process's rank and the
 * number of ranks. */
int sched_mpi_init(int *argc, char ***argv, int *rank, int *size, rc_error *err);

/* MPI_Finalize. */
int sched_mpi_finalize(rc_error *err);

/* MPI_Abort on MPI_COMM_WORLD with this exit status: ends every rank. */
void sched_mpi_abort(int status);

/* Sends msg to rank dest and returns when the buffer may be reused (for
 * small messages at once; for large ones when the receiver has taken it).
 * scratch is reused for the encoding. */
int sched_mpi_send(int dest, const sched_msg *msg, sched_buf *scratch, rc_error *err);

/* Receives a waiting message from rank `source` (or any rank when source is
 * -1) without blocking: returns 1 with *msg decoded and *from its sender
 * (msg is released with sched_msg_free), 0 when no message is waiting,
 * -1 on an MPI error or a message that does not decode (err names the
 * sending rank). */
int sched_mpi_poll(int source, sched_msg *msg, int *from, sched_buf *scratch, rc_error *err);

/* Sleeps for about a millisecond: the pause between two polls. */
void sched_mpi_pause(void);

/* Messages sent without waiting for the receiver (the master's chunks and
 * stops, so that a busy worker never holds the master up). */
typedef struct sched_outbox sched_outbox;

sched_outbox *sched_outbox_new(rc_error *err);

/* Starts sending msg to dest (MPI_Isend of a private copy of its bytes). */
int sched_outbox_send(sched_outbox *box, int dest, const sched_msg *msg, rc_error *err);

/* Releases the messages whose sends have completed; returns how many are
 * still pending, or -1 on an MPI error. */
int sched_outbox_progress(sched_outbox *box, rc_error *err);

/* Waits (polling) until every send has completed, then frees the outbox.
 * With abandon set it cancels nothing and waits for nothing: for a job
 * that is about to be aborted. */
int sched_outbox_close(sched_outbox *box, int abandon, rc_error *err);

/* The host names of all ranks, gathered at rank 0 (a collective: every
 * rank calls it). At rank 0 *hosts is a malloc'd array of size strings
 * (free each and the array); at other ranks it is NULL. */
int sched_mpi_gather_hosts(int rank, int size, char ***hosts, rc_error *err);

/* The number of worker ranks (every rank but 0) on this rank's node, for
 * sharing the node's cores among them (a collective: every rank calls it). */
int sched_mpi_node_workers(int rank, int *n, rc_error *err);

#endif
