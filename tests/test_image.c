/* Tests of io/image.{h,c}: decoding every supported format and mode,
 * PIL-exact preprocessing, error paths and thread safety.
 *
 * Every test image is generated here with libvips into a temporary
 * directory. Expected tensors come from the definitions, computed in this
 * file (uniform colours, unresized 224x224 images, a hand-worked resize),
 * or from PIL itself via tests/reference/pil_preprocess.py. */
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <vips/vips.h>

#include "io/image.h"
#include "tests/helpers/testutil.h"

enum { S = 224 }; /* the card's input side */
#define PLANE ((size_t)S * S)

/* The card's normalisation, written out here rather than taken from
 * img_options_default, which a test checks against these. */
static const float MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float STD[3] = {0.229f, 0.224f, 0.225f};

/* ToTensor then Normalize for one 8-bit value, in float32 as PyTorch does. */
static float normalised(int channel, unsigned v)
{
    return ((float)v / 255.0f - MEAN[channel]) / STD[channel];
}

/* ---- test pictures ------------------------------------------------------ */

static char *tmp_dir; /* this run's scratch directory */

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    return x ^ (x >> 16);
}

/* A test picture: a uniform colour, or a pattern of smooth waves, a hard
 * checker and hashed noise (different in each band) that exercises every
 * filter tap. 16-bit pictures put the 8-bit pattern in the high byte and
 * noise in the low byte, so the expected 8-bit value is the pattern's. */
typedef struct picture {
    int width, height, bands, bits;
    VipsInterpretation interpretation;
    const unsigned *uniform; /* (bands) sample values, or NULL for the pattern */
} picture;

/* A triangle wave of period 1 in [-1, 1]: smooth ramps, cheaper than sin. */
static double triangle_wave(double t)
{
    return 4.0 * fabs(t - floor(t) - 0.5) - 1.0;
}

static unsigned pattern8(int x, int y, int band)
{
    double wave = 0.5 + 0.45 * triangle_wave(x / (37.0 + 6 * band)) * triangle_wave(y / (57.0 + 12 * band));
    unsigned checker = (unsigned)(((x / 13 + y / 9 + band) & 1) * 60);
    return (unsigned)(wave * 150.0) + checker + mix((uint32_t)x * 73856093u ^ (uint32_t)y * 19349663u ^ (uint32_t)band) % 41;
}

static unsigned picture_sample(const picture *p, int x, int y, int band)
{
    if (p->uniform)
        return p->uniform[band];
    unsigned v = pattern8(x, y, band);
    return p->bits == 16 ? v << 8 | (mix((uint32_t)x + 7919u * (uint32_t)y + 104729u * (uint32_t)band) & 255) : v;
}

static VipsImage *picture_image(const picture *p)
{
    size_t samples = (size_t)p->width * p->height * p->bands;
    size_t bytes = samples * (p->bits == 16 ? 2 : 1);
    uint8_t *buf = malloc(bytes);
    assert_non_null(buf);
    for (int y = 0; y < p->height; y++)
        for (int x = 0; x < p->width; x++)
            for (int b = 0; b < p->bands; b++) {
                size_t i = ((size_t)y * p->width + x) * p->bands + b;
                unsigned v = picture_sample(p, x, y, b);
                if (p->bits == 16)
                    ((uint16_t *)buf)[i] = (uint16_t)v;
                else
                    buf[i] = (uint8_t)v;
            }
    VipsImage *raw = vips_image_new_from_memory_copy(buf, bytes, p->width, p->height, p->bands,
                                                     p->bits == 16 ? VIPS_FORMAT_USHORT : VIPS_FORMAT_UCHAR);
    free(buf);
    assert_non_null(raw);
    VipsImage *out;
    assert_int_equal(vips_copy(raw, &out, "interpretation", p->interpretation, NULL), 0);
    g_object_unref(raw);
    return out;
}

/* Saves image as tmp_dir/name; libvips picks the saver from the suffix and
 * takes options in brackets, e.g. "x.png[palette]". Returns the path. */
static char *save_image(VipsImage *image, const char *name)
{
    char target[4096];
    snprintf(target, sizeof target, "%s/%s", tmp_dir, name);
    if (vips_image_write_to_file(image, target, NULL))
        fail_msg("cannot write %s: %s", target, vips_error_buffer());
    char *bracket = strchr(target, '[');
    if (bracket)
        *bracket = '\0';
    return strdup(target);
}

static char *save_picture(const picture *p, const char *name)
{
    VipsImage *image = picture_image(p);
    char *path = save_image(image, name);
    g_object_unref(image);
    return path;
}

static char *write_bytes(const char *name, const void *data, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    return strdup(path);
}

/* Copies the first `keep` bytes of src to tmp_dir/name. */
static char *truncated_copy(const char *src, double keep_fraction, const char *name)
{
    size_t n;
    char *data = tu_read_file(src, &n);
    assert_non_null(data);
    char *path = write_bytes(name, data, (size_t)(n * keep_fraction));
    free(data);
    return path;
}

static float *preprocess_ok(const char *path, const img_options *opts, img_info *info)
{
    float *out = malloc(sizeof(float) * 3 * (size_t)opts->size * opts->size);
    rc_error err = {{0}};
    assert_non_null(out);
    if (img_preprocess_file(path, opts, out, info, &err))
        fail_msg("unexpected failure: %s", err.msg);
    return out;
}

