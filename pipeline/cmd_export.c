/* cmd_export.c: `radcap export`, one record per image of a stored run, as
 * CSV (RFC 4180) or JSON Lines, for other tools. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/csv.h"
#include "io/store.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static const char usage_text[] =
    "usage: radcap export --db FILE [--run ID] --format csv|jsonl [--out FILE]\n"
    "\n"
    "Writes one record per image of a run stored in a results database, in\n"
    "manifest order: id, path, status (ok or error), caption, error,\n"
    "mean_logprob, min_token_prob, then one field per metric of the run's\n"
    "per-image scores (e.g. bleu_1 ... rouge_l), in name order.\n"
    "\n"
    "  --db FILE        results database written by radcap run (opened read-only)\n"
    "  --run ID         the run to export (default: the latest run)\n"
    "  --format FORMAT  csv: a header line, then RFC 4180 records ending in CRLF\n"
    "                   (fields with commas, quotes or line breaks are quoted,\n"
    "                   quotes doubled; empty fields for missing values);\n"
    "                   jsonl: one JSON object per line; id, path, status,\n"
    "                   caption and error always present (null when missing),\n"
    "                   confidence and score keys only when the image has them\n"
    "  --out FILE       write to FILE (replaced once complete) instead of\n"
    "                   standard output\n"
    "  --help           show this help\n"
    "\n"
    "Exit status: 0 on success, 2 on a usage error, 3 when the database or the\n"
    "run cannot be read or the output cannot be written.\n";

typedef enum { FORMAT_CSV, FORMAT_JSONL } export_format;

typedef struct exporter {
    FILE *out;
    export_format format;
    char **metrics; // (n_metrics) the run's metric names, sorted: the CSV columns
    int n_metrics;
    int write_failed; // 1 after a write error (or out of memory building JSON)
} exporter;

/* The shortest of %.15g / %.17g that reads back as the same double, as
 * cJSON prints numbers, so CSV and JSON Lines agree. */
static void format_double(double value, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.15g", value);
    if (strtod(buf, NULL) != value)
        snprintf(buf, cap, "%.17g", value);
}

static void csv_text(exporter *ex, const char *text, int last)
{
    if (text && csv_write_field(ex->out, text, strlen(text)) < 0)
        ex->write_failed = 1;
    if (fputs(last ? "\r\n" : ",", ex->out) == EOF)
        ex->write_failed = 1;
}

static void csv_number(exporter *ex, double value, int last)
{
    char number[40] = "";
    if (!isnan(value))
        format_double(value, number, sizeof number);
    csv_text(ex, number, last);
}

static int write_csv_row(exporter *ex, const store_item_row *row)
{
    csv_text(ex, row->image_id, 0);
    csv_text(ex, row->path, 0);
    csv_text(ex, row->ok ? "ok" : "error", 0);
    csv_text(ex, row->caption, 0);
    csv_text(ex, row->error, 0);
    csv_number(ex, row->mean_logprob, 0);
    csv_number(ex, row->min_token_prob, ex->n_metrics == 0);
    /* Both lists are sorted by name: one merge pass fills the columns. */
    int k = 0;
    for (int m = 0; m < ex->n_metrics; m++) {
        while (k < row->n_scores && strcmp(row->scores[k].metric, ex->metrics[m]) < 0)
            k++;
        int found = k < row->n_scores && strcmp(row->scores[k].metric, ex->metrics[m]) == 0;
        csv_number(ex, found ? row->scores[k].value : NAN, m == ex->n_metrics - 1);
    }
    return 0;
}

static int json_add_text(cJSON *obj, const char *key, const char *text)
{
    return (text ? cJSON_AddStringToObject(obj, key, text) : cJSON_AddNullToObject(obj, key)) != NULL;
}

static int write_jsonl_row(exporter *ex, const store_item_row *row)
{
    cJSON *obj = cJSON_CreateObject();
    int ok = obj && json_add_text(obj, "id", row->image_id) && json_add_text(obj, "path", row->path) &&
             json_add_text(obj, "status", row->ok ? "ok" : "error") && json_add_text(obj, "caption", row->caption) &&
             json_add_text(obj, "error", row->error);
    if (ok && !isnan(row->mean_logprob))
        ok = cJSON_AddNumberToObject(obj, "mean_logprob", row->mean_logprob) != NULL;
    if (ok && !isnan(row->min_token_prob))
        ok = cJSON_AddNumberToObject(obj, "min_token_prob", row->min_token_prob) != NULL;
    for (int k = 0; ok && k < row->n_scores; k++)
        ok = (isnan(row->scores[k].value) ? cJSON_AddNullToObject(obj, row->scores[k].metric)
                                          : cJSON_AddNumberToObject(obj, row->scores[k].metric,
                                                                    row->scores[k].value)) != NULL;
    char *text = ok ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text || fputs(text, ex->out) == EOF || putc('\n', ex->out) == EOF)
        ex->write_failed = 1;
    free(text);
    return 0;
}

