/* radcap run: caption every image of a manifest into the results database,
 * as one process or as an MPI job (rank 0 dispatches, the others caption). */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gemm.h"
#include "io/image.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "pipeline/job.h"
#include "pipeline/version.h"
#include "pipeline/log.h"
#include "scheduler/master.h"
#include "scheduler/mpi.h"
#include "scheduler/progress.h"
#include "scheduler/signals.h"
#include "scheduler/worker_rank.h"

static const char usage_text[] =
    "usage: radcap run --manifest FILE --db FILE --checkpoint FILE --vocab FILE [OPTIONS]\n"
    "       radcap run --job FILE [OPTIONS]\n"
    "       mpirun -np N radcap run ...   (or srun)\n"
    "\n"
    "Captions every image of a manifest and stores the captions, token ids, confidence,\n"
    "per-image errors and timings in a SQLite results database. Started by mpirun or\n"
    "srun, rank 0 hands out chunks of images on demand and writes the database, and\n"
    "every other rank captions; otherwise one process does both. A run is resumable:\n"
    "started again with the same manifest, model, vocabulary and options that decide\n"
    "the captions, it continues the unfinished run in the database, captions only what\n"
    "is not done yet (failed images are tried again) and never stores an image twice.\n"
    "When the manifest has reference captions, BLEU-1..4, CIDEr-D and ROUGE-L are\n"
    "computed at the end and stored with the run (as `radcap eval` would).\n"
    "\n"
    "Job files: --job FILE reads the settings from a JSON object whose keys are the\n"
    "option names below with '_' for '-' (\"max_pixels\": 5000000, \"evaluate\": false);\n"
    "options on the command line override the file's values. Strings may use ${NAME}\n"
    "and ${NAME:-default} (environment variables); relative paths in a job file are\n"
    "relative to its folder. Unknown keys and wrong types are errors. The effective\n"
    "settings are stored with the run (runs.config_json). Presets: jobs/*.json.\n"
    "\n"
    "What to caption, and where:\n"
    "  --job FILE              read the settings from this job file first\n"
    "  --check                 check the settings and the files they name (model\n"
    "                          configuration, readable inputs, writable database), print\n"
    "                          the effective settings as JSON and exit (0, or 3 with the\n"
    "                          reason); nothing is run (for batch scripts, before srun)\n"
    "  --manifest FILE         the images: a ROCOv2 CSV (ID,Caption; images in the folder\n"
    "                          beside it), JSON Lines ({\"path\", \"id\", \"caption\"}), a\n"
    "                          list of paths, or a folder (walked recursively)\n"
    "  --manifest-kind KIND    auto (default), csv, jsonl, list or folder\n"
    "  --image-dir DIR         CSV manifests: the image folder (default: valid/ for\n"
    "                          valid_captions.csv, else the CSV's folder)\n"
    "  --db FILE               results database (created if missing)\n"
    "  --checkpoint FILE       model weights (torch.save state dict or .safetensors)\n"
    "  --vocab FILE            BERT vocabulary (vocab.txt)\n"
    "  --config FILE           model configuration JSON (default: the model card's)\n"
    "  --since-last            incremental run: caption only the images that are new or\n"
    "                          changed since they were last captioned in a completed run\n"
    "                          on this database; the others are left out of the new run\n"
    "                          (their earlier results stay; view latest_items has the\n"
    "                          newest caption of every image)\n"
    "  --change-detection M    with --since-last: stat (default: same size and\n"
    "                          modification time) or content (same SHA-256; every file\n"
    "                          is read and hashed, and the hashes are stored)\n"
    "  --new-run               start a new run even if an unfinished one could be resumed\n"
    "\n"
    "Computing:\n"
    "  --batch N               images encoded together, and the largest chunk a worker\n"
    "                          gets (default 8); greedy decoding keeps up to 2 x N\n"
    "                          captions in progress, taking in a chunk's images as\n"
    "                          others finish (beam search decodes a chunk at once)\n"
    "  --threads N             OpenMP threads of each captioning rank (default:\n"
    "                          OMP_NUM_THREADS, else the cores this rank may use, shared\n"
    "                          with the other captioning ranks of its node)\n"
    "  --max-pixels N          refuse larger images before decoding (default 100000000)\n"
    "  --exif-orientation      apply the EXIF orientation first (PIL does not by default)\n"
    "  --no-prefetch           preprocess each batch before computing it, not during the\n"
    "                          previous one\n"
    "  --max-errors N          stop the run (status failed, resumable) once more than N\n"
    "                          images have failed in this session (default -1: no limit),\n"
    "                          so that a broken archive mount does not fill the database\n"
    "                          with errors\n"
    "\n"
    "Decoding (default: greedy, as the model card):\n"
    "  --max-length N          generated tokens at most (default: the configuration's,\n"
    "                          80); --max-len is the same\n"
    "  --min-length N          no [SEP] before N generated tokens (default 0)\n"
    "  --beam K                beam search with K beams, 1..16 (default 1: greedy)\n"
    "  --length-penalty A      beam score = sum of log-probabilities / length^A\n"
    "                          (default 1.0, as Hugging Face)\n"
    "  --early-stopping        stop an image's search once K hypotheses are finished\n"
    "  --no-repeat-ngram N     no n-gram of N tokens occurs twice in a caption (0: off)\n"
    "  --repetition-penalty P  divide (multiply) the logit of an already generated token\n"
    "                          by P when positive (negative); 1.0 is off\n"
    "  --token-scores          also store every token's probability (items.token_probs)\n"
    "  --precision P           fp32 (default); bf16: the decoder's weights rounded to\n"
    "                          bfloat16 at load (half the memory traffic per token; the\n"
    "                          encoder stays fp32; captions may differ from fp32's where\n"
    "                          two tokens nearly tie); bf16-all: the encoder's too (faster\n"
    "                          only on the avx512bf16 matrix-product backend, chosen with\n"
    "                          RADCAP_GEMM=avx512bf16; captions differ more often)\n"
    "\n"
    "Scoring and logging:\n"
    "  --no-evaluate           do not score the run at the end (--no-score is the same);\n"
    "                          --evaluate turns it back on over a job file\n"
    "  --drop-brackets         score without the -lrb- -rrb- tokens pycocoevalcap keeps\n"
    "  --progress-interval S   seconds between progress lines when standard error is not a\n"
    "                          terminal (default 30; on a terminal one line is updated)\n"
    "  --log-level L           error, warning, info (default) or debug\n"
    "  --quiet                 log errors only (--log-level error)\n"
    "  --verbose               log every chunk and commit (--log-level debug)\n"
    "  --help                  show this help\n"
    "Every true/false option --X has its opposite --no-X (e.g. --no-since-last), to\n"
    "override a job file.\n"
    "\n"
    "Log lines (standard error) carry a UTC time stamp, the rank and a level. The\n"
    "summary at the end (standard output) gives the counts, the throughput, the run id\n"
    "and the database. SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 (on any rank) stop the run\n"
    "cleanly: no more work is handed out, the batches being computed are stored and the\n"
    "run is marked interrupted; a second signal of the same kind ends the process at\n"
    "once (committed results are kept). Run the same command again to continue.\n"
    "Under mpirun, signal mpirun with SIGUSR1 or SIGUSR2, which it forwards to every\n"
    "rank: Open MPI's mpirun answers SIGTERM and SIGINT by killing the ranks after 1 s\n"
    "(its odls_base_sigkill_timeout), too soon for a clean stop. srun and Slurm signal\n"
    "every rank directly, which works with any of the four signals.\n"
    "\n"
    "Exit status: 0 every image captioned, 1 the run completed but some images failed\n"
    "(their errors are in the database), 2 usage error, 3 the run could not be done\n"
    "(job file, manifest, model, vocabulary, configuration or database unusable, too\n"
    "many failed images, or a rank failed), 4 interrupted by a signal (resumable).\n";