/* ---- setup ------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    (void)state;
    tmp_dir = tu_mkdtemp("image");
    return tmp_dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(tmp_dir);
    return 0;
}

/* ---- exact expectations ------------------------------------------------ */

static void test_defaults_are_the_cards(void **state)
{
    (void)state;
    img_options o;
    img_options_default(&o);
    assert_int_equal(o.size, 224);
    for (int c = 0; c < 3; c++) {
        assert_true(o.mean[c] == MEAN[c]);
        assert_true(o.std[c] == STD[c]);
    }
    assert_true(o.max_pixels == 100000000);
    assert_int_equal(o.apply_exif_orientation, 0);
    assert_int_equal(o.fast, 0);
}

/* Every value of the tensor must be normalised(c, rgb[c]). */
static void expect_uniform(const float *out, int size, const unsigned rgb[3], const char *what)
{
    size_t plane = (size_t)size * size;
    for (int c = 0; c < 3; c++) {
        float want = normalised(c, rgb[c]);
        for (size_t i = 0; i < plane; i++)
            if (out[c * plane + i] != want)
                fail_msg("%s: channel %d pixel %zu is %.9g, expected %.9g (value %u)", what, c, i,
                         out[c * plane + i], want, rgb[c]);
    }
}

/* A uniform image stays exactly uniform through PIL's resize: the weights of
 * each output sum to 2^22 within rounding, so (2^21 + v * sum) >> 22 = v.
 * Each row below states the stored samples and the RGB that convert('RGB')
 * gives, worked out from PIL's rules by hand. 300x200 needs both passes. */
static void test_uniform_formats_and_modes(void **state)
{
    (void)state;
    static const unsigned grey[] = {77}, grey_alpha[] = {200, 0}, rgb[] = {10, 128, 250},
                          rgba[] = {10, 128, 250, 0}, grey16[] = {0x8a37}, grey_alpha16[] = {0x1299, 0xffff},
                          rgb16[] = {0x1234, 0xabcd, 0xff00}, rgba16[] = {0x00ff, 0x8000, 0x7fff, 0},
                          rgba_half[] = {10, 128, 250, 128},
                          cmyk[] = {30, 100, 200, 50}, palette_rgb[] = {12, 34, 56};
    static const struct {
        const char *name; /* file name, with libvips save options */
        int bands, bits;
        VipsInterpretation interpretation;
        const unsigned *samples;
        unsigned r, g, b;
    } cases[] = {
        {"grey.png", 1, 8, VIPS_INTERPRETATION_B_W, grey, 77, 77, 77},
        /* alpha is dropped, never composited: transparent stays 200 */
        {"grey_alpha.png", 2, 8, VIPS_INTERPRETATION_B_W, grey_alpha, 200, 200, 200},
        {"rgb.png", 3, 8, VIPS_INTERPRETATION_sRGB, rgb, 10, 128, 250},
        {"rgba.png", 4, 8, VIPS_INTERPRETATION_sRGB, rgba, 10, 128, 250},
        {"palette.png[palette]", 3, 8, VIPS_INTERPRETATION_sRGB, palette_rgb, 12, 34, 56},
        /* 16 bit: high byte, 0x8a37 >> 8 = 0x8a = 138 */
        {"grey16.png[bitdepth=16]", 1, 16, VIPS_INTERPRETATION_GREY16, grey16, 0x8a, 0x8a, 0x8a},
        {"grey_alpha16.png[bitdepth=16]", 2, 16, VIPS_INTERPRETATION_GREY16, grey_alpha16, 0x12, 0x12, 0x12},
        {"rgb16.png[bitdepth=16]", 3, 16, VIPS_INTERPRETATION_RGB16, rgb16, 0x12, 0xab, 0xff},
        {"rgba16.png[bitdepth=16]", 4, 16, VIPS_INTERPRETATION_RGB16, rgba16, 0x00, 0x80, 0x7f},
        {"grey.tif", 1, 8, VIPS_INTERPRETATION_B_W, grey, 77, 77, 77},
        {"rgb.tif", 3, 8, VIPS_INTERPRETATION_sRGB, rgb, 10, 128, 250},
        {"rgba.tif", 4, 8, VIPS_INTERPRETATION_sRGB, rgba, 10, 128, 250},
        {"grey16.tif", 1, 16, VIPS_INTERPRETATION_GREY16, grey16, 0x8a, 0x8a, 0x8a},
        {"rgb16.tif", 3, 16, VIPS_INTERPRETATION_RGB16, rgb16, 0x12, 0xab, 0xff},
        /* CMYK (30, 100, 200, 50): R = round(225 * 205 / 255) = round(180.88) = 181,
         * G = round(155 * 205 / 255) = round(124.61) = 125, B = round(55 * 205 / 255) =
         * round(44.22) = 44 */
        {"cmyk.tif", 4, 8, VIPS_INTERPRETATION_CMYK, cmyk, 181, 125, 44},
        {"rgb.webp[lossless]", 3, 8, VIPS_INTERPRETATION_sRGB, rgb, 10, 128, 250},
        /* libwebp's encoder zeroes the colour of fully transparent pixels: half alpha */
        {"rgba.webp[lossless]", 4, 8, VIPS_INTERPRETATION_sRGB, rgba_half, 10, 128, 250},
        {"rgb.gif", 3, 8, VIPS_INTERPRETATION_sRGB, rgb, 10, 128, 250},
        {"grey.gif", 1, 8, VIPS_INTERPRETATION_B_W, grey, 77, 77, 77},
        /* baseline JPEG keeps a flat grey exactly (one DC level, no AC) */
        {"grey.jpg", 1, 8, VIPS_INTERPRETATION_B_W, grey, 77, 77, 77},
    };
    img_options opts;
    img_options_default(&opts);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        picture p = {300, 200, cases[i].bands, cases[i].bits, cases[i].interpretation, cases[i].samples};
        char *path = save_picture(&p, cases[i].name);
        img_info info;
        float *out = preprocess_ok(path, &opts, &info);
        unsigned want[3] = {cases[i].r, cases[i].g, cases[i].b};
        expect_uniform(out, S, want, cases[i].name);
        assert_int_equal(info.width, 300);
        assert_int_equal(info.height, 200);
        free(out);
        free(path);
    }
}

