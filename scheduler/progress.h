/* progress.h: how far a run is, as counts and a one-line summary.
 *
 * The master counts results as they arrive; the line it shows (updated in
 * place on a terminal, every --progress-interval seconds in a log) reads
 *
 *   progress 1200/5000 (24.0%), 35.2 images/s, 3 errors, ETA 1m48s
 *
 * where the total is the manifest's size, the done count includes images
 * already done by an earlier session of a resumed run, and the rate and
 * ETA come from this session's results only.
 */
#ifndef RC_SCHED_PROGRESS_H
#define RC_SCHED_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct sched_progress {
    int64_t total;       // images in the manifest
    int64_t done_before; // already ok when this session started
    int64_t done;        // results received in this session (ok and failed)
    int64_t errors;      // failed results of this session
    double start;        // when this session's work began (seconds, any monotonic clock)
} sched_progress;

/* Starts counting at time now. */
void sched_progress_start(sched_progress *p, int64_t total, int64_t done_before, double now);

/* Counts one result. */
void sched_progress_add(sched_progress *p, int ok);

/* This session's images per second at time now (0 before any result). */
double sched_progress_rate(const sched_progress *p, double now);

/* Writes the progress line (without level or time stamp) into buf. */
void sched_progress_format(const sched_progress *p, double now, char *buf, size_t size);

/* Writes a duration as "45s", "12m05s" or "3h07m" into buf ("?" when
 * negative or not finite). */
void sched_format_duration(double seconds, char *buf, size_t size);

#endif
