/* fuzz_score_input.c: the caption file reader of `radcap score` (TSV, JSON
 * Lines, JSON, and detection) over arbitrary bytes, then the scoring path
 * on what it read: each entry's first caption as the candidate and the
 * others as references, through the PTB tokenizer and the metrics.
 * Beyond "no crash, no leak", it checks what the modules promise: entries
 * have distinct, non-empty, NUL-free UTF-8 ids that capfile_find returns,
 * a failed parse leaves a message, and every score is finite and in range
 * (BLEU and ROUGE-L in [0, 1], CIDEr-D in [0, 10 + 1e-9]). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/caption_file.h"
#include "pipeline/metrics.h"
#include "pipeline/ptb.h"
#include "pipeline/ucd.h"

static int valid_utf8(const char *s)
{
    size_t len = strlen(s);
    for (size_t k = 0; k < len;) {
        int32_t cp;
        size_t used = ucd_decode((const unsigned char *)s + k, len - k, &cp);
        if (cp == UCD_REPLACEMENT && used == 1)
            return 0;
        k += used;
    }
    return 1;
}

static void check_scores(const metrics_scores *s)
{
    for (int n = 0; n < METRICS_BLEU_N; n++)
        if (!(s->bleu[n] >= 0.0 && s->bleu[n] <= 1.0 + 1e-12))
            abort();
    if (!(s->cider >= 0.0 && s->cider <= 10.0 + 1e-9) || !(s->rouge_l >= 0.0 && s->rouge_l <= 1.0 + 1e-12))
        abort();
}

static void score(const capfile *f, int pretokenized)
{
    metrics_item *items = calloc(f->n_entries + 1, sizeof *items);
    char **texts = calloc(f->n_entries + 1, sizeof *texts);
    char ***refs = calloc(f->n_entries + 1, sizeof *refs);
    if (!items || !texts || !refs)
        abort();
    for (size_t i = 0; i < f->n_entries; i++) {
        const capfile_entry *e = &f->entries[i];
        rc_error err;
        size_t n_refs = e->n_captions ? e->n_captions - 1 : 0;
        refs[i] = calloc(n_refs + 1, sizeof **refs);
        texts[i] = e->n_captions ? (pretokenized ? strdup(e->captions[0]) : ptb_tokenize(e->captions[0], strlen(e->captions[0]), NULL, &err)) : strdup("");
        if (!refs[i] || !texts[i])
            abort();
        for (size_t k = 0; k < n_refs; k++) {
            const char *c = e->captions[k + 1];
            refs[i][k] = pretokenized ? strdup(c) : ptb_tokenize(c, strlen(c), NULL, &err);
            if (!refs[i][k])
                abort();
        }
        items[i] = (metrics_item){texts[i], (const char *const *)refs[i], n_refs};
    }
    rc_error err;
    metrics_result *r = metrics_compute(items, f->n_entries, &err);
    if (!r)
        abort();
    check_scores(&r->corpus);
    for (size_t i = 0; i < f->n_entries; i++) {
        check_scores(&r->per_image[i]);
        if (r->scored[i] != (items[i].n_references > 0))
            abort();
    }
    metrics_free(r);
    for (size_t i = 0; i < f->n_entries; i++) {
        for (size_t k = 0; k < items[i].n_references; k++)
            free(refs[i][k]);
        free(refs[i]);
        free(texts[i]);
    }
    free(refs);
    free(texts);
    free(items);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* The first byte picks the format (and whether to tokenise); the rest is the file. */
    capfile_format format = (capfile_format)(data[0] % 4);
    int pretokenized = (data[0] >> 2) & 1;
    rc_error err = {{0}};
    capfile *f = capfile_parse((const char *)data + 1, size - 1, format, "fuzz", &err);
    if (!f) {
        if (!err.msg[0])
            abort();
        return 0;
    }
    if (f->format == CAPFILE_AUTO)
        abort();
    for (size_t i = 0; i < f->n_entries; i++) {
        const capfile_entry *e = &f->entries[i];
        if (!e->id[0] || !valid_utf8(e->id) || capfile_find(f, e->id) != e)
            abort();
        for (size_t k = 0; k < e->n_captions; k++)
            if (!e->captions[k])
                abort();
    }
    score(f, pretokenized);
    capfile_free(f);
    return 0;
}