/* The palette case above must really be a palette PNG (colour type 3 at
 * byte 25 of the file), and a PNG saved with an alpha channel really RGBA. */
static void test_palette_png_is_palette(void **state)
{
    (void)state;
    static const unsigned colour[] = {12, 34, 56};
    picture p = {40, 30, 3, 8, VIPS_INTERPRETATION_sRGB, colour};
    char *path = save_picture(&p, "check_palette.png[palette]");
    size_t n;
    char *bytes = tu_read_file(path, &n);
    assert_true(n > 26);
    assert_int_equal(bytes[25], 3);
    free(bytes);
    free(path);
}

/* A 224x224 image needs no resize, so every output value is the stored
 * pixel's: checked per pixel for 8-bit RGB, grey+alpha, 16-bit TIFF
 * (high byte) and CMYK TIFF (PIL's formula written out here). */
static void test_unresized_images_are_exact_per_pixel(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int bands, bits;
        VipsInterpretation interpretation;
    } cases[] = {
        {"exact_rgb.png", 3, 8, VIPS_INTERPRETATION_sRGB},
        {"exact_grey_alpha.png", 2, 8, VIPS_INTERPRETATION_B_W},
        {"exact_rgb16.tif", 3, 16, VIPS_INTERPRETATION_RGB16},
        {"exact_grey16.png[bitdepth=16]", 1, 16, VIPS_INTERPRETATION_GREY16},
        {"exact_cmyk.tif", 4, 8, VIPS_INTERPRETATION_CMYK},
    };
    img_options opts;
    img_options_default(&opts);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        picture p = {S, S, cases[i].bands, cases[i].bits, cases[i].interpretation, NULL};
        char *path = save_picture(&p, cases[i].name);
        float *out = preprocess_ok(path, &opts, NULL);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                unsigned v[4];
                for (int b = 0; b < p.bands; b++)
                    v[b] = picture_sample(&p, x, y, b) >> (p.bits - 8);
                unsigned want[3];
                for (int c = 0; c < 3; c++)
                    want[c] = p.bands <= 2 ? v[0]
                        : p.interpretation == VIPS_INTERPRETATION_CMYK
                        /* round((255 - C) * (255 - K) / 255) */
                        ? (unsigned)floor((255.0 - v[c]) * (255.0 - v[3]) / 255.0 + 0.5)
                        : v[c];
                for (int c = 0; c < 3; c++) {
                    float got = out[c * PLANE + (size_t)y * S + x];
                    if (got != normalised(c, want[c]))
                        fail_msg("%s (%d, %d) channel %d: %.9g, expected %.9g (value %u)", cases[i].name, x, y, c,
                                 got, normalised(c, want[c]), want[c]);
                }
            }
        free(out);
        free(path);
    }
}

/* PIL's filter worked by hand for 448 -> 224 (scale 2, support 2): output
 * column j is centred on input 2j + 1 and reads inputs from
 * (int)(2j + 1 - 2 + 0.5) to (int)(2j + 1 + 2 + 0.5) (exclusive), clipped
 * to the image, with weights triangle((x - centre + 0.5) / 2):
 *   interior j: inputs 2j-1 .. 2j+2, weights 1/8 3/8 3/8 1/8 (exact in
 *     22-bit fixed point: 2^19, 3 * 2^19);
 *   j = 0: inputs 0 .. 2, weights 0.75 0.75 0.25 / 1.75 = 3/7 3/7 1/7,
 *     fixed point (int)(0.5 + 3/7 * 2^22) = 1797559, (int)(0.5 + 2^22/7) = 599186;
 *   j = 223: inputs 445 .. 447, weights 1/7 3/7 3/7.
 * Columns alternate 255 (even) and 0 (odd):
 *   j = 0:   (2^21 + 255 * (1797559 + 599186)) >> 22 = 613267127 >> 22 = 146
 *   interior: 255 at 2j and 2j+2: (2^21 + 255 * 4 * 2^19) >> 22 = floor(127.5 + 0.5) = 128
 *   j = 223: 255 at 446 only: (2^21 + 255 * 1797559) >> 22 = 460464697 >> 22 = 109
 * Rows are all alike, and the vertical weights of each output row sum to
 * exactly 2^22 (2^19 * 8, or 1797559 * 2 + 599186), so the vertical pass
 * keeps every value. Grey, so R = G = B. */