/* Options that are not settings of job.h. */
enum {
    OPT_JOB = 1000,
    OPT_CHECK,
    OPT_HELP,
    OPT_QUIET,
    OPT_VERBOSE,
    OPT_NO_SCORE, /* old name of --no-evaluate */
    OPT_MAX_LEN,  /* old name of --max-length */
    OPT_NEGATED,  /* OPT_NEGATED + key: --no-KEY of a true/false setting */
};

/* One setting given on the command line, applied after the job file. */
typedef struct cli_setting {
    int key;          // job_key_id
    const char *text; // the option's argument, NULL for true/false options
    int flag;         // true/false options: the value
} cli_setting;

/* Parses the options and reads the job file; 0 with s filled, or an exit
 * status (help or usage error, EXIT_FATAL for a bad job file). */
static int parse(int argc, char **argv, job_settings *s, int *check_only)
{
    enum { MAX_OPTIONS = 2 * JK_COUNT + 8 };
    struct option long_options[MAX_OPTIONS];
    char names[2 * JK_COUNT][72];
    int n = 0;
    for (int k = 0; k < JK_COUNT; k++) {
        job_option_name((job_key_id)k, names[2 * k]);
        long_options[n++] = (struct option){names[2 * k], job_keys[k].type == JOB_BOOL ? no_argument : required_argument,
                                            0, k};
        if (job_keys[k].type == JOB_BOOL) {
            char plain[64];
            job_option_name((job_key_id)k, plain);
            snprintf(names[2 * k + 1], sizeof names[0], "no-%s", plain);
            long_options[n++] = (struct option){names[2 * k + 1], no_argument, 0, OPT_NEGATED + k};
        }
    }
    long_options[n++] = (struct option){"job", required_argument, 0, OPT_JOB};
    long_options[n++] = (struct option){"check", no_argument, 0, OPT_CHECK};
    long_options[n++] = (struct option){"help", no_argument, 0, OPT_HELP};
    long_options[n++] = (struct option){"quiet", no_argument, 0, OPT_QUIET};
    long_options[n++] = (struct option){"verbose", no_argument, 0, OPT_VERBOSE};
    long_options[n++] = (struct option){"no-score", no_argument, 0, OPT_NO_SCORE};
    long_options[n++] = (struct option){"max-len", required_argument, 0, OPT_MAX_LEN};
    long_options[n++] = (struct option){0, 0, 0, 0};

    cli_setting *given = calloc((size_t)argc + 1, sizeof *given);
    if (!given) {
        fprintf(stderr, "radcap run: out of memory\n");
        return EXIT_FATAL;
    }
    unsigned char overridden[JK_COUNT] = {0};
    const char *job_path = NULL;
    int n_given = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        cli_setting c = {.key = -1};
        if (opt >= 0 && opt < JK_COUNT)
            c = (cli_setting){opt, job_keys[opt].type == JOB_BOOL ? NULL : optarg, 1};
        else if (opt >= OPT_NEGATED && opt < OPT_NEGATED + JK_COUNT)
            c = (cli_setting){opt - OPT_NEGATED, NULL, 0};
        else if (opt == OPT_NO_SCORE)
            c = (cli_setting){JK_EVALUATE, NULL, 0};
        else if (opt == OPT_MAX_LEN)
            c = (cli_setting){JK_MAX_LENGTH, optarg, 1};
        else if (opt == OPT_QUIET)
            c = (cli_setting){JK_LOG_LEVEL, "error", 1};
        else if (opt == OPT_VERBOSE)
            c = (cli_setting){JK_LOG_LEVEL, "debug", 1};
        else if (opt == OPT_JOB)
            job_path = optarg;
        else if (opt == OPT_CHECK)
            *check_only = 1;
        else if (opt == OPT_HELP) {
            free(given);
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else {
            free(given);
            fputs(usage_text, stderr);
            return EXIT_USAGE;
        }
        if (c.key >= 0) {
            given[n_given++] = c;
            overridden[c.key] = 1;
        }
    }
    int status = -1;
    rc_error err = {{0}};
    if (optind < argc) {
        fprintf(stderr, "radcap run: unexpected argument '%s'\n", argv[optind]);
        status = EXIT_USAGE;
    } else if (job_path && job_load_file(s, job_path, overridden, &err) < 0) {
        fprintf(stderr, "radcap run: %s\n", err.msg);
        status = EXIT_FATAL;
    }
    for (int i = 0; i < n_given && status < 0; i++) {
        const cli_setting *c = &given[i];
        int bad = job_keys[c->key].type == JOB_BOOL
                      ? job_set(s, (job_key_id)c->key, &(job_value){.flag = c->flag}, &err)
                      : job_set_option(s, (job_key_id)c->key, c->text, &err);
        if (bad < 0) {
            fprintf(stderr, "radcap run: %s\n", err.msg);
            status = EXIT_USAGE;
        }
    }
    free(given);
    if (status >= 0)
        return status;
    const sched_run_options *o = &s->run;
    if (!o->manifest || !o->db || !o->checkpoint || !o->vocab) {
        fprintf(stderr, "radcap run: the manifest, db, checkpoint and vocab settings are required (options "
                        "--manifest, --db, --checkpoint, --vocab, or the keys of a --job file); missing:%s%s%s%s\n",
                o->manifest ? "" : " manifest", o->db ? "" : " db", o->checkpoint ? "" : " checkpoint",
                o->vocab ? "" : " vocab");
        return job_path ? EXIT_FATAL : EXIT_USAGE;
    }
    if (gen_decoding_check(&o->decoding, &err) < 0) {
        fprintf(stderr, "radcap run: %s\n", err.msg);
        return EXIT_USAGE;
    }
    return -1;
}

