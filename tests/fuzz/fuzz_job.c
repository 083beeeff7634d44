/* fuzz_job.c: libFuzzer target for job files (pipeline/job.c). Any input
 * either loads, and then its effective settings read back as a job file to
 * the same settings, or fails with a message; never a crash. The input is
 * also expanded as a string (${NAME} references). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/job.h"

/* The effective settings as text, without the job_file entry. */
static char *settings_text(const job_settings *s)
{
    cJSON *json = job_settings_json(s);
    if (!json)
        abort();
    cJSON_DeleteItemFromObjectCaseSensitive(json, "job_file");
    char *text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rc_error err;
    rc_clear(&err);
    job_settings s;
    job_settings_init(&s);
    if (job_load_text(&s, (const char *)data, size, "fuzz.json", "/jobs", NULL, &err) == 0) {
        char *first = settings_text(&s);
        job_settings again;
        job_settings_init(&again);
        if (!first || job_load_text(&again, first, strlen(first), "round trip", "/", NULL, &err) != 0)
            abort();
        char *second = settings_text(&again);
        if (!second || strcmp(first, second) != 0)
            abort();
        free(first);
        free(second);
        job_settings_free(&again);
    } else if (err.msg[0] == '\0') {
        abort();
    }
    job_settings_free(&s);

    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    rc_clear(&err);
    char *expanded = job_expand(text, &err);
    if (!expanded && err.msg[0] == '\0')
        abort();
    free(expanded);
    free(text);
    return 0;
}
