/* cmd_score.c: `radcap score`, BLEU-1..4, CIDEr-D and ROUGE-L of candidate
 * captions against reference captions read from text files, without any
 * model, exactly as the COCO caption evaluation code scores them. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/caption_file.h"
#include "pipeline/commands.h"
#include "pipeline/metrics.h"
#include "pipeline/ptb.h"

static const char usage_text[] =
    "usage: radcap score --candidates FILE --references FILE [--format FORMAT]\n"
    "                    [--pretokenized] [--drop-brackets] [--json]\n"
    "\n"
    "Scores candidate captions against reference captions with BLEU-1..4,\n"
    "CIDEr-D and ROUGE-L, computed as the COCO caption evaluation code\n"
    "(pycocoevalcap) computes them, per image and over the corpus.\n"
    "\n"
    "Files hold captions keyed by image id, as TSV (one ID<TAB>CAPTION per\n"
    "line; an optional first line \"id<TAB>caption\" is a header), JSON Lines\n"
    "({\"id\": ..., \"caption\": \"...\" or [\"...\", ...]} per line; \"image_id\" or\n"
    "\"path\" may stand for \"id\") or a JSON array of such objects. An id may\n"
    "repeat in the references, each line adding a reference; each candidate id\n"
    "must have exactly one caption. The corpus is the candidates' images, in\n"
    "the candidates file's order; references of other images are ignored, and\n"
    "a candidate without any reference is not scored (and left out of the\n"
    "corpus).\n"
    "\n"
    "  --candidates FILE  the captions to score\n"
    "  --references FILE  the ground-truth captions\n"
    "  --format FORMAT    tsv, jsonl, json or auto (default: auto, from each\n"
    "                     file's first character: '{' JSON Lines, '[' JSON,\n"
    "                     anything else TSV)\n"
    "  --pretokenized     take the texts as already tokenised: no tokenizer, no\n"
    "                     lower-casing; words are separated by spaces (BLEU and\n"
    "                     CIDEr-D split on runs of whitespace, ROUGE-L on single\n"
    "                     spaces, as the reference scorers do)\n"
    "  --drop-brackets    remove the -lrb- -rrb- -lcb- -rcb- tokens the reference\n"
    "                     tokenisation keeps for brackets (not pycocoevalcap's\n"
    "                     behaviour: scores are then not comparable with it)\n"
    "  --json             print one JSON object instead of a table:\n"
    "                     {\"bleu\": [b1, b2, b3, b4], \"cider\": x, \"rouge_l\": x,\n"
    "                      \"per_image\": {\"ID\": {\"bleu\": [...], \"cider\": x,\n"
    "                      \"rouge_l\": x}, ...}} with every number in full\n"
    "                     double precision (%.17g); unscored images are absent\n"
    "  --help             show this help\n"
    "\n"
    "Without --pretokenized the texts are tokenised as pycocoevalcap does:\n"
    "Stanford PTB tokenizer conventions, lower-cased, punctuation tokens removed.\n"
    "\n"
    "Exit status: 0 on success, 1 when some candidates had no reference (they\n"
    "are listed on standard error), 2 on a usage error, 3 when a file cannot be\n"
    "read or is malformed (the message names the file and line).\n";

#define WARN_LIST_MAX 5 /* ids listed in a warning before "..." */

static int print_json(FILE *out, const metrics_result *r, const capfile *cands)
{
    const char **ids = malloc(sizeof *ids * (r->n_items ? r->n_items : 1));
    if (!ids)
        return -1;
    for (size_t i = 0; i < r->n_items; i++)
        ids[i] = cands->entries[i].id;
    metrics_write_json(out, r, ids);
    free(ids);
    return 0;
}

static void print_table(FILE *out, const metrics_result *r, int pretokenized, int drop_brackets)
{
    fprintf(out, "images scored: %zu of %zu\n", r->n_scored, r->n_items);
    fprintf(out, "tokenisation:  %s\n",
            pretokenized    ? "none (--pretokenized)"
            : drop_brackets ? "PTB as pycocoevalcap, bracket tokens dropped"
                            : "PTB as pycocoevalcap");
    double ratio = (double)r->cand_len / (r->ref_len ? (double)r->ref_len : 1.0);
    fprintf(out, "BLEU lengths:  candidates %llu, references %llu, ratio %.6f\n", (unsigned long long)r->cand_len,
            (unsigned long long)r->ref_len, ratio);
    fprintf(out, "\n%-10s %s\n", "metric", "corpus");
    for (int n = 0; n < METRICS_BLEU_N; n++)
        fprintf(out, "BLEU-%d     %.6f\n", n + 1, r->corpus.bleu[n]);
    fprintf(out, "CIDEr-D    %.6f\nROUGE-L    %.6f\n", r->corpus.cider, r->corpus.rouge_l);
}

/* Lists on stderr up to WARN_LIST_MAX ids of entries [0, n) of f that
 * `pick` selects, after a message. */
static void warn_ids(const char *message, size_t count, const capfile *f, const unsigned char *pick)
{
    fprintf(stderr, "radcap score: %zu %s: ", count, message);
    size_t shown = 0;
    for (size_t i = 0; i < f->n_entries && shown < WARN_LIST_MAX; i++)
        if (pick[i])
            fprintf(stderr, "%s%s", shown++ ? ", " : "", f->entries[i].id);
    fprintf(stderr, "%s\n", count > shown ? ", ..." : "");
}

/* The texts handed to the metrics: tokenised copies, or the file's own
 * strings with --pretokenized (then nothing is allocated). */