/* The model configuration in force: the card's or --config's, with
 * max_length applied. */
static int model_config(const job_settings *c, cfg_model *cfg, rc_error *err)
{
    cfg_default(cfg);
    if (c->config_path && cfg_load(cfg, c->config_path, err) < 0)
        return -1;
    if (c->max_length > cfg->max_positions)
        return rc_fail(err, "max_length %d exceeds the model's %d positions", c->max_length, cfg->max_positions);
    if (c->max_length > 0)
        cfg->max_len = c->max_length;
    return 0;
}

/* --check: the settings and the files they name, without running: the
 * model configuration loads, the inputs are readable and the database can
 * be written. Prints the effective settings; returns the exit status. */
static int check_settings(const job_settings *c)
{
    rc_error err = {{0}};
    cfg_model cfg;
    int failed = model_config(c, &cfg, &err) < 0;
    const sched_run_options *o = &c->run;
    const struct {
        const char *key, *path;
    } inputs[] = {{"manifest", o->manifest}, {"image_dir", o->image_dir}, {"checkpoint", o->checkpoint},
                  {"vocab", o->vocab}};
    for (size_t i = 0; !failed && i < sizeof inputs / sizeof inputs[0]; i++)
        if (inputs[i].path && access(inputs[i].path, R_OK) != 0)
            failed = rc_fail(&err, "%s %s: %s", inputs[i].key, inputs[i].path, strerror(errno)) < 0;
    if (!failed) {
        char *db_dir = strdup(o->db);
        const char *folder = db_dir ? dirname(db_dir) : ".";
        if (access(o->db, F_OK) == 0 ? access(o->db, R_OK | W_OK) != 0 : access(folder, W_OK | X_OK) != 0)
            failed = rc_fail(&err, "db %s: cannot be written (%s)", o->db, strerror(errno)) < 0;
        free(db_dir);
    }
    if (failed) {
        fprintf(stderr, "radcap run: %s\n", err.msg);
        return EXIT_FATAL;
    }
    cJSON *settings = job_settings_json(c);
    char *text = settings ? cJSON_Print(settings) : NULL;
    cJSON_Delete(settings);
    if (!text) {
        fprintf(stderr, "radcap run: out of memory\n");
        return EXIT_FATAL;
    }
    printf("%s\n", text);
    free(text);
    return EXIT_OK;
}

