/* signals.h: stopping a run cleanly on SIGTERM, SIGINT, SIGUSR1 or SIGUSR2.
 *
 * Slurm sends SIGTERM (or the signal asked for with sbatch --signal) before
 * a time limit or a preemption; a user presses Ctrl-C. The handler only
 * records the signal; the master and the workers poll it between messages
 * and batches, stop taking work, hand in what is in flight and leave. The
 * handler is installed with SA_RESETHAND: a second signal of the same kind
 * gets the default action and ends the process at once (a database commit
 * is atomic, so at most the uncommitted results are lost).
 *
 * The recorded signal is the one piece of process-wide mutable state of
 * the scheduler: a signal handler has nowhere else to write.
 */
#ifndef RC_SCHED_SIGNALS_H
#define RC_SCHED_SIGNALS_H

/* Installs the handler for SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 and clears
 * any recorded signal. Returns 0, or -1 if sigaction failed. */
int sched_signals_install(void);

/* The number of the first signal received since sched_signals_install, or 0. */
int sched_signal_received(void);

/* "SIGTERM", "SIGINT", ... for the signals above, else "signal N". */
const char *sched_signal_name(int sig);

#endif
