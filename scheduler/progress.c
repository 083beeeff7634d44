/* progress.c: run progress counts and their one-line summary. */
#include "scheduler/progress.h"

#include <math.h>
#include <stdio.h>

void sched_progress_start(sched_progress *p, int64_t total, int64_t done_before, double now)
{
    p->total = total;
    p->done_before = done_before;
    p->done = p->errors = 0;
    p->start = now;
}

void sched_progress_add(sched_progress *p, int ok)
{
    p->done++;
    if (!ok)
        p->errors++;
}

double sched_progress_rate(const sched_progress *p, double now)
{
    double elapsed = now - p->start;
    return p->done > 0 && elapsed > 0 ? (double)p->done / elapsed : 0.0;
}

void sched_format_duration(double seconds, char *buf, size_t size)
{
    if (!isfinite(seconds) || seconds < 0) {
        snprintf(buf, size, "?");
        return;
    }
    long long s = llround(seconds);
    if (s < 60)
        snprintf(buf, size, "%llds", s);
    else if (s < 3600)
        snprintf(buf, size, "%lldm%02llds", s / 60, s % 60);
    else
        snprintf(buf, size, "%lldh%02lldm", s / 3600, s / 60 % 60);
}

void sched_progress_format(const sched_progress *p, double now, char *buf, size_t size)
{
    const int64_t done = p->done_before + p->done;
    const double rate = sched_progress_rate(p, now);
    const double percent = p->total > 0 ? 100.0 * (double)done / (double)p->total : 100.0;
    char eta[32];
    if (rate > 0)
        sched_format_duration((double)(p->total - done) / rate, eta, sizeof eta);
    else
        snprintf(eta, sizeof eta, "?");
    snprintf(buf, size, "progress %lld/%lld (%.1f%%), %.1f images/s, %lld error%s, ETA %s", (long long)done,
             (long long)p->total, percent, rate, (long long)p->errors, p->errors == 1 ? "" : "s", eta);
}