/* OpenMP threads of a captioning rank: OMP_NUM_THREADS if set, else the
 * cores this rank may run on, shared with the node's other captioning
 * ranks when they may run on the same cores (an unbound launch). */
static int default_threads(int node_workers)
{
    const char *env = getenv("OMP_NUM_THREADS");
    int n;
    if (env && sscanf(env, "%d", &n) == 1 && n > 0)
        return n;
    cpu_set_t set;
    int given = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    long share = online > 0 && node_workers > 0 ? online / node_workers : given;
    n = given < share ? given : (int)share;
    return n > 0 ? n : 1;
}

static void print_summary(const job_settings *c, const sched_run_outcome *out, int threads)
{
    const sched_run_options *o = &c->run;
    if (out->end == SCHED_RUN_INTERRUPTED)
        printf("run %lld interrupted: %lld of %lld images done; run the same command again to continue\n",
               (long long)out->run_id, (long long)(out->n_ok + out->n_error), (long long)out->n_total);
    else if (c->run.since_last)
        printf("incremental run %lld completed: %lld images in the manifest, %lld unchanged since an earlier run "
               "(left out), %lld captioned, %lld failed\n",
               (long long)out->run_id, (long long)out->n_total, (long long)out->n_unchanged, (long long)out->n_ok,
               (long long)out->n_error);
    else
        printf("run %lld completed: %lld images, %lld captioned, %lld failed\n", (long long)out->run_id,
               (long long)out->n_total, (long long)out->n_ok, (long long)out->n_error);
    char elapsed[32];
    sched_format_duration(out->seconds, elapsed, sizeof elapsed);
    printf("this session: %lld images in %s (%.1f images/s) on %d %s x %d thread%s%s", (long long)out->session_done,
           elapsed, out->seconds > 0 ? (double)out->session_done / out->seconds : 0.0, out->n_workers,
           out->n_ranks > 1 ? (out->n_workers == 1 ? "worker rank" : "worker ranks") : "process", threads,
           threads == 1 ? "" : "s", out->n_ranks > 1 ? " and a dispatching master" : "");
    if (out->n_skipped)
        printf(", %lld done before", (long long)out->n_skipped);
    if (out->n_ranks > 1 && out->seconds > 0)
        printf("; the master used %.2f s of CPU (%.1f%% of a core)", out->master_cpu_seconds,
               100.0 * out->master_cpu_seconds / out->seconds);
    printf("\nresults: %s, run %lld (radcap export --db %s --run %lld --format jsonl)\n", o->db,
           (long long)out->run_id, o->db, (long long)out->run_id);
    if (out->scored && out->scores.result->n_scored == 0) {
        printf("scores: no captioned image with reference captions in this run\n");
    } else if (out->scored) {
        const metrics_result *r = out->scores.result;
        printf("scores over %zu images: BLEU-1 %.4f, BLEU-2 %.4f, BLEU-3 %.4f, BLEU-4 %.4f, CIDEr-D %.4f, "
               "ROUGE-L %.4f\n",
               r->n_scored, r->corpus.bleu[0], r->corpus.bleu[1], r->corpus.bleu[2], r->corpus.bleu[3],
               r->corpus.cider, r->corpus.rouge_l);
    }
    fflush(stdout);
}