static char *prepare(const char *text, int pretokenized, const ptb_options *opt, rc_error *err)
{
    if (pretokenized)
        return (char *)text;
    return ptb_tokenize(text, strlen(text), opt, err);
}

int cmd_score(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"candidates", required_argument, 0, 'c'}, {"references", required_argument, 0, 'r'},
        {"format", required_argument, 0, 'f'},     {"pretokenized", no_argument, 0, 'p'},
        {"drop-brackets", no_argument, 0, 'b'},    {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    const char *cand_path = NULL, *ref_path = NULL;
    capfile_format format = CAPFILE_AUTO;
    int pretokenized = 0, json = 0, opt;
    ptb_options tok_opt = {0};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case 'c': cand_path = optarg; break;
        case 'r': ref_path = optarg; break;
        case 'f':
            if (capfile_format_from_name(optarg, &format) < 0) {
                fprintf(stderr, "radcap score: invalid value '%s' for --format (expected tsv, jsonl, json or auto)\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'p': pretokenized = 1; break;
        case 'b': tok_opt.drop_brackets = 1; break;
        case 'j': json = 1; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "radcap score: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!cand_path || !ref_path) {
        fprintf(stderr, "radcap score: --candidates and --references are required\n%s", usage_text);
        return EXIT_USAGE;
    }
    if (pretokenized && tok_opt.drop_brackets) {
        fprintf(stderr, "radcap score: --drop-brackets applies to the tokenizer, which --pretokenized turns off\n");
        return EXIT_USAGE;
    }

    rc_error err = {{0}};
    int status = EXIT_OK;
    capfile *cands = NULL, *refs = NULL;
    metrics_item *items = NULL;
    char **texts = NULL; /* every text handed to the metrics, to free unless pretokenized */
    size_t n_texts = 0;
    unsigned char *unscored = NULL, *unused = NULL;
    metrics_result *result = NULL;

    if (!(cands = capfile_load(cand_path, format, &err)) || !(refs = capfile_load(ref_path, format, &err))) {
        status = EXIT_FATAL;
        goto done;
    }
    for (size_t i = 0; i < cands->n_entries; i++) {
        const capfile_entry *e = &cands->entries[i];
        if (e->n_captions != 1) {
            if (e->n_captions == 0)
                rc_fail(&err, "%s: image '%s' has no candidate caption", cand_path, e->id);
            else
                rc_fail(&err, "%s: image '%s' has %zu candidate captions (lines %ld and %ld...): one is expected",
                        cand_path, e->id, e->n_captions, e->lines[0], e->lines[1]);
            status = EXIT_FATAL;
            goto done;
        }
    }

    size_t n = cands->n_entries, total = n;
    items = calloc(n ? n : 1, sizeof *items);
    unscored = calloc(n ? n : 1, 1);
    unused = calloc(refs->n_entries ? refs->n_entries : 1, 1);
    if (!items || !unscored || !unused)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const capfile_entry *r = capfile_find(refs, cands->entries[i].id);
        total += r ? r->n_captions : 0;
    }
    texts = calloc(total ? total : 1, sizeof *texts);
    if (!texts)
        goto oom;
    /* items[i].references point into texts: fill texts first, in order. */
    for (size_t i = 0; i < n; i++) {
        const capfile_entry *r = capfile_find(refs, cands->entries[i].id);
        if (!(texts[n_texts] = prepare(cands->entries[i].captions[0], pretokenized, &tok_opt, &err)))
            goto fail;
        items[i].candidate = texts[n_texts++];
        items[i].references = (const char *const *)&texts[n_texts];
        items[i].n_references = r ? r->n_captions : 0;
        for (size_t k = 0; k < items[i].n_references; k++)
            if (!(texts[n_texts++] = prepare(r->captions[k], pretokenized, &tok_opt, &err)))
                goto fail;
    }
    if (!(result = metrics_compute(items, n, &err)))
        goto fail;

    if (json && print_json(stdout, result, cands) < 0) {
        rc_fail(&err, "out of memory");
        goto fail;
    } else if (!json)
        print_table(stdout, result, pretokenized, tok_opt.drop_brackets);
    if (fflush(stdout) == EOF || ferror(stdout)) {
        rc_fail(&err, "cannot write standard output");
        goto fail;
    }

    size_t n_unscored = 0, n_unused = 0;
    for (size_t i = 0; i < n; i++)
        if (!result->scored[i]) {
            unscored[i] = 1;
            n_unscored++;
        }
    for (size_t i = 0; i < refs->n_entries; i++)
        if (!capfile_find(cands, refs->entries[i].id)) {
            unused[i] = 1;
            n_unused++;
        }
    if (n_unscored) {
        warn_ids("candidate(s) without references, not scored", n_unscored, cands, unscored);
        status = EXIT_PARTIAL;
    }
    if (n_unused)
        warn_ids("reference id(s) without a candidate, ignored", n_unused, refs, unused);
    if (n == 0)
        fprintf(stderr, "radcap score: %s holds no candidate caption\n", cand_path);
    goto done;

oom:
    rc_fail(&err, "out of memory");
fail:
    status = EXIT_FATAL;
done:
    if (status == EXIT_FATAL)
        fprintf(stderr, "radcap score: %s\n", err.msg);
    if (!pretokenized)
        for (size_t k = 0; k < n_texts; k++)
            free(texts[k]);
    free(texts);
    free(items);
    free(unscored);
    free(unused);
    metrics_free(result);
    capfile_free(cands);
    capfile_free(refs);
    return status;
}
