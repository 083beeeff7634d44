/* log.h: the log lines of long-running commands (radcap run).
 *
 * Every line carries an ISO 8601 UTC timestamp with milliseconds, the MPI
 * rank and a level, so that the interleaved standard error of many ranks
 * (a Slurm log) can be read and grepped:
 *
 *   2025-03-01T02:00:13.207Z rank 0 INFO  run 3: 1200 images to caption
 *
 * A logger writes to a stream its owner gives it (standard error for the
 * commands); it holds no global state, so tests can give it a memory
 * stream. On a terminal, a "status line" (the progress of a run) is kept
 * at the bottom: it is redrawn in place with a carriage return and erased
 * before any other line is written, so log lines never mix with it.
 */
#ifndef RC_LOG_H
#define RC_LOG_H

#include <stdio.h>

typedef enum log_level {
    LOG_ERROR = 0, /* the command cannot go on, or a rank failed */
    LOG_WARN,      /* an image or a manifest row failed; the run goes on */
    LOG_INFO,      /* what the run is doing: start, resumption, progress, end */
    LOG_DEBUG,     /* per chunk and per message details (--verbose) */
} log_level;

typedef struct rc_log {
    FILE *out;          // where lines go (not owned)
    int rank;           // MPI rank shown on every line (0 without MPI)
    log_level level;    // lines above this level are dropped
    int terminal;       // 1: out is a terminal, status lines are redrawn in place
    int status_shown;   // 1 while a status line is on screen (terminal only)
} rc_log;

/* Sets up a logger writing to out at the given level; `terminal` says
 * whether out is a terminal (the caller asks isatty). */
void log_init(rc_log *log, FILE *out, int rank, log_level level, int terminal);

/* 1 when a line of this level would be written. */
int log_enabled(const rc_log *log, log_level level);

/* Writes one line (a trailing newline in fmt is not needed). */
void log_msg(rc_log *log, log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Shows a status line at level INFO: on a terminal it replaces the previous
 * status line in place (no newline); elsewhere it is an ordinary log line. */
void log_status(rc_log *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Ends a status line shown on a terminal with a newline, so that it stays
 * on screen (e.g. the last progress line before the summary). */
void log_status_done(rc_log *log);

/* "ERROR", "WARN", "INFO", "DEBUG". */
const char *log_level_name(log_level level);

/* Writes the current UTC time as "YYYY-MM-DDTHH:MM:SS.mmmZ" (25 bytes with
 * the NUL). */
void log_timestamp(char out[32]);

#endif
