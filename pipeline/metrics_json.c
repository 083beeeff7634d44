/* metrics_json.c: the scores as JSON, as `radcap score --json` and
 * `radcap eval --json` print them. */
#include "pipeline/metrics.h"

/* s as a JSON string; s is valid UTF-8 (the readers of ids make it so). */
static void json_string(FILE *out, const char *s)
{
    putc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            putc(*p, out);
    }
    putc('"', out);
}

/* The scores' members, without the braces around them. */
static void json_members(FILE *out, const metrics_scores *s)
{
    fprintf(out, "\"bleu\": [%.17g, %.17g, %.17g, %.17g], \"cider\": %.17g, \"rouge_l\": %.17g", s->bleu[0],
            s->bleu[1], s->bleu[2], s->bleu[3], s->cider, s->rouge_l);
}

void metrics_write_json(FILE *out, const metrics_result *result, const char *const *ids)
{
    static const metrics_scores zero;
    putc('{', out);
    json_members(out, result ? &result->corpus : &zero);
    fputs(", \"per_image\": {", out);
    int first = 1;
    for (size_t i = 0; result && i < result->n_items; i++) {
        if (!result->scored[i])
            continue;
        if (!first)
            fputs(", ", out);
        first = 0;
        json_string(out, ids[i]);
        fputs(": {", out);
        json_members(out, &result->per_image[i]);
        putc('}', out);
    }
    fputs("}}\n", out);
}
