/* worker_rank.c: an MPI worker rank: chunks in, results out. */
#include "scheduler/worker_rank.h"

#include <string.h>

#include "scheduler/mpi.h"
#include "scheduler/signals.h"

enum { MASTER = 0, MAX_QUEUED = 4 };

/* The worker's side of the conversation, behind the sched_feed interface. */
typedef struct rank_feed {
    sched_chunk queue[MAX_QUEUED]; // chunks received and not yet taken, oldest first
    int n_queued;
    int requested;      // a REQUEST is unanswered
    int stopped;        // the master said STOP
    int cancelled;      // drop unstarted work (STOP now, or a signal here)
    int interrupt_sent; // this rank's signal was passed on
    sched_buf in, out;  // message scratch
    rc_log *log;
} rank_feed;

static int send_kind(rank_feed *f, sched_msg_kind kind, rc_error *err)
{
    const sched_msg msg = {.kind = kind};
    return sched_mpi_send(MASTER, &msg, &f->out, err);
}

/* Takes in every message the master has sent so far. */
static int drain(rank_feed *f, rc_error *err)
{
    for (;;) {
        sched_msg msg;
        int from, got = sched_mpi_poll(MASTER, &msg, &from, &f->in, err);
        if (got <= 0)
            return got;
        int status = 0;
        if (msg.kind == SCHED_MSG_WORK) {
            f->requested = 0;
            if (f->cancelled || f->stopped) {
                /* work that crossed our INTERRUPT: the master will not count on it */
            } else if (f->n_queued == MAX_QUEUED) {
                status = rc_fail(err, "the master sent more chunks than this worker asked for");
            } else {
                f->queue[f->n_queued++] = (sched_chunk){msg.tasks, msg.n_tasks};
                log_msg(f->log, LOG_DEBUG, "received a chunk of %d images", msg.n_tasks);
                msg.tasks = NULL;
                msg.n_tasks = 0;
            }
        } else if (msg.kind == SCHED_MSG_STOP) {
            f->stopped = 1;
            f->cancelled |= msg.stop == SCHED_STOP_NOW;
            log_msg(f->log, LOG_DEBUG, "the master says stop (%s)", msg.stop == SCHED_STOP_NOW ? "now" : "drain");
        } else {
            status = rc_fail(err, "unexpected %s message from the master", sched_msg_kind_name(msg.kind));
        }
        sched_msg_free(&msg);
        if (status < 0)
            return -1;
    }
}

static sched_feed_status feed_next(void *ctx, int wait, sched_chunk *chunk, rc_error *err)
{
    rank_feed *f = ctx;
    for (;;) {
        if (drain(f, err) < 0)
            return SCHED_FEED_ERROR;
        int sig = sched_signal_received();
        if (sig && !f->interrupt_sent) {
            log_msg(f->log, LOG_INFO, "received %s: finishing the current batch and stopping",
                    sched_signal_name(sig));
            if (send_kind(f, SCHED_MSG_INTERRUPT, err) < 0)
                return SCHED_FEED_ERROR;
            f->interrupt_sent = f->cancelled = 1;
        }
        if (f->cancelled)
            return SCHED_FEED_CANCEL;
        if (f->n_queued > 0) {
            *chunk = f->queue[0];
            memmove(f->queue, f->queue + 1, sizeof f->queue[0] * (size_t)(--f->n_queued));
            if (f->n_queued == 0 && !f->requested && !f->stopped) {
                if (send_kind(f, SCHED_MSG_REQUEST, err) < 0)
                    return SCHED_FEED_ERROR;
                f->requested = 1;
            }
            return SCHED_FEED_CHUNK;
        }
        if (f->stopped)
            return SCHED_FEED_END;
        if (!f->requested) {
            if (send_kind(f, SCHED_MSG_REQUEST, err) < 0)
                return SCHED_FEED_ERROR;
            f->requested = 1;
        }
        if (!wait)
            return SCHED_FEED_EMPTY;
        sched_mpi_pause();
    }
}

static int feed_deliver(void *ctx, const sched_result *results, int n, rc_error *err)
{
    rank_feed *f = ctx;
    const sched_msg msg = {.kind = SCHED_MSG_RESULTS, .results = (sched_result *)results, .n_results = n};
    return sched_mpi_send(MASTER, &msg, &f->out, err);
}

int sched_worker_rank(const sched_worker_options *wo, rc_log *log, rc_error *err)
{
    rank_feed f = {.log = log};
    sched_worker *w = sched_worker_open(wo, err);
    if (!w) {
        rc_error send_err = {{0}};
        const sched_msg fatal = {.kind = SCHED_MSG_FATAL, .text = err->msg};
        if (sched_mpi_send(MASTER, &fatal, &f.out, &send_err) < 0)
            log_msg(log, LOG_ERROR, "%s", send_err.msg);
        sched_buf_free(&f.out);
        return -1;
    }
    log_msg(log, LOG_DEBUG, "model loaded; captioning batches of up to %d images", wo->batch);
    const sched_feed feed = {feed_next, feed_deliver, &f};
    int status = sched_worker_loop(w, &feed, err);
    /* The master's STOP is the last message it sends us: wait for it, so
     * that nothing is left unreceived, then say goodbye. */
    while (status == 0 && !f.stopped) {
        status = drain(&f, err);
        if (status == 0 && !f.stopped)
            sched_mpi_pause();
    }
    if (status == 0)
        status = send_kind(&f, SCHED_MSG_DONE, err);
    for (int i = 0; i < f.n_queued; i++)
        sched_chunk_free(&f.queue[i]);
    sched_buf_free(&f.in);
    sched_buf_free(&f.out);
    sched_worker_close(w);
    return status;
}
