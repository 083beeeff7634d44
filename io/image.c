/* image.c: libvips decoding + PIL-exact RGB conversion, resize and
 * normalisation. See image.h for the rules reproduced here. */
#include "io/image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <vips/vips.h>

/* ---- libvips set-up ---------------------------------------------------- */

/* libvips reports some decoder failures only as g_warning text, leaving
 * its error buffer empty (libpng's "Image width is zero in IHDR", for one).
 * Decoding runs in the calling thread (no libvips worker threads), so the
 * warnings a thread records between the start and the end of one call are
 * that image's: a per-thread buffer, cleared at the start of each call, is
 * how they reach the error message instead of stderr. This is the module's
 * only mutable state outside the caller's structures. */
static _Thread_local char decoder_warnings[512];

static void record_warning(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer user_data)
{
    (void)domain, (void)level, (void)user_data;
    size_t used = strlen(decoder_warnings);
    if (!message || strstr(decoder_warnings, message))
        return; /* libpng repeats itself */
    snprintf(decoder_warnings + used, sizeof decoder_warnings - used, "%s%s", used ? "; " : "", message);
}

int img_system_init(const char *argv0, rc_error *err)
{
    if (VIPS_INIT(argv0 ? argv0 : "radcap")) {
        char *text = vips_error_buffer_copy();
        rc_fail(err, "cannot start libvips: %s", text);
        g_free(text);
        return -1;
    }
    /* The cache would keep every decoded image's operation alive (up to 100
     * of them, with their file handles) for a hit that never comes: each
     * image is read once. */
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    /* We never start a libvips pipeline of worker threads (pixels are pulled
     * by the calling thread); this also keeps any libvips-internal sink from
     * competing with the caller's OpenMP threads. */
    vips_concurrency_set(1);
    /* Library code must not print: libvips' warnings go to record_warning,
     * and into the message of a call that fails. */
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, record_warning, NULL);
    return 0;
}

void img_system_shutdown(void)
{
    vips_shutdown();
}

void img_options_default(img_options *opts)
{
    *opts = (img_options){
        .size = 224,
        .mean = {0.485f, 0.456f, 0.406f},
        .std = {0.229f, 0.224f, 0.225f},
        .max_pixels = 100000000,
        .apply_exif_orientation = 0,
        .fast = 0,
    };
}

int img_has_supported_extension(const char *path)
{
    static const char *const extensions[] = {"jpg", "jpeg", "jpe", "png", "tif", "tiff", "webp", "gif"};
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/'))
        return 0;
    for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++)
        if (strcasecmp(dot + 1, extensions[i]) == 0)
            return 1;
    return 0;
}

/* Moves libvips' error text (or, when it left none, the decoder warnings
 * this thread recorded) into err after "name: what: ". libvips keeps one
 * error buffer for all threads, so when two images fail at the same instant
 * one message may carry both texts, or lose its libvips part to the other
 * thread; the path and `what` in front are always this image's own. */
static int fail_with_vips_error(rc_error *err, const char *name, const char *what)
{
    char *text = vips_error_buffer_copy();
    /* libvips ends each message with a newline: join them into one line */
    for (char *c = text; *c; c++)
        if (*c == '\n')
            *c = c[1] ? ' ' : '\0';
    const char *reason = *text ? text : decoder_warnings;
    rc_fail(err, "%s: %s%s%s", name, what, *reason ? ": " : "", reason);
    g_free(text);
    return -1;
}

/* ---- loaders ----------------------------------------------------------- */

typedef int (*source_loader_fn)(VipsSource *source, VipsImage **out, ...);

typedef struct loader_entry {
    const char *type_name;  /* what vips_foreign_find_load_source answers */
    const char *nickname;   /* for messages and img_info */
    source_loader_fn load;  /* called directly, so no other loader can run */
    int can_shrink;         /* accepts the "shrink" option (JPEG) */
    int pil_uprights;       /* PIL applies the orientation tag when it opens
                               such a file (TiffImagePlugin's load_end) */
} loader_entry;