static void test_stripes_resize_by_hand(void **state)
{
    (void)state;
    size_t n = 448 * 448;
    uint8_t *buf = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = (i % 448) % 2 == 0 ? 255 : 0;
    VipsImage *image = vips_image_new_from_memory_copy(buf, n, 448, 448, 1, VIPS_FORMAT_UCHAR);
    free(buf);
    char *path = save_image(image, "stripes.png");
    g_object_unref(image);
    img_options opts;
    img_options_default(&opts);
    float *out = preprocess_ok(path, &opts, NULL);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                unsigned want = x == 0 ? 146 : x == S - 1 ? 109 : 128;
                float got = out[c * PLANE + (size_t)y * S + x];
                if (got != normalised(c, want))
                    fail_msg("stripes (%d, %d) channel %d: %.9g, expected value %u", x, y, c, got, want);
            }
    free(out);
    free(path);
}

/* Multi-page TIFF: page 0 is (10, 128, 250), page 1 (240, 5, 5): the first
 * page is used, as PIL's Image.open does. */
static void test_multipage_tiff_uses_first_page(void **state)
{
    (void)state;
    static const unsigned first[] = {10, 128, 250}, second[] = {240, 5, 5};
    picture p0 = {120, 90, 3, 8, VIPS_INTERPRETATION_sRGB, first};
    picture p1 = {120, 90, 3, 8, VIPS_INTERPRETATION_sRGB, second};
    VipsImage *pages[2] = {picture_image(&p0), picture_image(&p1)};
    VipsImage *joined, *tall;
    assert_int_equal(vips_arrayjoin(pages, &joined, 2, "across", 1, NULL), 0);
    assert_int_equal(vips_copy(joined, &tall, NULL), 0);
    vips_image_set_int(tall, VIPS_META_PAGE_HEIGHT, 90);
    char *path = save_image(tall, "pages.tif");
    g_object_unref(pages[0]);
    g_object_unref(pages[1]);
    g_object_unref(joined);
    g_object_unref(tall);
    img_options opts;
    img_options_default(&opts);
    img_info info;
    float *out = preprocess_ok(path, &opts, &info);
    expect_uniform(out, S, first, "multi-page TIFF");
    assert_int_equal(info.height, 90);
    free(out);
    free(path);
}

/* A 224x224 pattern stored with orientation 6 ("rotate 90 degrees clockwise
 * to display"): displayed(x, y) = stored(y, 223 - x) for a square. WebP
 * keeps the tag in EXIF, which PIL ignores on open (so do we unless asked);
 * TIFF keeps it in the orientation tag, which PIL 9.4 applies on open (so
 * do we, with or without the option, and only once). */
static void test_orientation(void **state)
{
    (void)state;
    picture p = {S, S, 3, 8, VIPS_INTERPRETATION_sRGB, NULL};
    VipsImage *plain = picture_image(&p), *tagged;
    assert_int_equal(vips_copy(plain, &tagged, NULL), 0);
    vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
    char *webp = save_image(tagged, "oriented.webp[lossless]");
    char *tiff = save_image(tagged, "oriented.tif");
    g_object_unref(plain);
    g_object_unref(tagged);
    static const struct {
        int tiff, option, rotated;
    } cases[] = {{0, 0, 0}, {0, 1, 1}, {1, 0, 1}, {1, 1, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        img_options opts;
        img_options_default(&opts);
        opts.apply_exif_orientation = cases[i].option;
        img_info info;
        float *out = preprocess_ok(cases[i].tiff ? tiff : webp, &opts, &info);
        assert_int_equal(info.orientation, 6);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < 3; c++) {
                    unsigned want = cases[i].rotated ? picture_sample(&p, y, S - 1 - x, c) : picture_sample(&p, x, y, c);
                    if (out[c * PLANE + (size_t)y * S + x] != normalised(c, want))
                        fail_msg("%s option %d: (%d, %d) channel %d is not the %s pixel", cases[i].tiff ? "TIFF" : "WebP",
                                 cases[i].option, x, y, c, cases[i].rotated ? "rotated" : "stored");
                }
        free(out);
    }
    free(webp);
    free(tiff);
}

/* Other output sizes work (the engine's tiny test configuration uses them). */
static void test_other_sizes(void **state)
{
    (void)state;
    static const unsigned colour[] = {1, 2, 254};
    picture p = {50, 70, 3, 8, VIPS_INTERPRETATION_sRGB, colour};
    char *path = save_picture(&p, "small.png");
    static const int sizes[] = {1, 7, 32, 50, 300};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        img_options opts;
        img_options_default(&opts);
        opts.size = sizes[i];
        float *out = preprocess_ok(path, &opts, NULL);
        expect_uniform(out, sizes[i], colour, "other size");
        free(out);
    }
    free(path);
}

/* ---- errors ------------------------------------------------------------ */

/* The call fails, and the message names the path and contains `reason`. */
static void expect_failure(const char *path, const img_options *opts, const char *reason)
{
    float *out = malloc(sizeof(float) * 3 * (size_t)opts->size * opts->size);
    rc_error err = {{0}};
    assert_int_equal(img_preprocess_file(path, opts, out, NULL, &err), -1);
    free(out);
    printf("    %s\n", err.msg);
    if (!strstr(err.msg, path) || !strstr(err.msg, reason))
        fail_msg("message '%s' should name %s and say '%s'", err.msg, path, reason);
}

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xffffffffU;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc >> 1 ^ (0xedb88320U & -(crc & 1));
    }
    return ~crc;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Appends one PNG chunk (length, type, data, CRC of type + data) at p;
 * returns the byte after it. */
