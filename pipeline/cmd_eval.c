/* radcap eval: score a run stored in a results database against its
 * reference captions, store the scores, print them. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "io/store.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/perplexity.h"
#include "scheduler/scoring.h"

static const char usage_text[] =
    "usage: radcap eval --db FILE [--run ID] [--json] [--drop-brackets]\n"
    "       radcap eval --perplexity --manifest FILE --checkpoint FILE --vocab FILE ...\n"
    "                   (teacher-forced cross-entropy; see radcap eval --perplexity --help)\n"
    "\n"
    "Scores the captions of a run stored by `radcap run` against the run's reference\n"
    "captions (the manifest's ground truth, stored with the run) with BLEU-1..4,\n"
    "CIDEr-D and ROUGE-L as the COCO caption evaluation code (pycocoevalcap)\n"
    "computes them, after its PTB tokenisation, and stores the per-image and corpus\n"
    "scores and the tokenised texts in the database again (replacing earlier ones).\n"
    "The corpus is the run's captioned images that have references: images whose\n"
    "captioning failed and images without references are not scored. A run that is\n"
    "not complete can be scored: its captioned images are.\n"
    "\n"
    "  --db FILE         results database\n"
    "  --run ID          the run to score (default: the latest run)\n"
    "  --json            print one JSON object instead of a table, as `radcap score\n"
    "                    --json` does: {\"bleu\": [b1, b2, b3, b4], \"cider\": x,\n"
    "                    \"rouge_l\": x, \"per_image\": {\"ID\": {...}, ...}} with every\n"
    "                    number in full double precision\n"
    "  --drop-brackets   remove the -lrb- -rrb- -lcb- -rcb- tokens the reference\n"
    "                    tokenisation keeps (not pycocoevalcap's behaviour)\n"
    "  --help            show this help\n"
    "\n"
    "Exit status: 0 on success, 1 when images with references have no caption (their\n"
    "captioning failed), 2 on a usage error, 3 when the database or the run cannot be\n"
    "read or written, or the run has no reference captions.\n";

int cmd_eval(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--perplexity") == 0)
            return eval_perplexity(argc, argv);
    static const struct option long_options[] = {
        {"db", required_argument, 0, 'd'},   {"run", required_argument, 0, 'r'},
        {"json", no_argument, 0, 'j'},       {"drop-brackets", no_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0},
    };
    const char *db_path = NULL;
    long long run_arg = 0;
    int json = 0, opt;
    ptb_options tok = {0};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case 'd': db_path = optarg; break;
        case 'r':
            if (cli_parse_ll(optarg, 1, INT64_MAX, &run_arg) < 0) {
                fprintf(stderr, "radcap eval: invalid value '%s' for --run\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'j': json = 1; break;
        case 'b': tok.drop_brackets = 1; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "radcap eval: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!db_path) {
        fprintf(stderr, "radcap eval: --db is required\n%s", usage_text);
        return EXIT_USAGE;
    }

    rc_error err = {{0}};
    store *db = NULL;
    sched_scores scores = {0};
    int64_t run_id = run_arg;
    store_run_summary summary;
    int status = EXIT_OK;
    if (store_open(db_path, STORE_NO_CREATE, &db, &err) < 0 || (!run_id && store_latest_run(db, &run_id, &err) < 0)) {
        status = EXIT_FATAL;
    } else if (!run_id) {
        rc_fail(&err, "results database %s holds no runs", db_path);
        status = EXIT_FATAL;
    } else if (store_run_get(db, run_id, &summary, &err) < 0 || sched_score_run(db, run_id, &tok, &scores, &err) < 0) {
        status = EXIT_FATAL;
    } else if (!scores.result) {
        rc_fail(&err, "run %lld of %s has no reference captions: nothing to score", (long long)run_id, db_path);
        status = EXIT_FATAL;
    }
    if (status == EXIT_OK) {
        if (json) {
            sched_scores_write_json(stdout, &scores);
        } else {
            printf("run %lld (%s) of %s\n", (long long)run_id, store_run_status_name(summary.status), db_path);
            sched_scores_write_table(stdout, &scores);
        }
        if (fflush(stdout) == EOF || ferror(stdout)) {
            rc_fail(&err, "cannot write standard output");
            status = EXIT_FATAL;
        } else if (scores.n_failed_with_refs) {
            fprintf(stderr, "radcap eval: %zu image(s) with references have no caption (captioning failed): "
                            "not scored\n",
                    scores.n_failed_with_refs);
            status = EXIT_PARTIAL;
        }
    }
    if (status == EXIT_FATAL)
        fprintf(stderr, "radcap eval: %s\n", err.msg);
    sched_scores_free(&scores);
    rc_error ignored;
    store_close(db, &ignored);
    return status;
}
