/* fuzz_synth.c: the option parsers of `radcap synth` over arbitrary bytes,
 * then a scene chosen, captioned and drawn from fuzzer-chosen seed, size,
 * flags and caption buffer size. Beyond "no crash, no leak, no read or
 * write outside a buffer", it checks what the functions promise: a parsed
 * size is within the limits, a parsed set of formats is not empty and
 * holds only known formats, a caption either fits (NUL-terminated, the
 * returned length) or is refused with a message, and every drawn
 * intensity is in 0..1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/synth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    rc_error err = {{0}};
    int width, height;
    if (synth_parse_size(text, &width, &height, &err) == 0 &&
        (width < SYNTH_MIN_SIDE || width > SYNTH_MAX_SIDE || height < SYNTH_MIN_SIDE || height > SYNTH_MAX_SIDE))
        abort();
    unsigned formats;
    if (synth_parse_formats(text, &formats, &err) == 0 && (formats == 0 || formats >> SYNTH_N_FORMATS))
        abort();
    free(text);

    if (size < 12)
        return 0;
    uint64_t seed;
    memcpy(&seed, data, sizeof seed);
    const int w = SYNTH_MIN_SIDE + data[8] % 64, h = SYNTH_MIN_SIDE + data[9] % 64;
    const unsigned flags = data[10] & 3;
    const size_t caption_size = 1 + (size_t)data[11] * 4;
    rng_state r;
    rng_seed(&r, seed);
    synth_scene scene;
    synth_scene_choose(&r, w, h, flags, &scene);
    char *caption = malloc(caption_size);
    const int len = synth_scene_caption(&scene, &r, caption, caption_size, &err);
    if (len >= 0 && ((size_t)len >= caption_size || strlen(caption) != (size_t)len))
        abort();
    if (len < 0 && err.msg[0] == '\0')
        abort();
    free(caption);
    float *image = malloc(sizeof(float) * w * h), *annotation = malloc(sizeof(float) * w * h);
    if (synth_scene_draw(&scene, image, annotation, &err) == 0)
        for (int i = 0; i < w * h; i++)
            if (!(image[i] >= 0 && image[i] <= 1) || !(annotation[i] >= 0 && annotation[i] <= 1))
                abort();
    free(image);
    free(annotation);
    return 0;
}