/* The master's part; returns the exit status. */
static int run_master(job_settings *c, int n_ranks, char **hosts, rc_log *log, int worker_threads, int *abort_job)
{
    rc_error err = {{0}};
    sched_run_outcome out;
    c->run.threads = worker_threads;
    int status = sched_master_run(&c->run, n_ranks, hosts, log, &out, &err);
    *abort_job = out.abort_job;
    if (status < 0) {
        log_msg(log, LOG_ERROR, "%s", err.msg);
        if (out.run_id)
            log_msg(log, LOG_ERROR, "run %lld is marked failed; once the cause is fixed, the same command "
                                    "continues it",
                    (long long)out.run_id);
        sched_scores_free(&out.scores);
        return EXIT_FATAL;
    }
    print_summary(c, &out, worker_threads);
    sched_scores_free(&out.scores);
    if (out.end == SCHED_RUN_INTERRUPTED)
        return EXIT_INTERRUPTED;
    return out.n_error > 0 ? EXIT_PARTIAL : EXIT_OK;
}

/* A worker whose model failed to load waits for the master to end the
 * job (so that the master's message is the one the user reads), and ends
 * it itself if that does not happen. */
static void await_abort(void)
{
    for (int i = 0; i < 20000; i++)
        sched_mpi_pause();
    sched_mpi_abort(EXIT_FATAL);
}