/* The formats of the issue, and only them: libvips has many more loaders
 * (PDF, SVG, FITS, ImageMagick...) that a hostile archive must not reach. */
static const loader_entry loaders[] = {
    {"VipsForeignLoadJpegSource", "jpegload_source", vips_jpegload_source, 1, 0},
    {"VipsForeignLoadPngSource", "pngload_source", vips_pngload_source, 0, 0},
    {"VipsForeignLoadTiffSource", "tiffload_source", vips_tiffload_source, 0, 1},
    {"VipsForeignLoadWebpSource", "webpload_source", vips_webpload_source, 0, 0},
    {"VipsForeignLoadNsgifSource", "gifload_source", vips_gifload_source, 0, 0},
};

/* Names the supported format whose signature starts the data, or NULL: to
 * tell "not an image" from "a damaged image" when no loader accepts it. */
static const char *signature_format(VipsSource *source)
{
    unsigned char *head = NULL;
    gint64 n = vips_source_sniff_at_most(source, &head, 12);
    if (n < 0) {
        vips_error_clear();
        return NULL;
    }
    if (n >= 3 && memcmp(head, "\xff\xd8\xff", 3) == 0)
        return "JPEG";
    if (n >= 8 && memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "PNG";
    if (n >= 4 && (memcmp(head, "II*\0", 4) == 0 || memcmp(head, "MM\0*", 4) == 0 ||
                   memcmp(head, "II+\0", 4) == 0 || memcmp(head, "MM\0+", 4) == 0))
        return "TIFF";
    if (n >= 12 && memcmp(head, "RIFF", 4) == 0 && memcmp(head + 8, "WEBP", 4) == 0)
        return "WebP";
    if (n >= 6 && (memcmp(head, "GIF87a", 6) == 0 || memcmp(head, "GIF89a", 6) == 0))
        return "GIF";
    return NULL;
}

static const loader_entry *find_loader(VipsSource *source, const char *name, rc_error *err)
{
    const char *type_name = vips_foreign_find_load_source(source);
    if (!type_name) {
        vips_error_clear();
        const char *format = signature_format(source);
        if (format)
            rc_fail(err, "%s: starts like a %s file but libvips cannot open it (truncated or corrupt)", name,
                    format);
        else
            rc_fail(err, "%s: not an image in a recognised format", name);
        return NULL;
    }
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++)
        if (strcmp(type_name, loaders[i].type_name) == 0)
            return &loaders[i];
    const char *nickname = vips_nickname_find(g_type_from_name(type_name));
    rc_fail(err, "%s: format not supported (libvips would read it with %s; radcap accepts only JPEG, PNG, TIFF, WebP and GIF)",
            name, nickname ? nickname : type_name);
    return NULL;
}

/* Opens the image lazily: only the header is read here, pixels are decoded
 * when regions are prepared. fail_on=truncated makes a short file an error
 * instead of an image padded with grey, while tolerating the benign
 * warnings (extraneous bytes, unknown chunks) that PIL also tolerates. */
