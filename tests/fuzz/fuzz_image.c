/* libFuzzer target for io/image.c: img_preprocess_buffer on arbitrary
 * bytes, with a small output (32x32) and a small pixel limit (256 kP) so
 * that each input is cheap. The input's length picks the EXIF orientation
 * and fast-mode options, so both paths are explored without spending input
 * bytes on them. Only the allow-listed libvips loaders (JPEG, PNG, TIFF,
 * WebP, GIF) are reachable: this fuzzes them and our conversion/resize. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    rc_error err = {{0}};
    if (img_system_init(*argc > 0 ? (*argv)[0] : "fuzz_image", &err)) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum { SIDE = 32 };
    img_options opts;
    img_options_default(&opts);
    opts.size = SIDE;
    opts.max_pixels = 1 << 18;
    opts.apply_exif_orientation = size & 1;
    opts.fast = (size >> 1) & 1;
    float out[3 * SIDE * SIDE];
    rc_error err = {{0}};
    img_info info;
    if (img_preprocess_buffer(data, size, "fuzz input", &opts, out, &info, &err) == 0) {
        /* a success must have produced finite values and a sane header */
        for (size_t i = 0; i < sizeof out / sizeof out[0]; i++)
            if (!(out[i] > -3.0f && out[i] < 3.0f))
                abort();
        if (info.width < 1 || info.height < 1 || (int64_t)info.width * info.height > opts.max_pixels)
            abort();
    } else if (err.msg[0] == '\0') {
        abort(); /* every failure must say why */
    }
    return 0;
}
