/* fuzz_protocol.c: the scheduler's message decoder (scheduler/protocol.h)
 * over arbitrary bytes, as a master or worker receives them from another
 * rank. Beyond "no crash, no leak, no read outside the input", it checks
 * what the decoder promises: a decoded message is of a known kind, its
 * counts are within SCHED_MAX_ITEMS, a failed result has an error and no
 * caption, and encoding it again gives exactly the input bytes (the
 * layout has one encoding per message, so anything accepted is canonical). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sched_msg msg;
    rc_error err = {{0}};
    if (sched_decode(data, size, &msg, &err) == 0) {
        if (msg.kind < SCHED_MSG_REQUEST || msg.kind >= SCHED_MSG_N_KINDS || msg.n_tasks > SCHED_MAX_ITEMS ||
            msg.n_results > SCHED_MAX_ITEMS)
            abort();
        for (int i = 0; i < msg.n_results; i++) {
            const sched_result *r = &msg.results[i];
            if (r->ok ? (r->error != NULL || r->caption == NULL) : (r->error == NULL || r->caption != NULL))
                abort();
        }
        sched_buf again = {0};
        if (sched_encode(&msg, &again, &err) < 0 || again.len != size || memcmp(again.data, data, size) != 0)
            abort();
        sched_buf_free(&again);
    } else if (!err.msg[0]) {
        abort(); /* a failure always says why */
    }
    sched_msg_free(&msg);
    return 0;
}
