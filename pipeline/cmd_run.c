/* radcap run: caption every image of a manifest into the results database,
 * as one process or as an MPI job (rank 0 dispatches, the others caption). */
#include <getopt.h>
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
#include "pipeline/log.h"
#include "scheduler/master.h"
#include "scheduler/mpi.h"
#include "scheduler/progress.h"
#include "scheduler/signals.h"
#include "scheduler/worker_rank.h"

static const char usage_text[] =
    "usage: radcap run --manifest FILE --db FILE --checkpoint FILE --vocab FILE [OPTIONS]\n"
    "       mpirun -np N radcap run ...   (or srun)\n"
    "\n"
    "Captions every image of a manifest and stores the captions, token ids, per-image\n"
    "errors and timings in a SQLite results database. Started by mpirun or srun, rank 0\n"
    "hands out chunks of images on demand and writes the database, and every other rank\n"
    "captions; otherwise one process does both. A run is resumable: started again with\n"
    "the same manifest, model, vocabulary and options that decide the captions, it\n"
    "continues the unfinished run in the database, captions only what is not done yet\n"
    "(failed images are tried again) and never stores an image twice. When the\n"
    "manifest has reference captions, BLEU-1..4, CIDEr-D and ROUGE-L are computed at the\n"
    "end and stored with the run (as `radcap eval` would).\n"
    "\n"
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
    "  --batch N               images captioned together, and the largest chunk a\n"
    "                          worker gets (default 8)\n"
    "  --threads N             OpenMP threads of each captioning rank (default:\n"
    "                          OMP_NUM_THREADS, else the cores this rank may use, shared\n"
    "                          with the other captioning ranks of its node)\n"
    "  --max-len N             generated tokens at most (default: the configuration's, 80)\n"
    "  --max-pixels N          refuse larger images before decoding (default 100000000)\n"
    "  --exif-orientation      apply the EXIF orientation first (PIL does not by default)\n"
    "  --new-run               start a new run even if an unfinished one could be resumed\n"
    "  --no-score              do not score the run at the end\n"
    "  --drop-brackets         score without the -lrb- -rrb- tokens pycocoevalcap keeps\n"
    "  --no-prefetch           preprocess each batch before computing it, not during the\n"
    "                          previous one\n"
    "  --progress-interval S   seconds between progress lines when standard error is not a\n"
    "                          terminal (default 30; on a terminal one line is updated)\n"
    "  --quiet                 log errors only\n"
    "  --verbose               log every chunk and commit\n"
    "  --help                  show this help\n"
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
    "(manifest, model, vocabulary, configuration or database unusable, or a rank\n"
    "failed), 4 interrupted by a signal (resumable).\n";

typedef struct run_cli {
    sched_run_options run;
    const char *config_path;
    int max_len;
    log_level level;
} run_cli;