static int write_row(void *user, const store_item_row *row)
{
    exporter *ex = user;
    if (ex->format == FORMAT_CSV)
        write_csv_row(ex, row);
    else
        write_jsonl_row(ex, row);
    return ex->write_failed ? 1 : 0; /* stop at the first write error */
}

static void write_csv_header(exporter *ex)
{
    static const char *const fixed[] = {"id", "path", "status", "caption", "error", "mean_logprob", "min_token_prob"};
    int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    for (int i = 0; i < n_fixed; i++)
        csv_text(ex, fixed[i], i == n_fixed - 1 && ex->n_metrics == 0);
    for (int m = 0; m < ex->n_metrics; m++)
        csv_text(ex, ex->metrics[m], m == ex->n_metrics - 1);
}

int cmd_export(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"db", required_argument, 0, 'd'},  {"run", required_argument, 0, 'r'},
        {"format", required_argument, 0, 'f'}, {"out", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},      {0, 0, 0, 0},
    };
    const char *db_path = NULL, *format_text = NULL, *out_path = NULL;
    long long run_arg = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'd': db_path = optarg; break;
        case 'r': bad = cli_parse_ll(optarg, 1, INT64_MAX, &run_arg); break;
        case 'f': format_text = optarg; break;
        case 'o': out_path = optarg; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "radcap export: invalid value '%s' for --%s\n", optarg, cli_option_name(long_options, opt));
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "radcap export: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!db_path || !format_text) {
        fprintf(stderr, "radcap export: --db and --format are required\n%s", usage_text);
        return EXIT_USAGE;
    }
    exporter ex = {0};
    if (strcmp(format_text, "csv") == 0) {
        ex.format = FORMAT_CSV;
    } else if (strcmp(format_text, "jsonl") == 0) {
        ex.format = FORMAT_JSONL;
    } else {
        fprintf(stderr, "radcap export: unknown format '%s' (expected csv or jsonl)\n", format_text);
        return EXIT_USAGE;
    }

    rc_error err = {{0}};
    store *db = NULL;
    if (store_open(db_path, STORE_READ_ONLY, &db, &err) < 0) {
        fprintf(stderr, "radcap export: %s\n", err.msg);
        return EXIT_FATAL;
    }
    int status = EXIT_OK;
    store_run_summary summary;
    int64_t run_id = run_arg;
    if (!run_id && store_latest_run(db, &run_id, &err) < 0)
        status = EXIT_FATAL;
    else if (!run_id)
        status = (rc_fail(&err, "results database %s holds no runs", db_path), EXIT_FATAL);
    else if (store_run_get(db, run_id, &summary, &err) < 0 ||
             store_run_metric_names(db, run_id, &ex.metrics, &ex.n_metrics, &err) < 0)
        status = EXIT_FATAL;

    char *tmp_path = NULL;
    if (status == EXIT_OK) {
        if (out_path) {
            size_t cap = strlen(out_path) + 16;
            tmp_path = malloc(cap);
            if (tmp_path)
                snprintf(tmp_path, cap, "%s.partial", out_path);
            ex.out = tmp_path ? fopen(tmp_path, "wb") : NULL;
            if (!ex.out)
                status = (rc_fail(&err, "cannot write %s: %s", tmp_path ? tmp_path : out_path, strerror(errno)),
                          EXIT_FATAL);
        } else {
            ex.out = stdout;
        }
    }
    if (status == EXIT_OK) {
        if (ex.format == FORMAT_CSV)
            write_csv_header(&ex);
        int rc = ex.write_failed ? 1 : store_foreach_item(db, run_id, 1, write_row, &ex, &err);
        if (rc < 0)
            status = EXIT_FATAL;
        else if (ex.write_failed || fflush(ex.out) == EOF || ferror(ex.out))
            status = (rc_fail(&err, "cannot write %s: %s", out_path ? out_path : "standard output", strerror(errno)),
                      EXIT_FATAL);
    }
    if (out_path && ex.out) {
        if (fclose(ex.out) != 0 && status == EXIT_OK)
            status = (rc_fail(&err, "cannot write %s: %s", tmp_path, strerror(errno)), EXIT_FATAL);
        if (status == EXIT_OK && rename(tmp_path, out_path) != 0)
            status = (rc_fail(&err, "cannot rename %s to %s: %s", tmp_path, out_path, strerror(errno)), EXIT_FATAL);
        if (status != EXIT_OK)
            remove(tmp_path);
    }
    free(tmp_path);
    store_free_names(ex.metrics, ex.n_metrics);
    rc_error close_err;
    if (store_close(db, &close_err) < 0 && status == EXIT_OK)
        status = (rc_fail(&err, "%s", close_err.msg), EXIT_FATAL);
    if (status != EXIT_OK)
        fprintf(stderr, "radcap export: %s\n", err.msg);
    return status;
}
