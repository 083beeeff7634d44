/* log.c: timestamped, ranked, levelled log lines and a terminal status line. */
#include "pipeline/log.h"

#include <stdarg.h>
#include <time.h>

/* Erases the status line on a terminal: carriage return, clear to end. */
#define ERASE_LINE "\r\033[K"

void log_init(rc_log *log, FILE *out, int rank, log_level level, int terminal)
{
    log->out = out;
    log->rank = rank;
    log->level = level;
    log->terminal = terminal;
    log->status_shown = 0;
}

int log_enabled(const rc_log *log, log_level level) { return level <= log->level; }

const char *log_level_name(log_level level)
{
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    return level >= LOG_ERROR && level <= LOG_DEBUG ? names[level] : "?";
}

void log_timestamp(char out[32])
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm utc;
    gmtime_r(&now.tv_sec, &utc);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &utc);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(now.tv_nsec / 1000000));
}

/* Writes the prefix and the formatted text, without the line end. */
static void write_line(rc_log *log, log_level level, const char *fmt, va_list ap)
{
    char stamp[32];
    log_timestamp(stamp);
    fprintf(log->out, "%s rank %d %-5s ", stamp, log->rank, log_level_name(level));
    vfprintf(log->out, fmt, ap);
}

void log_msg(rc_log *log, log_level level, const char *fmt, ...)
{
    if (!log_enabled(log, level))
        return;
    if (log->status_shown) {
        fputs(ERASE_LINE, log->out);
        log->status_shown = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    write_line(log, level, fmt, ap);
    va_end(ap);
    fputc('\n', log->out);
    fflush(log->out);
}

void log_status(rc_log *log, const char *fmt, ...)
{
    if (!log_enabled(log, LOG_INFO))
        return;
    if (log->terminal)
        fputs(ERASE_LINE, log->out);
    va_list ap;
    va_start(ap, fmt);
    write_line(log, LOG_INFO, fmt, ap);
    va_end(ap);
    if (log->terminal)
        log->status_shown = 1;
    else
        fputc('\n', log->out);
    fflush(log->out);
}

void log_status_done(rc_log *log)
{
    if (log->status_shown) {
        fputc('\n', log->out);
        fflush(log->out);
        log->status_shown = 0;
    }
}
