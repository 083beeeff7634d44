/* cmd_preprocess.c: `radcap preprocess`, the model input of one image, for
 * debugging and parity checks against the PyTorch/PIL preprocessing. */
#include "pipeline/commands.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: radcap preprocess IMAGE --out FILE [--size N] [--exif-orientation]\n"
            "                         [--max-pixels N] [--fast]\n"
            "\n"
            "Decodes IMAGE (JPEG, PNG, TIFF, WebP or GIF) and writes the model's input\n"
            "tensor to FILE exactly as the engine receives it: float32, little-endian,\n"
            "shape (3, N, N) channel-major (R, G, B planes, rows top to bottom), no\n"
            "header. Preprocessing is the model card's: convert('RGB'), PIL bilinear\n"
            "antialiased resize to N x N ignoring aspect ratio, /255, ImageNet mean/std.\n"
            "16-bit samples keep their high byte (v >> 8).\n"
            "\n"
            "options:\n"
            "  --out FILE          output file (required)\n"
            "  --size N            output side in pixels (default 224)\n"
            "  --exif-orientation  turn the image upright by its EXIF orientation first\n"
            "                      (default: ignored, as PIL's Image.open does; a TIFF's\n"
            "                      orientation tag is always applied, as PIL 9.4 does)\n"
            "  --max-pixels N      refuse images of more than N pixels (default 100000000)\n"
            "  --fast              let JPEG decode at 1/2, 1/4 or 1/8 scale when both sides\n"
            "                      stay at least 6x the output size; close to, not exactly, PIL\n"
            "  --help              this text\n"
            "\n"
            "exit status: 0 written, 2 usage error, 3 the image could not be read or the\n"
            "output not written (the reason is printed on stderr).\n");
}

/* Parses a whole decimal number in [min, max]; returns 0 or -1. */
static int parse_count(const char *text, long long min, long long max, long long *value)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return -1;
    *value = v;
    return 0;
}

/* Writes n floats as little-endian float32, whatever the host's order. */
static int write_f32le(FILE *file, const float *values, size_t n)
{
    const union { uint16_t u; uint8_t b[2]; } probe = {1};
    if (probe.b[0] == 1)
        return fwrite(values, sizeof(float), n, file) == n ? 0 : -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b[4];
        memcpy(b, &values[i], 4);
        uint8_t le[4] = {b[3], b[2], b[1], b[0]};
        if (fwrite(le, 1, 4, file) != 4)
            return -1;
    }
    return 0;
}

int cmd_preprocess(int argc, char **argv)
{
    img_options opts;
    img_options_default(&opts);
    const char *image = NULL, *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int has_value = i + 1 < argc;
        long long v;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(arg, "--out") == 0 && has_value) {
            out_path = argv[++i];
        } else if (strcmp(arg, "--size") == 0 && has_value) {
            if (parse_count(argv[++i], 1, IMG_MAX_SIZE, &v)) {
                fprintf(stderr, "radcap preprocess: --size must be a whole number from 1 to %d\n", IMG_MAX_SIZE);
                return EXIT_USAGE;
            }
            opts.size = (int)v;
        } else if (strcmp(arg, "--max-pixels") == 0 && has_value) {
            if (parse_count(argv[++i], 1, INT64_MAX, &v)) {
                fprintf(stderr, "radcap preprocess: --max-pixels must be a positive whole number\n");
                return EXIT_USAGE;
            }
            opts.max_pixels = v;
        } else if (strcmp(arg, "--exif-orientation") == 0) {
            opts.apply_exif_orientation = 1;
        } else if (strcmp(arg, "--fast") == 0) {
            opts.fast = 1;
        } else if (arg[0] == '-' && arg[1] != '\0') {
            fprintf(stderr, "radcap preprocess: unknown option or missing value: %s\n", arg);
            usage(stderr);
            return EXIT_USAGE;
        } else if (!image) {
            image = arg;
        } else {
            fprintf(stderr, "radcap preprocess: one IMAGE only (got '%s' and '%s')\n", image, arg);
            return EXIT_USAGE;
        }
    }
    if (!image || !out_path) {
        fprintf(stderr, "radcap preprocess: IMAGE and --out FILE are required\n");
        usage(stderr);
        return EXIT_USAGE;
    }

    rc_error err = {{0}};
    if (img_system_init(argv[0], &err)) {
        fprintf(stderr, "radcap preprocess: %s\n", err.msg);
        return EXIT_FATAL;
    }
    size_t n = (size_t)3 * opts.size * opts.size;
    float *tensor = malloc(n * sizeof *tensor);
    if (!tensor) {
        fprintf(stderr, "radcap preprocess: out of memory for a 3x%dx%d tensor\n", opts.size, opts.size);
        return EXIT_FATAL;
    }
    int status = EXIT_OK;
    img_info info;
    if (img_preprocess_file(image, &opts, tensor, &info, &err)) {
        fprintf(stderr, "radcap preprocess: %s\n", err.msg);
        status = EXIT_FATAL;
    } else {
        FILE *file = fopen(out_path, "wb");
        int failed = !file;
        if (file) {
            failed = write_f32le(file, tensor, n) != 0;
            failed |= fclose(file) != 0;
        }
        if (failed) {
            fprintf(stderr, "radcap preprocess: cannot write %s: %s\n", out_path, strerror(errno));
            status = EXIT_FATAL;
        }
    }
    free(tensor);
    return status;
}
