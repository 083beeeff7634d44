/* signals.c: the stop signals' handler. */
#include "scheduler/signals.h"

#include <signal.h>
#include <stddef.h>

static volatile sig_atomic_t received; /* see signals.h: a handler's only outlet */

static void on_signal(int sig)
{
    if (!received)
        received = sig;
}

static const int stop_signals[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};

int sched_signals_install(void)
{
    received = 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++)
        if (sigaction(stop_signals[i], &sa, NULL) < 0)
            return -1;
    return 0;
}

int sched_signal_received(void) { return received; }

const char *sched_signal_name(int sig)
{
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "another signal";
    }
}