static VipsImage *open_image(VipsSource *source, const loader_entry *loader, VipsAccess access, int shrink,
                             const char *name, rc_error *err)
{
    VipsImage *image = NULL;
    int status = loader->can_shrink
        ? loader->load(source, &image, "access", access, "fail_on", VIPS_FAIL_ON_TRUNCATED, "shrink", shrink, NULL)
        : loader->load(source, &image, "access", access, "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
    if (status) {
        fail_with_vips_error(err, name, "cannot read the image header");
        return NULL;
    }
    return image;
}

/* ---- PIL's resampling coefficients ------------------------------------- */

enum { PRECISION_BITS = 32 - 8 - 2 }; /* PIL's fixed-point weights: 22 fraction bits */

/* PIL's convolution along one axis, for in_size -> out_size. */
typedef struct img_axis {
    int in_size, out_size;
    int taps;        /* weights stored per output (PIL's ksize) */
    int *first;      /* (out_size) first input index each output reads */
    int *count;      /* (out_size) number of inputs each output reads */
    int32_t *weight; /* (out_size, taps) fixed-point weights, first count used */
} img_axis;

static double triangle(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static void axis_free(img_axis *axis)
{
    free(axis->first);
    free(axis->count);
    free(axis->weight);
    memset(axis, 0, sizeof *axis);
}

/* PIL's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter
 * over the full box (0, in_size). The arithmetic, including the box edge
 * held as a float and the rounding of the bounds, follows PIL's so that the
 * integer weights are the same bits. */
static int axis_init(img_axis *axis, int in_size, int out_size, rc_error *err)
{
    memset(axis, 0, sizeof *axis);
    axis->in_size = in_size;
    axis->out_size = out_size;
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale; /* the triangle's support is 1 */
    double taps = ceil(support) * 2 + 1;
    if (taps * out_size > (double)(SIZE_MAX / sizeof(double)) || taps > INT_MAX)
        return rc_fail(err, "resize from %d to %d pixels needs too many filter weights", in_size, out_size);
    axis->taps = (int)taps;
    axis->first = malloc(sizeof(int) * (size_t)out_size);
    axis->count = malloc(sizeof(int) * (size_t)out_size);
    axis->weight = calloc((size_t)out_size * (size_t)axis->taps, sizeof(int32_t));
    double *w = malloc(sizeof(double) * (size_t)axis->taps);
    if (!axis->first || !axis->count || !axis->weight || !w) {
        free(w);
        axis_free(axis);
        return rc_fail(err, "out of memory for %d x %d resize weights", out_size, (int)taps);
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = triangle((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = &axis->weight[(size_t)xx * axis->taps];
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            /* bilinear weights are never negative: PIL's rounding for v >= 0 */
            k[x] = (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        axis->first[xx] = xmin;
        axis->count[xx] = xmax > 0 ? xmax : 0;
    }
    free(w);
    return 0;
}

/* PIL's clip8: a fixed-point sum (with its 0.5 rounding term) to 0..255. */
static uint8_t clip8(int64_t sum)
{
    if (sum >= ((int64_t)256 << PRECISION_BITS))
        return 255;
    if (sum <= 0)
        return 0;
    return (uint8_t)(sum >> PRECISION_BITS);
}

/* ---- the streaming resizer --------------------------------------------- */

/* Receives the RGB rows of the image top to bottom and leaves the resized
 * 8-bit image in rgb. PIL resizes the whole image horizontally into a
 * temporary 8-bit image, then vertically; here each horizontally resized
 * row is added at once into the sums of the output rows it contributes to,
 * which is the same integer arithmetic without keeping the temporary. */
typedef struct img_resizer {
    int size;         /* output side */
    int resize_x;     /* PIL's need_horizontal: width differs from size */
    int resize_y;     /* PIL's need_vertical: height differs from size */
    img_axis x, y;    /* coefficients per axis (used when resize_x / resize_y) */
    int rows_needed;  /* input rows [0, rows_needed) contribute to the output */
    int lowest_open;  /* lowest output row that may still receive input rows */
    uint8_t *row;     /* (size, 3) one horizontally resized row */
    int64_t *sum;     /* (size, size, 3) vertical pass sums, when resize_y */
    uint8_t *rgb;     /* (size, size, 3) the resized image */
} img_resizer;

static void resizer_free(img_resizer *rs)
{
    axis_free(&rs->x);
    axis_free(&rs->y);
    free(rs->row);
    free(rs->sum);
    free(rs->rgb);
    memset(rs, 0, sizeof *rs);
}

static int resizer_init(img_resizer *rs, int width, int height, int size, rc_error *err)
{
    memset(rs, 0, sizeof *rs);
    rs->size = size;
    rs->resize_x = width != size;
    rs->resize_y = height != size;
    rs->rows_needed = height;
    size_t plane = (size_t)size * size * 3;
    if ((rs->resize_x && axis_init(&rs->x, width, size, err)) ||
        (rs->resize_y && axis_init(&rs->y, height, size, err))) {
        resizer_free(rs);
        return -1;
    }
    if (rs->resize_y) {
        /* rows below the last output's window are never read (PIL's ybox_last) */
        rs->rows_needed = rs->y.first[size - 1] + rs->y.count[size - 1];
        rs->sum = malloc(sizeof(int64_t) * plane);
        if (rs->sum)
            for (size_t i = 0; i < plane; i++)
                rs->sum[i] = (int64_t)1 << (PRECISION_BITS - 1);
    }
    rs->row = malloc((size_t)size * 3);
    rs->rgb = malloc(plane);
    if (!rs->row || !rs->rgb || (rs->resize_y && !rs->sum)) {
        resizer_free(rs);
        return rc_fail(err, "out of memory for a %dx%d resize buffer", size, size);
    }
    return 0;
}

/* PIL's ImagingResampleHorizontal_8bpc for one RGB row. */
static void resize_row(const img_axis *axis, const uint8_t *in, uint8_t *out)
{
    for (int xx = 0; xx < axis->out_size; xx++) {
        const int32_t *k = &axis->weight[(size_t)xx * axis->taps];
        const uint8_t *p = in + (size_t)axis->first[xx] * 3;
        int64_t s0 = (int64_t)1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int i = 0; i < axis->count[xx]; i++, p += 3) {
            s0 += (int64_t)p[0] * k[i];
            s1 += (int64_t)p[1] * k[i];
            s2 += (int64_t)p[2] * k[i];
        }
        out[xx * 3 + 0] = clip8(s0);
        out[xx * 3 + 1] = clip8(s1);
        out[xx * 3 + 2] = clip8(s2);
    }
}

/* Takes input row y (width RGB pixels); rows must come in order. */
static void resizer_push_row(img_resizer *rs, int y, const uint8_t *rgb_row)
{
    const uint8_t *row = rgb_row;
    if (rs->resize_x) {
        resize_row(&rs->x, rgb_row, rs->row);
        row = rs->row;
    }
    size_t stride = (size_t)rs->size * 3;
    if (!rs->resize_y) {
        memcpy(rs->rgb + (size_t)y * stride, row, stride);
        return;
    }
    /* Output rows read contiguous input windows whose ends never decrease,
     * so the rows that use input row y are a run starting at lowest_open. */
    const img_axis *ay = &rs->y;
    while (rs->lowest_open < rs->size && ay->first[rs->lowest_open] + ay->count[rs->lowest_open] <= y)
        rs->lowest_open++;
    for (int yy = rs->lowest_open; yy < rs->size && ay->first[yy] <= y; yy++) {
        int32_t k = ay->weight[(size_t)yy * ay->taps + (y - ay->first[yy])];
        int64_t *sum = rs->sum + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++)
            sum[i] += (int64_t)row[i] * k;
    }
}

static void resizer_finish(img_resizer *rs)
{
    if (rs->resize_y) {
        size_t plane = (size_t)rs->size * rs->size * 3;
        for (size_t i = 0; i < plane; i++)
            rs->rgb[i] = clip8(rs->sum[i]);
    }
}

/* ---- decoded samples to RGB, as PIL's convert('RGB') ------------------- */

typedef struct img_layout {
    int width, bands;
    int bits; /* 8 or 16 */
    int cmyk;
} img_layout;

/* PIL's cmyk2rgb: (255 - c) * (255 - k) / 255 rounded to nearest (the
 * quotient is never exactly half-way since 255 is odd). */
static uint8_t cmyk_to_rgb(unsigned c, unsigned k)
{
    return (uint8_t)((2 * (255 - c) * (255 - k) + 255) / 510);
}

/* One decoded row (native-endian samples, bands interleaved) to RGB8.
 * Returns the RGB row: dst, or src itself when it already is 8-bit RGB.
 * narrow is scratch for width * bands bytes, used for 16-bit rows. */
static const uint8_t *row_to_rgb(const img_layout *lay, const void *src, uint8_t *narrow, uint8_t *dst)
{
    const uint8_t *s = src;
    size_t n = (size_t)lay->width * lay->bands;
    if (lay->bits == 16) {
        const uint16_t *s16 = src;
        for (size_t i = 0; i < n; i++)
            narrow[i] = (uint8_t)(s16[i] >> 8);
        s = narrow;
    }
    int bands = lay->bands;
    if (bands == 3)
        return s;
    if (bands <= 2) { /* grey (+ alpha) */
        for (int x = 0; x < lay->width; x++)
            dst[x * 3 + 0] = dst[x * 3 + 1] = dst[x * 3 + 2] = s[x * bands];
    } else if (lay->cmyk) { /* CMYK (+ alpha) */
        for (int x = 0; x < lay->width; x++, s += bands) {
            dst[x * 3 + 0] = cmyk_to_rgb(s[0], s[3]);
            dst[x * 3 + 1] = cmyk_to_rgb(s[1], s[3]);
            dst[x * 3 + 2] = cmyk_to_rgb(s[2], s[3]);
        }
    } else { /* RGBA */
        for (int x = 0; x < lay->width; x++, s += 4) {
            dst[x * 3 + 0] = s[0];
            dst[x * 3 + 1] = s[1];
            dst[x * 3 + 2] = s[2];
        }
    }
    return dst;
}

/* Checks the decoded layout is one we convert, filling lay. */
static int layout_of(VipsImage *image, img_layout *lay, const char *name, rc_error *err)
{
    VipsBandFormat format = vips_image_get_format(image);
    lay->width = vips_image_get_width(image);
    lay->bands = vips_image_get_bands(image);
    lay->bits = format == VIPS_FORMAT_UCHAR ? 8 : format == VIPS_FORMAT_USHORT ? 16 : 0;
    lay->cmyk = vips_image_get_interpretation(image) == VIPS_INTERPRETATION_CMYK && lay->bands >= 4;
    if (!lay->bits)
        return rc_fail(err, "%s: unsupported sample format '%s' (only 8 and 16-bit unsigned integers)", name,
                       vips_enum_nick(VIPS_TYPE_BAND_FORMAT, format));
    if (lay->bands < 1 || lay->bands > 5 || (lay->bands == 5 && !lay->cmyk))
        return rc_fail(err, "%s: unsupported number of bands (%d)", name, lay->bands);
    return 0;
}

/* ---- the pipeline ------------------------------------------------------ */

/* Pulls image's rows through row_to_rgb into the resizer, a strip at a
 * time, in the calling thread. */
static int stream_rows(VipsImage *image, const img_layout *lay, img_resizer *rs, const char *name,
                       rc_error *err)
{
    size_t row_bytes = VIPS_IMAGE_SIZEOF_LINE(image);
    /* strips of about 1 MB keep per-call memory small for wide images */
    int strip = (int)VIPS_CLIP(1, (1 << 20) / (row_bytes ? row_bytes : 1), 64);
    uint8_t *rgb_row = malloc((size_t)lay->width * 3);
    uint8_t *narrow = malloc((size_t)lay->width * lay->bands);
    VipsRegion *region = vips_region_new(image);
    int status = 0;
    if (!rgb_row || !narrow || !region) {
        status = region ? rc_fail(err, "%s: out of memory for a %d-pixel row", name, lay->width)
                        : fail_with_vips_error(err, name, "cannot read pixels");
        goto done;
    }
    for (int top = 0; top < rs->rows_needed; top += strip) {
        VipsRect rect = {0, top, lay->width, VIPS_MIN(strip, rs->rows_needed - top)};
        if (vips_region_prepare(region, &rect)) {
            status = fail_with_vips_error(err, name, "cannot decode the image");
            goto done;
        }
        for (int y = rect.top; y < rect.top + rect.height; y++) {
            resizer_push_row(rs, y, row_to_rgb(lay, VIPS_REGION_ADDR(region, 0, y), narrow, rgb_row));
        }
    }
done:
    if (region)
        g_object_unref(region);
    free(rgb_row);
    free(narrow);
    return status;
}

/* ToTensor + Normalize, in float32 with PyTorch's order of operations,
 * through one table per channel. */
static void normalise(const img_options *opts, const uint8_t *rgb, float *out)
{
    float table[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            table[c][v] = ((float)v / 255.0f - opts->mean[c]) / opts->std[c];
    size_t plane = (size_t)opts->size * opts->size;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            out[c * plane + i] = table[c][rgb[i * 3 + c]];
}

static int check_options(const img_options *opts, const char *name, rc_error *err)
{
    if (!opts || opts->size < 1 || opts->size > IMG_MAX_SIZE)
        return rc_fail(err, "%s: output size must be between 1 and %d", name, IMG_MAX_SIZE);
    if (opts->max_pixels < 1)
        return rc_fail(err, "%s: the pixel limit must be positive", name);
    for (int c = 0; c < 3; c++)
        if (!(opts->std[c] != 0.0f) || !isfinite(opts->std[c]) || !isfinite(opts->mean[c]))
            return rc_fail(err, "%s: normalisation mean/std must be finite and std non-zero", name);
    return 0;
}

/* The largest JPEG shrink-on-load factor that keeps both sides at least
 * 6 * size. libjpeg's DCT-domain scaling is not PIL's filter; with the
 * antialiasing filter still averaging 6 or more decoded pixels per output
 * pixel the difference stays inside the parity bounds (at 4 * size it
 * exceeded the mean bound on noisy test pictures). */
static int fast_shrink(int width, int height, int size)
{
    for (int shrink = 8; shrink > 1; shrink /= 2)
        if ((int64_t)width >= (int64_t)6 * size * shrink && (int64_t)height >= (int64_t)6 * size * shrink)
            return shrink;
    return 1;
}

static int orientation_of(VipsImage *image)
{
    int orientation = 1;
    if (vips_image_get_typeof(image, VIPS_META_ORIENTATION) &&
        vips_image_get_int(image, VIPS_META_ORIENTATION, &orientation))
        vips_error_clear();
    return orientation >= 1 && orientation <= 8 ? orientation : 1;
}

/* Replaces *image by the version that the next stage reads: reopened with
 * random access and turned upright when the orientation applies (asked
 * for, or a TIFF, which PIL always turns upright on open), or reopened
 * with a shrink factor in fast mode. */
static int prepare_for_reading(VipsSource *source, const loader_entry *loader, const img_options *opts,
                               img_info *info, VipsImage **image, const char *name, rc_error *err)
{
    if ((opts->apply_exif_orientation || loader->pil_uprights) && info->orientation != 1) {
        /* rotations read the image out of order: sequential access cannot */
        g_object_unref(*image);
        if (!(*image = open_image(source, loader, VIPS_ACCESS_RANDOM, 1, name, err)))
            return -1;
        VipsImage *upright;
        if (vips_autorot(*image, &upright, NULL))
            return fail_with_vips_error(err, name, "cannot apply the EXIF orientation");
        g_object_unref(*image);
        *image = upright;
    } else if (opts->fast && loader->can_shrink) {
        info->shrink = fast_shrink(info->width, info->height, opts->size);
        if (info->shrink > 1) {
            g_object_unref(*image);
            if (!(*image = open_image(source, loader, VIPS_ACCESS_SEQUENTIAL, info->shrink, name, err)))
                return -1;
        }
    }
    return 0;
}

static int preprocess_source(VipsSource *source, const char *name, const img_options *opts, float *out,
                             img_info *info, rc_error *err)
{
    decoder_warnings[0] = '\0';
    const loader_entry *loader = find_loader(source, name, err);
    if (!loader)
        return -1;
    snprintf(info->loader, sizeof info->loader, "%s", loader->nickname);
    VipsImage *image = open_image(source, loader, VIPS_ACCESS_SEQUENTIAL, 1, name, err);
    if (!image)
        return -1;

    int status = -1;
    img_resizer rs = {0};
    img_layout lay;
    info->width = vips_image_get_width(image);
    info->height = vips_image_get_height(image);
    info->bands = vips_image_get_bands(image);
    info->orientation = orientation_of(image);
    info->shrink = 1;
    if (info->width <= 0 || info->height <= 0) {
        rc_fail(err, "%s: image has a zero dimension (%d x %d)", name, info->width, info->height);
        goto done;
    }
    int64_t pixels = (int64_t)info->width * info->height;
    if (pixels > opts->max_pixels) {
        rc_fail(err, "%s: %d x %d = %lld pixels exceeds the limit of %lld pixels (not decoded)", name, info->width,
                info->height, (long long)pixels, (long long)opts->max_pixels);
        goto done;
    }
    if (layout_of(image, &lay, name, err))
        goto done;
    info->bits = lay.bits;
    info->cmyk = lay.cmyk;
    if (prepare_for_reading(source, loader, opts, info, &image, name, err) ||
        layout_of(image, &lay, name, err) ||
        resizer_init(&rs, vips_image_get_width(image), vips_image_get_height(image), opts->size, err) ||
        stream_rows(image, &lay, &rs, name, err))
        goto done;
    resizer_finish(&rs);
    normalise(opts, rs.rgb, out);
    status = 0;
done:
    resizer_free(&rs);
    if (image) /* NULL when a reopen failed */
        g_object_unref(image);
    return status;
}

int img_preprocess_buffer(const void *data, size_t size, const char *name, const img_options *opts,
                          float *out, img_info *info, rc_error *err)
{
    img_info local;
    info = info ? info : &local;
    memset(info, 0, sizeof *info);
    name = name ? name : "memory buffer";
    if (check_options(opts, name, err))
        return -1;
    if (!data || size == 0)
        return rc_fail(err, "%s: empty buffer (0 bytes), not an image", name);
    VipsSource *source = vips_source_new_from_memory(data, size);
    if (!source)
        return fail_with_vips_error(err, name, "cannot read the buffer");
    int status = preprocess_source(source, name, opts, out, info, err);
    g_object_unref(source);
    return status;
}

int img_preprocess_file(const char *path, const img_options *opts, float *out, img_info *info, rc_error *err)
{
    img_info local;
    info = info ? info : &local;
    memset(info, 0, sizeof *info);
    if (check_options(opts, path, err))
        return -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return rc_fail(err, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return rc_fail(err, "%s: is a directory, not an image", path);
    if (S_ISREG(st.st_mode) && st.st_size == 0)
        return rc_fail(err, "%s: empty file (0 bytes), not an image", path);
    VipsSource *source = vips_source_new_from_file(path);
    if (!source)
        return fail_with_vips_error(err, path, "cannot open");
    int status = preprocess_source(source, path, opts, out, info, err);
    g_object_unref(source);
    return status;
}

int img_pack_batch(float *pixels, size_t image_floats, const int *ok, int n, int *order)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        if (kept != i)
            memcpy(pixels + (size_t)kept * image_floats, pixels + (size_t)i * image_floats,
                   sizeof(float) * image_floats);
        order[kept++] = i;
    }
    return kept;
}