int cmd_run(int argc, char **argv)
{
    job_settings c;
    job_settings_init(&c);
    int check_only = 0;
    int status = parse(argc, argv, &c, &check_only);
    if (status < 0 && check_only)
        status = check_settings(&c);
    if (status >= 0) {
        job_settings_free(&c);
        return status;
    }

    rc_error err = {{0}};
    int rank = 0, n_ranks = 1, node_workers = 1;
    const int use_mpi = sched_mpi_launched();
    if (use_mpi && sched_mpi_init(&argc, &argv, &rank, &n_ranks, &err) < 0) {
        fprintf(stderr, "radcap run: %s\n", err.msg);
        job_settings_free(&c);
        return EXIT_FATAL;
    }
    rc_log log;
    log_init(&log, stderr, rank, c.level, rank == 0 && isatty(STDERR_FILENO));
    char **hosts = NULL;
    if (use_mpi && (sched_mpi_gather_hosts(rank, n_ranks, &hosts, &err) < 0 ||
                    (n_ranks > 1 && sched_mpi_node_workers(rank, &node_workers, &err) < 0))) {
        log_msg(&log, LOG_ERROR, "%s", err.msg);
        sched_mpi_abort(EXIT_FATAL);
        return EXIT_FATAL;
    }
    const int is_master = rank == 0, computes = n_ranks == 1 || rank > 0;
    const int threads = c.run.threads ? c.run.threads : default_threads(node_workers);
    omp_set_num_threads(computes ? threads : 1);
    gemm_init();

    c.run.config_path = c.config_path;
    int failed = model_config(&c, &c.run.cfg, &err) < 0;
    char *settings_text = NULL;
    if (!failed && is_master) {
        cJSON *settings = job_settings_json(&c);
        settings_text = settings ? cJSON_PrintUnformatted(settings) : NULL;
        cJSON_Delete(settings);
        c.run.settings_json = settings_text;
        c.run.program_version = radcap_version;
        if (!settings_text)
            failed = rc_fail(&err, "out of memory describing the settings") < 0;
    }
    if (!failed && computes)
        failed = img_system_init(argv[0], &err) < 0;
    if (!failed && sched_signals_install() < 0)
        failed = rc_fail(&err, "cannot install the signal handlers") < 0;
    if (failed) {
        log_msg(&log, LOG_ERROR, "%s", err.msg);
        if (use_mpi)
            sched_mpi_abort(EXIT_FATAL);
        free(settings_text);
        job_settings_free(&c);
        return EXIT_FATAL;
    }

    int abort_job = 0;
    if (is_master) {
        status = run_master(&c, n_ranks, hosts, &log, threads, &abort_job);
    } else {
        sched_worker_options wo = {
            .checkpoint = c.run.checkpoint,
            .vocab = c.run.vocab,
            .cfg = c.run.cfg,
            .batch = c.run.batch,
            .rank = rank,
            .prefetch = c.run.prefetch,
            .decoding = c.run.decoding,
            .precision = c.run.precision,
        };
        sched_image_options(&c.run.cfg, c.run.max_pixels, c.run.exif_orientation, &wo.img);
        log_msg(&log, LOG_DEBUG, "worker with %d OpenMP thread%s", threads, threads == 1 ? "" : "s");
        if (sched_worker_rank(&wo, &log, &err) < 0) {
            log_msg(&log, LOG_ERROR, "%s", err.msg);
            await_abort();
        }
        status = EXIT_OK;
    }
    for (int i = 0; hosts && i < n_ranks; i++)
        free(hosts[i]);
    free(hosts);
    if (computes)
        img_system_shutdown();
    if (use_mpi) {
        if (abort_job) {
            log_msg(&log, LOG_ERROR, "ending the MPI job");
            sched_mpi_abort(status);
        }
        if (sched_mpi_finalize(&err) < 0)
            log_msg(&log, LOG_ERROR, "%s", err.msg);
    }
    free(settings_text);
    job_settings_free(&c);
    return status;
}