/* 0 with the options parsed, or an exit status (help or usage error). */
static int parse(int argc, char **argv, run_cli *c)
{
    static const struct option long_options[] = {
        {"manifest", required_argument, 0, 'm'},
        {"manifest-kind", required_argument, 0, 'K'},
        {"image-dir", required_argument, 0, 'I'},
        {"db", required_argument, 0, 'd'},
        {"checkpoint", required_argument, 0, 'k'},
        {"vocab", required_argument, 0, 'v'},
        {"config", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'},
        {"max-len", required_argument, 0, 'l'},
        {"max-pixels", required_argument, 0, 'p'},
        {"exif-orientation", no_argument, 0, 'e'},
        {"new-run", no_argument, 0, 'n'},
        {"no-score", no_argument, 0, 'S'},
        {"drop-brackets", no_argument, 0, 'B'},
        {"no-prefetch", no_argument, 0, 'P'},
        {"progress-interval", required_argument, 0, 'i'},
        {"quiet", no_argument, 0, 'q'},
        {"verbose", no_argument, 0, 'V'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    sched_run_options *o = &c->run;
    int opt, interval = 30;
    rc_error err;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'm': o->manifest = optarg; break;
        case 'K': bad = manifest_kind_parse(optarg, &o->manifest_kind, &err); break;
        case 'I': o->image_dir = optarg; break;
        case 'd': o->db = optarg; break;
        case 'k': o->checkpoint = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'c': c->config_path = optarg; break;
        case 'b': bad = cli_parse_int(optarg, 1, 4096, &o->batch); break;
        case 't': bad = cli_parse_int(optarg, 1, 4096, &o->threads); break;
        case 'l': bad = cli_parse_int(optarg, 1, 1 << 20, &c->max_len); break;
        case 'p': bad = cli_parse_ll(optarg, 1, (long long)1 << 50, &o->max_pixels); break;
        case 'e': o->exif_orientation = 1; break;
        case 'n': o->new_run = 1; break;
        case 'S': o->score = 0; break;
        case 'B': o->ptb.drop_brackets = 1; break;
        case 'P': o->prefetch = 0; break;
        case 'i': bad = cli_parse_int(optarg, 1, 86400, &interval); break;
        case 'q': c->level = LOG_ERROR; break;
        case 'V': c->level = LOG_DEBUG; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "radcap run: invalid value '%s' for --%s\n", optarg, cli_option_name(long_options, opt));
            return EXIT_USAGE;
        }
    }
    o->progress_seconds = interval;
    if (optind < argc) {
        fprintf(stderr, "radcap run: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->manifest || !o->db || !o->checkpoint || !o->vocab) {
        fprintf(stderr, "radcap run: --manifest, --db, --checkpoint and --vocab are required\n%s", usage_text);
        return EXIT_USAGE;
    }
    return -1;
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

static void print_summary(const run_cli *c, const sched_run_outcome *out, int threads)
{
    const sched_run_options *o = &c->run;
    if (out->end == SCHED_RUN_INTERRUPTED)
        printf("run %lld interrupted: %lld of %lld images done; run the same command again to continue\n",
               (long long)out->run_id, (long long)(out->n_ok + out->n_error), (long long)out->n_total);
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
    if (out->scored) {
        const metrics_result *r = out->scores.result;
        printf("scores over %zu images: BLEU-1 %.4f, BLEU-2 %.4f, BLEU-3 %.4f, BLEU-4 %.4f, CIDEr-D %.4f, "
               "ROUGE-L %.4f\n",
               r->n_scored, r->corpus.bleu[0], r->corpus.bleu[1], r->corpus.bleu[2], r->corpus.bleu[3],
               r->corpus.cider, r->corpus.rouge_l);
    }
    fflush(stdout);
}

/* The master's part; returns the exit status. */
static int run_master(run_cli *c, int n_ranks, char **hosts, rc_log *log, int worker_threads, int *abort_job)
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
    run_cli c = {.level = LOG_INFO};
    sched_run_options_default(&c.run);
    int status = parse(argc, argv, &c);
    if (status >= 0)
        return status;

    rc_error err = {{0}};
    int rank = 0, n_ranks = 1, node_workers = 1;
    const int use_mpi = sched_mpi_launched();
    if (use_mpi && sched_mpi_init(&argc, &argv, &rank, &n_ranks, &err) < 0) {
        fprintf(stderr, "radcap run: %s\n", err.msg);
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
    cfg_default(&c.run.cfg);
    int failed = c.config_path && cfg_load(&c.run.cfg, c.config_path, &err) < 0;
    if (!failed && c.max_len > 0) {
        if (c.max_len > c.run.cfg.max_positions)
            failed = rc_fail(&err, "--max-len %d exceeds the model's %d positions", c.max_len,
                             c.run.cfg.max_positions) < 0;
        else
            c.run.cfg.max_len = c.max_len;
    }
    if (!failed && computes)
        failed = img_system_init(argv[0], &err) < 0;
    if (!failed && sched_signals_install() < 0)
        failed = rc_fail(&err, "cannot install the signal handlers") < 0;
    if (failed) {
        log_msg(&log, LOG_ERROR, "%s", err.msg);
        if (use_mpi)
            sched_mpi_abort(EXIT_FATAL);
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
    return status;
}