static uint8_t *put_chunk(uint8_t *p, const char *type, const uint8_t *data, uint32_t n)
{
    put_be32(p, n);
    memcpy(p + 4, type, 4);
    if (n)
        memcpy(p + 8, data, n);
    put_be32(p + 8 + n, crc32_of(p + 4, 4 + n));
    return p + 12 + n;
}

/* A PNG signature, an RGB 8-bit IHDR claiming width x height, an IDAT of
 * four bytes that are not a zlib stream, and IEND: a readable header with
 * no pixel data behind it. */
static char *png_header_only(const char *name, uint32_t width, uint32_t height)
{
    uint8_t png[8 + 25 + 16 + 12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, width);
    put_be32(ihdr + 4, height);
    ihdr[8] = 8, ihdr[9] = 2; /* depth 8, colour type RGB; compression, filter, interlace 0 */
    static const uint8_t junk[4] = {1, 2, 3, 4};
    uint8_t *end = put_chunk(put_chunk(put_chunk(png + 8, "IHDR", ihdr, 13), "IDAT", junk, 4), "IEND", NULL, 0);
    return write_bytes(name, png, (size_t)(end - png));
}

static void test_broken_files(void **state)
{
    (void)state;
    img_options opts;
    img_options_default(&opts);
    picture p = {500, 375, 3, 8, VIPS_INTERPRETATION_sRGB, NULL};
    char *jpeg = save_picture(&p, "whole.jpg"), *png = save_picture(&p, "whole.png");
    char *paths[] = {
        truncated_copy(jpeg, 0.5, "cut.jpg"),
        truncated_copy(png, 0.5, "cut.png"),
        truncated_copy(jpeg, 0.01, "stub.jpg"),
        write_bytes("empty.jpg", "", 0),
        write_bytes("text.jpg", "this is a caption, not a picture\n", 33),
        write_bytes("image.ppm", "P6\n2 2\n255\n0123456789ab", 23),
        png_header_only("zero_width.png", 0, 10),
        png_header_only("zero_height.png", 10, 0),
    };
    const char *reasons[] = {
        "Premature end",      /* libjpeg, made an error by fail_on=truncated */
        "cannot decode",      /* libpng/libspng read error */
        "Premature end",      /* a JPEG signature but no whole header */
        "empty file",
        "not an image",
        "not supported",      /* PPM: libvips reads it, we do not allow it */
        "width is zero",      /* libpng's reason, which libvips gives as a warning */
        "height is zero",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        expect_failure(paths[i], &opts, reasons[i]);
        free(paths[i]);
    }
    char missing[4096], dir[4096];
    snprintf(missing, sizeof missing, "%s/missing.png", tmp_dir);
    expect_failure(missing, &opts, "No such file");
    snprintf(dir, sizeof dir, "%s", tmp_dir);
    expect_failure(dir, &opts, "directory");
    /* the rotation path reads with random access: a cut file fails there too */
    VipsImage *plain = picture_image(&p), *tagged;
    assert_int_equal(vips_copy(plain, &tagged, NULL), 0);
    vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
    char *oriented = save_image(tagged, "oriented_whole.jpg");
    char *cut_oriented = truncated_copy(oriented, 0.5, "oriented_cut.jpg");
    g_object_unref(plain);
    g_object_unref(tagged);
    img_options upright = opts;
    upright.apply_exif_orientation = 1;
    expect_failure(cut_oriented, &upright, "Premature end");
    free(preprocess_ok(oriented, &upright, NULL));
    free(oriented);
    free(cut_oriented);
    /* the whole files were fine: the failures are the cuts' */
    free(preprocess_ok(jpeg, &opts, NULL));
    free(preprocess_ok(png, &opts, NULL));
    free(jpeg);
    free(png);
}

/* A header claiming 30000 x 30000 with no pixel data behind it: refused by
 * the pixel limit, which proves the check runs before decoding (decoding
 * would have failed on the missing data instead). A real 2000 x 1000 image
 * is refused at 1999999 pixels and accepted at 2000000. */
static void test_pixel_limit(void **state)
{
    (void)state;
    img_options opts;
    img_options_default(&opts);
    char *bomb = png_header_only("bomb.png", 30000, 30000);
    expect_failure(bomb, &opts, "exceeds the limit of 100000000 pixels");
    opts.max_pixels = (int64_t)30000 * 30000;
    expect_failure(bomb, &opts, "cannot decode"); /* past the limit, the data is missing */
    free(bomb);

    static const unsigned grey[] = {99};
    picture p = {2000, 1000, 1, 8, VIPS_INTERPRETATION_B_W, grey};
    char *path = save_picture(&p, "two_megapixels.png");
    opts.max_pixels = 1999999;
    expect_failure(path, &opts, "2000 x 1000 = 2000000 pixels exceeds the limit of 1999999");
    opts.max_pixels = 2000000;
    float *out = preprocess_ok(path, &opts, NULL);
    unsigned want[3] = {99, 99, 99};
    expect_uniform(out, S, want, "at the limit");
    free(out);
    free(path);
}

