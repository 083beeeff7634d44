/* radcap init-model: write a random-weights checkpoint in the real format. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/random_model.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: radcap init-model [--config FILE] --seed N --out FILE [--format torch|safetensors]\n"
            "\n"
            "Writes a checkpoint with random weights for the model configuration (default: the\n"
            "model card's), with the real checkpoint's key names, shapes and order, as\n"
            "torch.save(model.state_dict()) writes it (loadable by torch.load), or as\n"
            ".safetensors. For demos, tests and benchmarks where the real weights are absent.\n"
            "\n"
            "  --config FILE   model configuration JSON (default: the model card's values)\n"
            "  --seed N        random seed (required; the same seed gives the same file)\n"
            "  --out FILE      output path (written to a temporary name, then renamed)\n"
            "  --format F      torch (default) or safetensors\n");
}

int cmd_init_model(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"config", required_argument, 0, 'c'}, {"seed", required_argument, 0, 's'},
        {"out", required_argument, 0, 'o'},    {"format", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *config_path = NULL, *out = NULL, *format = "torch", *seed_text = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 's': seed_text = optarg; break;
        case 'o': out = optarg; break;
        case 'f': format = optarg; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    long long seed;
    if (!seed_text || !out || optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (cli_parse_ll(seed_text, 0, (long long)1 << 62, &seed) < 0) {
        fprintf(stderr, "radcap init-model: --seed must be a non-negative integer, not '%s'\n", seed_text);
        return EXIT_USAGE;
    }
    if (strcmp(format, "torch") != 0 && strcmp(format, "safetensors") != 0) {
        fprintf(stderr, "radcap init-model: --format must be torch or safetensors, not '%s'\n", format);
        return EXIT_USAGE;
    }
    rc_error err = {{0}};
    cfg_model cfg;
    cfg_default(&cfg);
    if (config_path && cfg_load(&cfg, config_path, &err) < 0) {
        fprintf(stderr, "radcap init-model: %s\n", err.msg);
        return EXIT_FATAL;
    }
    random_model rm;
    if (random_model_build(&rm, &cfg, (uint64_t)seed, &err) < 0) {
        fprintf(stderr, "radcap init-model: %s\n", err.msg);
        return EXIT_FATAL;
    }
    int rc = strcmp(format, "torch") == 0 ? ckpt_write_torch(out, rm.tensors, rm.n_tensors, NULL, &err)
                                          : ckpt_write_safetensors(out, rm.tensors, rm.n_tensors, &err);
    random_model_free(&rm);
    if (rc < 0) {
        fprintf(stderr, "radcap init-model: %s\n", err.msg);
        return EXIT_FATAL;
    }
    return EXIT_OK;
}
