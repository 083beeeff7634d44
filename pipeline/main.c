/* radcap: batch captioning of radiology image archives. */
#include "pipeline/commands.h"
#include "pipeline/version.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The default build (-march=x86-64-v3) lets the compiler use AVX2 and FMA
 * anywhere, so on an older CPU radcap would die of SIGILL somewhere
 * arbitrary: on a mixed cluster a nightly job landing on such a node gets
 * a clear message and the "could not run" status instead. This runs before
 * main and is compiled without AVX itself. (The GEMM backends choose their
 * instructions from CPUID whatever the build: a build for x86-64-v2 runs
 * anywhere, see README "Building for other CPUs".) */
#if defined(__x86_64__) && defined(__AVX2__)
__attribute__((constructor, target("no-avx"))) static void require_build_isa(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return;
    static const char msg[] = "radcap: this build needs a CPU with AVX2 and FMA (compiled for x86-64-v3); "
                              "for this CPU rebuild with: make clean && make OPT='-O2 -march=x86-64-v2'\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) { /* nothing more to try */
    }
    _exit(EXIT_FATAL);
}
#endif

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "caption a manifest into a results database (MPI when launched by mpirun/srun)"},
    {"caption", cmd_caption, "caption images and print one caption per image"},
    {"init-model", cmd_init_model, "write a random-weights checkpoint in the real format"},
    {"tokenize", cmd_tokenize, "BERT WordPiece encode or decode JSON Lines"},
    {"preprocess", cmd_preprocess, "write an image's model input tensor (float32 3xHxW)"},
    {"score", cmd_score, "BLEU-1..4, CIDEr-D and ROUGE-L of candidate captions"},
    {"eval", cmd_eval, "score a stored run: BLEU-1..4, CIDEr-D, ROUGE-L against its references"},
    {"export", cmd_export, "write a stored run's results as CSV or JSON Lines"},
    {"synth", cmd_synth, "write a synthetic demo archive in ROCOv2's layout"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: radcap COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'radcap COMMAND --help' describes a command's options; 'radcap --version' names this build.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("radcap %s\n", radcap_version);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "radcap: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