static void test_buffers_and_options(void **state)
{
    (void)state;
    img_options opts;
    img_options_default(&opts);
    static const unsigned colour[] = {200, 100, 0};
    picture p = {64, 48, 3, 8, VIPS_INTERPRETATION_sRGB, colour};
    char *path = save_picture(&p, "buffer.png");
    size_t n;
    char *data = tu_read_file(path, &n);
    float *out = malloc(sizeof(float) * 3 * PLANE);
    rc_error err = {{0}};
    img_info info;
    assert_int_equal(img_preprocess_buffer(data, n, "member.png", &opts, out, &info, &err), 0);
    expect_uniform(out, S, colour, "buffer");
    assert_string_equal(info.loader, "pngload_source");
    assert_int_equal(info.bands, 3);
    assert_int_equal(info.bits, 8);

    assert_int_equal(img_preprocess_buffer(data, 0, "member.png", &opts, out, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "member.png: empty buffer"));
    assert_int_equal(img_preprocess_buffer(data, n / 3, NULL, &opts, out, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "memory buffer: "));
    assert_int_equal(img_preprocess_buffer("GIF89a", 6, "x.gif", &opts, out, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "x.gif: "));

    img_options bad = opts;
    bad.size = 0;
    assert_int_equal(img_preprocess_buffer(data, n, "b", &bad, out, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "output size"));
    bad = opts;
    bad.std[1] = 0.0f;
    assert_int_equal(img_preprocess_buffer(data, n, "b", &bad, out, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "std"));
    bad = opts;
    bad.max_pixels = 0;
    assert_int_equal(img_preprocess_file(path, &bad, out, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "pixel limit"));
    free(out);
    free(data);
    free(path);
}

static void test_supported_extensions(void **state)
{
    (void)state;
    static const char *yes[] = {"a.jpg", "dir/B.JPEG", "c.jpe", "d.PNG", "e.tif", "f.TIFF", "g.webp", "h.Gif"};
    static const char *no[] = {"a.txt", "jpg", "dir.jpg/file", "a.jpg.bak", "a.", "ppm.ppm", ""};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_int_equal(img_has_supported_extension(yes[i]), 1);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_int_equal(img_has_supported_extension(no[i]), 0);
}

/* ---- parallel safety --------------------------------------------------- */

/* 24 images of mixed formats, sizes and modes, plus two broken files,
 * preprocessed in an OpenMP loop: each result must equal the serial one
 * bit for bit, and each broken file fail on its own. */
static void test_parallel_matches_serial(void **state)
{
    (void)state;
    enum { N = 26 };
    static const char *formats[] = {"jpg", "png", "tif", "webp", "gif", "png[bitdepth=16]"};
    char *paths[N];
    for (int i = 0; i < N - 2; i++) {
        int sixteen = i % 6 == 5, colour = i % 4 != 0;
        picture p = {100 + 37 * i, 80 + 53 * (i % 7), colour ? 3 : 1, sixteen ? 16 : 8,
                     colour ? (sixteen ? VIPS_INTERPRETATION_RGB16 : VIPS_INTERPRETATION_sRGB)
                            : (sixteen ? VIPS_INTERPRETATION_GREY16 : VIPS_INTERPRETATION_B_W),
                     NULL};
        char name[64];
        snprintf(name, sizeof name, "batch%02d.%s", i, formats[i % 6]);
        paths[i] = save_picture(&p, name);
    }
    paths[N - 2] = truncated_copy(paths[0], 0.5, "batch_cut.jpg");
    paths[N - 1] = write_bytes("batch_empty.png", "", 0);

    img_options opts;
    img_options_default(&opts);
    float *serial = malloc(sizeof(float) * 3 * PLANE * N), *parallel = malloc(sizeof(float) * 3 * PLANE * N);
    int serial_status[N], parallel_status[N];
    rc_error serial_err[N], parallel_err[N];
    for (int i = 0; i < N; i++)
        serial_status[i] = img_preprocess_file(paths[i], &opts, serial + i * 3 * PLANE, NULL, &serial_err[i]);
    for (int round = 0; round < 3; round++) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(4)
        for (int i = 0; i < N; i++)
            parallel_status[i] = img_preprocess_file(paths[i], &opts, parallel + i * 3 * PLANE, NULL, &parallel_err[i]);
        for (int i = 0; i < N; i++) {
            assert_int_equal(parallel_status[i], serial_status[i]);
            if (serial_status[i] == 0 && memcmp(serial + i * 3 * PLANE, parallel + i * 3 * PLANE, sizeof(float) * 3 * PLANE))
                fail_msg("%s: the parallel result differs from the serial one", paths[i]);
            if (serial_status[i] != 0)
                assert_non_null(strstr(parallel_err[i].msg, paths[i]));
        }
    }
    for (int i = 0; i < N - 2; i++)
        assert_int_equal(serial_status[i], 0);
    assert_int_equal(serial_status[N - 2], -1);
    assert_int_equal(serial_status[N - 1], -1);
    free(serial);
    free(parallel);
    for (int i = 0; i < N; i++)
        free(paths[i]);
}

/* ---- parity with PIL --------------------------------------------------- */

typedef struct parity_case {
    const char *name; /* file name with libvips save options */
    int width, height, bands, bits;
    VipsInterpretation interpretation;
    int orientation; /* stored tag, 0 for none */
    int exif;        /* preprocess with apply_exif_orientation */
    int fast;        /* 0, or fast mode with the JPEG shrink factor it must pick
                        (largest of 2, 4, 8 keeping both sides >= 6 * 224 = 1344);
                        PIL has no fast mode: the reference is the same */
} parity_case;

static float *read_floats(const char *path, size_t n)
{
    size_t got;
    char *data = tu_read_file(path, &got);
    if (!data || got != n * sizeof(float))
        fail_msg("%s: expected %zu float32 values", path, n);
    float *values = malloc(n * sizeof(float));
    memcpy(values, data, n * sizeof(float)); /* the test hosts are little-endian, as the format */
    free(data);
    return values;
}

