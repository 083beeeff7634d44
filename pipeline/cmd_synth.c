/* radcap synth: write a synthetic demo archive in ROCOv2's layout. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "io/synth.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: radcap synth --out DIR --count N [--seed S] [--size WxH] [--formats LIST]\n"
            "                    [--mixed] [--broken K] [--split NAME] [--quality Q] [--force]\n"
            "\n"
            "Writes a synthetic archive in ROCOv2's layout: DIR/NAME/<ID>.<ext> images and\n"
            "DIR/NAME_captions.csv with the header ID,Caption (RFC 4180 quoting), IDs such as\n"
            "ROCOv2_2023_valid_000001. The images are radiograph-like phantoms (chest X-ray,\n"
            "abdominal CT, head CT, brain MRI, knee X-ray) with 0-3 findings (nodules, masses,\n"
            "cysts, calcifications, air-fluid levels, bone lesions), arrows pointing at some of\n"
            "them, blur and noise; each caption describes what was drawn, in ROCO's style:\n"
            "  \"Chest X-ray showing a 2.5-cm nodule in the right lower lobe (arrow).\"\n"
            "The same options and seed give byte-identical files.\n"
            "\n"
            "  --out DIR        archive folder (created, parents included)\n"
            "  --count N        number of intact images (required)\n"
            "  --seed S         random seed (default 1)\n"
            "  --size WxH       image size in pixels, %d..%d a side (default 256x256)\n"
            "  --formats LIST   comma-separated jpg, png, tif, taken in turn (default jpg)\n"
            "  --mixed          vary each side from 0.5x to 1.5x; make some images RGB (coloured\n"
            "                   arrows) and some PNG/TIFF 16-bit; allow line breaks and a\n"
            "                   non-ASCII 'x' sign in captions\n"
            "  --broken K       add K broken rows, spread among the others, taking in turn: a\n"
            "                   truncated JPEG, a zero-byte .png, an HTML page named .jpg, and\n"
            "                   a row whose image file is missing\n"
            "  --split NAME     split name for the folder, CSV and IDs (default valid)\n"
            "  --quality Q      JPEG quality 1..100 (default 90)\n"
            "  --force          write into an image folder that is not empty (same-named\n"
            "                   files are replaced, others are left alone)\n"
            "\n"
            "Prints one summary line. Exit status 0 on success, 2 on a usage error, 3 when\n"
            "the archive could not be written.\n",
            SYNTH_MIN_SIDE, SYNTH_MAX_SIDE);
}

int cmd_synth(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"out", required_argument, 0, 'o'},     {"count", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'},    {"size", required_argument, 0, 'z'},
        {"formats", required_argument, 0, 'f'}, {"mixed", no_argument, 0, 'm'},
        {"broken", required_argument, 0, 'b'},  {"split", required_argument, 0, 'p'},
        {"quality", required_argument, 0, 'q'}, {"force", no_argument, 0, 'F'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    synth_options opt;
    synth_options_default(&opt);
    const char *out = NULL, *count_text = NULL;
    rc_error err = {{0}};
    long long seed;
    int opt_char;
    optind = 1;
    while ((opt_char = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt_char) {
        case 'o': out = optarg; break;
        case 'n': count_text = optarg; break;
        case 's':
            if (cli_parse_ll(optarg, 0, (long long)1 << 62, &seed) < 0) {
                fprintf(stderr, "radcap synth: --seed must be a non-negative integer, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            opt.seed = (uint64_t)seed;
            break;
        case 'z':
            if (synth_parse_size(optarg, &opt.width, &opt.height, &err) < 0) {
                fprintf(stderr, "radcap synth: --size: %s\n", err.msg);
                return EXIT_USAGE;
            }
            break;
        case 'f':
            if (synth_parse_formats(optarg, &opt.formats, &err) < 0) {
                fprintf(stderr, "radcap synth: --formats: %s\n", err.msg);
                return EXIT_USAGE;
            }
            break;
        case 'm': opt.mixed = 1; break;
        case 'b':
            if (cli_parse_int(optarg, 0, 1000000, &opt.broken) < 0) {
                fprintf(stderr, "radcap synth: --broken must be an integer in 0..1000000, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'p': opt.split = optarg; break;
        case 'q':
            if (cli_parse_int(optarg, 1, 100, &opt.jpeg_quality) < 0) {
                fprintf(stderr, "radcap synth: --quality must be an integer in 1..100, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'F': opt.overwrite = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (!out || !count_text || optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (cli_parse_int(count_text, 0, 9000000, &opt.count) < 0) {
        fprintf(stderr, "radcap synth: --count must be an integer in 0..9000000, not '%s'\n", count_text);
        return EXIT_USAGE;
    }
    if (img_system_init("radcap", &err) < 0) {
        fprintf(stderr, "radcap synth: %s\n", err.msg);
        return EXIT_FATAL;
    }
    synth_report report;
    if (synth_archive(&opt, out, &report, &err) < 0) {
        fprintf(stderr, "radcap synth: %s\n", err.msg);
        if (strstr(err.msg, "not empty"))
            fprintf(stderr, "radcap synth: use --force to write into it anyway\n");
        return EXIT_FATAL;
    }
    const int broken = report.n_entries - report.n_intact;
    printf("radcap synth: wrote %d images (%d jpg, %d png, %d tif) and %d broken rows, %d findings, "
           "%lld bytes: %s and %s/\n",
           report.n_intact, report.n_format[SYNTH_JPEG], report.n_format[SYNTH_PNG], report.n_format[SYNTH_TIFF],
           broken, report.n_lesions, report.bytes, report.csv_path, report.image_dir);
    return EXIT_OK;
}