static void test_pil_parity(void **state)
{
    (void)state;
    if (!tu_python_has("PIL, numpy")) {
        printf("SKIP PIL parity: %s cannot import PIL and numpy (apt-get install python3-pil python3-numpy)\n",
               tu_python());
        skip();
    }
    static parity_case cases[64];
    size_t n = 0;
    static const int sizes[][2] = {{100, 80}, {224, 224}, {500, 375}, {1024, 1024}, {37, 300}, {3000, 2000}};
    for (size_t i = 0; i < 6; i++) {
        static char names[12][64];
        snprintf(names[2 * i], 64, "p_rgb_%dx%d.png[compression=1]", sizes[i][0], sizes[i][1]);
        snprintf(names[2 * i + 1], 64, "p_rgb_%dx%d.jpg[Q=90]", sizes[i][0], sizes[i][1]);
        cases[n++] = (parity_case){names[2 * i], sizes[i][0], sizes[i][1], 3, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 0};
        cases[n++] = (parity_case){names[2 * i + 1], sizes[i][0], sizes[i][1], 3, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 0};
    }
    static const parity_case modes[] = {
        {"p_grey.png", 500, 375, 1, 8, VIPS_INTERPRETATION_B_W, 0, 0, 0},
        {"p_grey.jpg", 1024, 1024, 1, 8, VIPS_INTERPRETATION_B_W, 0, 0, 0},
        {"p_grey_alpha.png", 37, 300, 2, 8, VIPS_INTERPRETATION_B_W, 0, 0, 0},
        {"p_rgba.png", 100, 80, 4, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 0},
        {"p_palette.png[palette]", 500, 375, 3, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 0},
        {"p_grey16.png[bitdepth=16]", 1024, 1024, 1, 16, VIPS_INTERPRETATION_GREY16, 0, 0, 0},
        {"p_grey_alpha16.png[bitdepth=16]", 300, 200, 2, 16, VIPS_INTERPRETATION_GREY16, 0, 0, 0},
        {"p_rgb16.png[bitdepth=16]", 100, 80, 3, 16, VIPS_INTERPRETATION_RGB16, 0, 0, 0},
        {"p_rgba16.png[bitdepth=16]", 224, 224, 4, 16, VIPS_INTERPRETATION_RGB16, 0, 0, 0},
        {"p_grey16.tif", 37, 300, 1, 16, VIPS_INTERPRETATION_GREY16, 0, 0, 0},
        {"p_rgb16.tif", 500, 375, 3, 16, VIPS_INTERPRETATION_RGB16, 0, 0, 0},
        {"p_grey.tif[compression=lzw]", 1024, 1024, 1, 8, VIPS_INTERPRETATION_B_W, 0, 0, 0},
        {"p_cmyk.jpg", 500, 375, 4, 8, VIPS_INTERPRETATION_CMYK, 0, 0, 0},
        {"p_cmyk.tif", 224, 224, 4, 8, VIPS_INTERPRETATION_CMYK, 0, 0, 0},
        {"p_lossy.webp", 500, 375, 3, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 0},
        {"p_rgba.webp[lossless]", 224, 224, 4, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 0},
        {"p_rgb.gif", 500, 375, 3, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 0},
        {"p_or6.jpg", 500, 375, 3, 8, VIPS_INTERPRETATION_sRGB, 6, 0, 0},
        {"p_or6_exif.jpg", 500, 375, 3, 8, VIPS_INTERPRETATION_sRGB, 6, 1, 0},
        {"p_or8.tif", 100, 80, 3, 8, VIPS_INTERPRETATION_sRGB, 8, 0, 0},
        {"p_or8_exif.tif", 100, 80, 3, 8, VIPS_INTERPRETATION_sRGB, 8, 1, 0},
        {"p_or3_exif.webp", 300, 200, 3, 8, VIPS_INTERPRETATION_sRGB, 3, 1, 0},
        {"p_or5_exif.jpg", 37, 300, 1, 8, VIPS_INTERPRETATION_B_W, 5, 1, 0},
        {"p_fast.jpg", 4000, 3000, 3, 8, VIPS_INTERPRETATION_sRGB, 0, 0, 2},     /* 3000 / 4 < 1344 */
        {"p_fast_grey.jpg", 5400, 5400, 1, 8, VIPS_INTERPRETATION_B_W, 0, 0, 4}, /* 5400 / 8 < 1344 */
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        cases[n++] = modes[i];

    char *paths[64];
    char command[2][65536];
    int used[2];
    for (int e = 0; e < 2; e++)
        used[e] = snprintf(command[e], sizeof command[e], "'%s' tests/reference/pil_preprocess.py --size %d%s", tu_python(),
                           S, e ? " --exif-orientation" : "");
    for (size_t i = 0; i < n; i++) {
        const parity_case *c = &cases[i];
        picture p = {c->width, c->height, c->bands, c->bits, c->interpretation, NULL};
        VipsImage *image = picture_image(&p);
        if (c->orientation)
            vips_image_set_int(image, VIPS_META_ORIENTATION, c->orientation);
        paths[i] = save_image(image, c->name);
        g_object_unref(image);
        used[c->exif] += snprintf(command[c->exif] + used[c->exif], sizeof command[c->exif] - used[c->exif],
                                  " '%s' '%s.pil'", paths[i], paths[i]);
        assert_true(used[c->exif] < (int)sizeof command[0]);
    }
    for (int e = 0; e < 2; e++)
        if (tu_run(command[e]) != 0)
            fail_msg("the PIL reference failed: %s", command[e]);

    double worst_mean[2] = {0, 0}, worst_max[2] = {0, 0}; /* [fast] */
    int identical = 0, exact_cases = 0;
    for (size_t i = 0; i < n; i++) {
        const parity_case *c = &cases[i];
        img_options opts;
        img_options_default(&opts);
        opts.apply_exif_orientation = c->exif;
        opts.fast = c->fast != 0;
        img_info info;
        float *ours = preprocess_ok(paths[i], &opts, &info);
        char pil_path[4200];
        snprintf(pil_path, sizeof pil_path, "%s.pil", paths[i]);
        float *pil = read_floats(pil_path, 3 * PLANE);
        double sum = 0, max = 0;
        for (size_t k = 0; k < 3 * PLANE; k++) {
            double d = fabs((double)ours[k] - pil[k]);
            sum += d;
            max = d > max ? d : max;
        }
        double mean = sum / (3 * PLANE);
        printf("    %-32s %4dx%-4d %d band %2d-bit%s%s: mean |diff| %.6f  max |diff| %.6f\n", c->name, c->width,
               c->height, c->bands, c->bits, c->exif ? " exif" : "", c->fast ? " fast" : "", mean, max);
        assert_int_equal(info.shrink, c->fast ? c->fast : 1);
        if (!(mean <= 0.005 && max <= 0.05))
            fail_msg("%s: mean %.6f (limit 0.005), max %.6f (limit 0.05) against PIL", c->name, mean, max);
        int mode = c->fast != 0;
        worst_mean[mode] = mean > worst_mean[mode] ? mean : worst_mean[mode];
        worst_max[mode] = max > worst_max[mode] ? max : worst_max[mode];
        exact_cases += !c->fast;
        identical += !c->fast && max == 0.0;
        free(ours);
        free(pil);
        free(paths[i]);
    }
    printf("    PIL parity, default mode: %d of %d images bit-identical; worst mean |diff| %.6f, worst max |diff| %.6f\n",
           identical, exact_cases, worst_mean[0], worst_max[0]);
    printf("    PIL parity, fast mode: worst mean |diff| %.6f, worst max |diff| %.6f (limits 0.005, 0.05)\n",
           worst_mean[1], worst_max[1]);
}

/* ---- the command ------------------------------------------------------- */

static void test_cli(void **state)
{
    (void)state;
    const char *bin = tu_radcap_bin();
    if (access(bin, X_OK) != 0) {
        printf("SKIP radcap preprocess: %s is not built\n", bin);
        skip();
    }
    picture p = {333, 222, 3, 8, VIPS_INTERPRETATION_sRGB, NULL};
    char *path = save_picture(&p, "cli.png");
    char out_path[4200], cmd[16384];
    snprintf(out_path, sizeof out_path, "%s/cli.f32", tmp_dir);
    snprintf(cmd, sizeof cmd, "'%s' preprocess '%s' --out '%s' --size 64", bin, path, out_path);
    assert_int_equal(tu_run(cmd), 0);
    img_options opts;
    img_options_default(&opts);
    opts.size = 64;
    float *lib = preprocess_ok(path, &opts, NULL);
    float *cli = read_floats(out_path, 3 * 64 * 64);
    assert_memory_equal(lib, cli, sizeof(float) * 3 * 64 * 64);
    free(lib);
    free(cli);

    snprintf(cmd, sizeof cmd, "'%s' preprocess --help >/dev/null", bin);
    assert_int_equal(tu_run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' preprocess '%s' 2>/dev/null", bin, path); /* no --out */
    assert_int_equal(tu_run(cmd), 2);
    snprintf(cmd, sizeof cmd, "'%s' preprocess '%s' --out '%s' --size 0 2>/dev/null", bin, path, out_path);
    assert_int_equal(tu_run(cmd), 2);
    snprintf(cmd, sizeof cmd, "'%s' preprocess '%s' --out '%s' --max-pixels 1000 2>/dev/null", bin, path, out_path);
    assert_int_equal(tu_run(cmd), 3);
    snprintf(cmd, sizeof cmd, "'%s' preprocess '%s/nothing.jpg' --out '%s' 2>/dev/null", bin, tmp_dir, out_path);
    assert_int_equal(tu_run(cmd), 3);
    free(path);
}

int main(int argc, char **argv)
{
    rc_error err = {{0}};
    if (img_system_init(argc > 0 ? argv[0] : "test_image", &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_the_cards),
        cmocka_unit_test(test_uniform_formats_and_modes),
        cmocka_unit_test(test_palette_png_is_palette),
        cmocka_unit_test(test_unresized_images_are_exact_per_pixel),
        cmocka_unit_test(test_stripes_resize_by_hand),
        cmocka_unit_test(test_multipage_tiff_uses_first_page),
        cmocka_unit_test(test_orientation),
        cmocka_unit_test(test_other_sizes),
        cmocka_unit_test(test_broken_files),
        cmocka_unit_test(test_pixel_limit),
        cmocka_unit_test(test_buffers_and_options),
        cmocka_unit_test(test_supported_extensions),
        cmocka_unit_test(test_parallel_matches_serial),
        cmocka_unit_test(test_pil_parity),
        cmocka_unit_test(test_cli),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    img_system_shutdown();
    return failed;
}
