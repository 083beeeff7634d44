/* Tests of the synthetic archive generator (io/synth.h) and `radcap synth`.
 *
 * What is checked against something other than the generator itself:
 *   - findings are where and what the caption says: each scene is drawn with
 *     and without its findings (same noise), and the difference must be
 *     exactly zero away from the findings, clearly non-zero inside each one,
 *     of the sign the caption's words claim (hypodense, sclerotic, ...), of
 *     the stated size (measured across the drawn blob), on the stated side
 *     (radiological convention: the patient's right is the image's left);
 *   - arrows are drawn exactly when the caption has "(arrow)";
 *   - the CSV is read back by a separate RFC 4180 reader written here;
 *   - every image is decoded by libvips and compared with the drawn pixels
 *     (exactly for PNG and TIFF, within JPEG's loss for JPEG), at the
 *     planned size, band count, bit depth and format;
 *   - broken rows are what they claim, checked on the bytes and by libvips;
 *   - the same options give byte-identical archives, other seeds do not.
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include <vips/vips.h>

#include "io/synth.h"
#include "tests/helpers/testutil.h"

/* ---- A small RFC 4180 reader, independent of io/csv.c ---- */

typedef struct csv_table {
    char **cells; // (n_rows, n_cols) row-major, malloc'd strings
    int n_rows, n_cols;
} csv_table;

/* Parses text (LF or CRLF records, quoted fields with "" escapes). Every
 * record must have the first record's number of fields; returns -1 if not,
 * or on a malformed quote. */
static int csv_parse(const char *text, size_t len, csv_table *t)
{
    memset(t, 0, sizeof *t);
    size_t cap = 64, n = 0, pos = 0;
    t->cells = malloc(cap * sizeof *t->cells);
    int fields_in_row = 0;
    while (pos < len) {
        char *field = malloc(len - pos + 1);
        size_t flen = 0;
        if (text[pos] == '"') {
            pos++;
            for (;;) {
                if (pos >= len)
                    return -1; /* unterminated quote */
                if (text[pos] == '"') {
                    if (pos + 1 < len && text[pos + 1] == '"') {
                        field[flen++] = '"';
                        pos += 2;
                        continue;
                    }
                    pos++;
                    break;
                }
                field[flen++] = text[pos++];
            }
        } else {
            while (pos < len && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r') {
                if (text[pos] == '"')
                    return -1; /* a quote inside an unquoted field: the writer should have quoted */
                field[flen++] = text[pos++];
            }
        }
        field[flen] = '\0';
        if (n == cap)
            t->cells = realloc(t->cells, (cap *= 2) * sizeof *t->cells);
        t->cells[n++] = field;
        fields_in_row++;
        if (pos < len && text[pos] == ',') {
            pos++;
            continue;
        }
        if (pos < len && text[pos] == '\r')
            pos++;
        if (pos < len && text[pos] != '\n')
            return -1; /* text after a closing quote */
        pos++;
        if (t->n_cols == 0)
            t->n_cols = fields_in_row;
        if (fields_in_row != t->n_cols)
            return -1;
        t->n_rows++;
        fields_in_row = 0;
    }
    return fields_in_row == 0 ? 0 : -1;
}

static void csv_table_free(csv_table *t)
{
    for (int i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i]);
    free(t->cells);
}

/* ---- Helpers ---- */

static float *draw(const synth_scene *sc, float *annotation)
{
    float *image = malloc(sizeof(float) * sc->width * sc->height);
    rc_error err = {{0}};
    assert_int_equal(synth_scene_draw(sc, image, annotation, &err), 0);
    return image;
}

/* The caption's first sentence: up to the first period followed by a space
 * or line break (periods inside numbers such as 2.5 are not followed by one). */
static void first_sentence(const char *caption, char *out, size_t size)
{
    snprintf(out, size, "%s", caption);
    for (char *p = out; *p; p++)
        if (p[0] == '.' && (p[1] == ' ' || p[1] == '\n')) {
            p[1] = '\0';
            break;
        }
}

static int has_any(const char *text, const char *const *words)
{
    for (; *words; words++)
        if (strcasestr(text, *words))
            return 1;
    return 0;
}

/* Finds the first size stated in text: "2.5-cm", "2.5 cm", "25-mm", "25 mm",
 * "3.1 x 2.2 cm" (or with U+00D7). Returns the number of sizes found (0, 1
 * or 2) with millimetres in mm[]. */
static int stated_size(const char *text, int mm[2])
{
    for (const char *p = text; *p; p++) {
        /* A number starts here, not inside "T2" or "2.5". */
        const int digit = *p >= '0' && *p <= '9';
        const int inside = p > text && (p[-1] == 'T' || (p[-1] >= '0' && p[-1] <= '9') || p[-1] == '.');
        if (!digit || inside)
            continue;
        char *end;
        const double a = strtod(p, &end);
        if (strncmp(end, "-cm", 3) == 0 || strncmp(end, " cm", 3) == 0) {
            mm[0] = (int)lrint(a * 10);
            return 1;
        }
        if (strncmp(end, "-mm", 3) == 0 || strncmp(end, " mm", 3) == 0) {
            mm[0] = (int)lrint(a);
            return 1;
        }
        const char *sep = strncmp(end, " x ", 3) == 0 ? end + 3 : strncmp(end, " \xc3\x97 ", 4) == 0 ? end + 4 : NULL;
        if (sep) {
            const double b = strtod(sep, &end);
            if (strncmp(end, " cm", 3) == 0) {
                mm[0] = (int)lrint(a * 10);
                mm[1] = (int)lrint(b * 10);
                return 2;
            }
        }
    }
    return 0;
}

/* ---- Scenes ---- */

static void test_phantom_deterministic(void **state)
{
    (void)state;
    enum { W = 96, H = 80 };
    uint8_t a[W * H], b[W * H], c[W * H];
    char ca[SYNTH_CAPTION_MAX], cb[SYNTH_CAPTION_MAX], cc[SYNTH_CAPTION_MAX];
    rc_error err = {{0}};
    int differing = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        rng_state r;
        rng_seed(&r, seed);
        assert_int_equal(synth_phantom(&r, W, H, a, ca, sizeof ca, NULL, &err), 0);
        rng_seed(&r, seed);
        assert_int_equal(synth_phantom(&r, W, H, b, cb, sizeof cb, NULL, &err), 0);
        assert_memory_equal(a, b, sizeof a);
        assert_string_equal(ca, cb);
        rng_seed(&r, seed + 1000);
        assert_int_equal(synth_phantom(&r, W, H, c, cc, sizeof cc, NULL, &err), 0);
        differing += memcmp(a, c, sizeof a) != 0;
        /* Not flat: a phantom has structure and noise. */
        int lo = 255, hi = 0;
        for (int i = 0; i < W * H; i++)
            lo = a[i] < lo ? a[i] : lo, hi = a[i] > hi ? a[i] : hi;
        assert_true(hi - lo > 100);
    }
    assert_int_equal(differing, 20);
}

static void test_phantom_errors(void **state)
{
    (void)state;
    uint8_t px[64 * 64];
    char caption[8];
    rc_error err = {{0}};
    rng_state r;
    rng_seed(&r, 5);
    assert_int_equal(synth_phantom(&r, 8, 64, px, caption, sizeof caption, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "8x64"));
    /* A caption buffer of 8 bytes is too small for any caption. */
    assert_int_equal(synth_phantom(&r, 64, 64, px, caption, sizeof caption, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "does not fit"));
}

/* Draws many scenes with and without their findings and checks each
 * finding against the caption. */
static void test_findings_match_captions(void **state)
{
    (void)state;
    static const char *const dark_words[] = {"hypodense", "hypointense", "lucent", "lytic", "low attenuation",
                                              "low-attenuation", NULL};
    static const char *const bright_words[] = {"hyperdense", "hyperintense", "sclerotic", "calcif", "enhancing",
                                               "hemorrhage", "hematoma", "stone", "calculus", "nodule", "mass",
                                               "opacity", NULL};
    enum { W = 160, H = 144, N_SCENES = 160 };
    int seen_study[SYNTH_N_STUDIES] = {0}, checked_sign = 0, checked_size = 0, checked_extent = 0;
    int lesions_total = 0, arrows_total = 0, normals = 0;
    float *annotation = malloc(sizeof(float) * W * H);
    for (int k = 0; k < N_SCENES; k++) {
        rng_state r;
        rng_seed(&r, 777 + k);
        const unsigned flags = (k % 3 == 0 ? SYNTH_COLOUR : 0) | (k % 5 == 0 ? SYNTH_MESSY : 0);
        synth_scene sc;
        synth_scene_choose(&r, W, H, flags, &sc);
        char caption[SYNTH_CAPTION_MAX], sentence[SYNTH_CAPTION_MAX];
        rc_error err = {{0}};
        assert_true(synth_scene_caption(&sc, &r, caption, sizeof caption, &err) > 0);
        first_sentence(caption, sentence, sizeof sentence);
        seen_study[sc.study]++;
        normals += sc.n_lesions == 0;
        lesions_total += sc.n_lesions;

        float *with = draw(&sc, annotation);
        synth_scene bare = sc;
        bare.n_lesions = 0;
        float *without = draw(&bare, NULL);

        /* Away from every finding the two drawings are identical. */
        for (int j = 0; j < H; j++)
            for (int i = 0; i < W; i++) {
                int near = 0;
                for (int l = 0; l < sc.n_lesions; l++) {
                    const synth_lesion *le = &sc.lesions[l];
                    const double reach = 1.25 * fmax(le->rx, le->ry) + ceil(3 * sc.blur_sigma) + 3;
                    near |= hypot(i + 0.5 - le->cx, j + 0.5 - le->cy) < reach;
                }
                if (!near && with[j * W + i] != without[j * W + i])
                    fail_msg("scene %d (%s): pixel (%d, %d) changed away from the findings", k, caption, i, j);
            }

        int any_arrow = 0;
        for (int l = 0; l < sc.n_lesions; l++) {
            const synth_lesion *le = &sc.lesions[l];
            const char *site = synth_site_name(sc.study, le->site);
            assert_non_null(site);
            if (!strstr(caption, site))
                fail_msg("scene %d: caption '%s' does not name the site '%s'", k, caption, site);
            /* The patient's right is on the image's left. */
            if (strstr(site, "right"))
                assert_true(le->cx < sc.centre_x);
            if (strstr(site, "left"))
                assert_true(le->cx > sc.centre_x);
            if (sc.study == SYNTH_KNEE_XRAY) { /* the lateral side is the patient's outer side */
                const int right_knee = strcasestr(caption, "right knee") != NULL;
                assert_int_equal(right_knee, sc.flip == -1);
                if (strstr(site, "lateral"))
                    assert_true(right_knee ? le->cx < sc.centre_x : le->cx > sc.centre_x);
                if (strstr(site, "medial"))
                    assert_true(right_knee ? le->cx > sc.centre_x : le->cx < sc.centre_x);
            }

            /* Inside the finding the drawing clearly changed. */
            double max_change = 0, core_sum = 0;
            int core_n = 0;
            const double ca = cos(le->angle), sa = sin(le->angle);
            for (int j = 0; j < H; j++)
                for (int i = 0; i < W; i++) {
                    const double dx = i + 0.5 - le->cx, dy = j + 0.5 - le->cy;
                    const double ex = (dx * ca + dy * sa) / le->rx, ey = (-dx * sa + dy * ca) / le->ry;
                    const double q = sqrt(ex * ex + ey * ey), d = with[j * W + i] - without[j * W + i];
                    if (q <= 1)
                        max_change = fmax(max_change, fabs(d));
                    if (q <= 0.6 || (q <= 1 && le->shape == SYNTH_SPECK)) {
                        core_sum += d;
                        core_n++;
                    }
                }
            if (max_change < 0.25 * fabs(le->contrast))
                fail_msg("scene %d: finding %d (%s) changed the image by only %g", k, l, caption, max_change);

            if (le->has_arrow) {
                any_arrow = 1;
                arrows_total++;
                assert_true(hypot(le->arrow_tip[0] - le->cx, le->arrow_tip[1] - le->cy) > fmax(le->rx, le->ry));
                const int ti = (int)le->arrow_tip[0], tj = (int)le->arrow_tip[1];
                assert_true(annotation[tj * W + ti] > 0.5f);
            }

            const int plain = le->shape == SYNTH_SOLID || le->shape == SYNTH_SHARP || le->shape == SYNTH_SPECK;
            if (sc.n_lesions == 1 && plain && core_n > 0) {
                /* The words say which way the contrast goes. */
                const double mean = core_sum / core_n;
                if (has_any(sentence, dark_words)) {
                    if (!(mean < 0))
                        fail_msg("scene %d: '%s' but the finding is brighter (%g)", k, caption, mean);
                    checked_sign++;
                }
                if (has_any(sentence, bright_words)) {
                    if (!(mean > 0))
                        fail_msg("scene %d: '%s' but the finding is darker (%g)", k, caption, mean);
                    checked_sign++;
                }
            }
            if (sc.n_lesions == 1) {
                int mm[2] = {0, 0};
                const int n = stated_size(sentence, mm);
                if (n >= 1) {
                    assert_int_equal(mm[0], le->size_mm[0]);
                    if (n == 2)
                        assert_int_equal(mm[1], le->size_mm[1]);
                    else
                        assert_int_equal(le->size_mm[1], 0);
                    checked_size++;
                }
                /* The stated size is the drawn size: the width of the blob
                 * at half its contrast, across its centre, in millimetres. */
                if ((le->shape == SYNTH_SHARP || le->shape == SYNTH_SOLID) && le->size_mm[1] == 0 && le->rx >= 5) {
                    const int j = (int)le->cy, sign = le->contrast > 0 ? 1 : -1;
                    int width = 0;
                    for (int i = 0; i < W; i++)
                        width += sign * (with[j * W + i] - without[j * W + i]) >= 0.5 * fabs(le->contrast);
                    const double measured_mm = width * sc.mm_per_pixel;
                    if (fabs(measured_mm - le->size_mm[0]) > 2.5 * sc.mm_per_pixel + 0.1 * le->size_mm[0])
                        fail_msg("scene %d: '%s' states %d mm, the drawn blob is %.1f mm wide", k, caption,
                                 le->size_mm[0], measured_mm);
                    checked_extent++;
                }
            }
        }
        /* "(arrow)" exactly when an arrow is drawn; nothing drawn otherwise. */
        assert_int_equal(strstr(caption, "arrow") != NULL, any_arrow);
        if (!any_arrow)
            for (int i = 0; i < W * H; i++)
                assert_true(annotation[i] == 0.0f);
        if (strstr(caption, "yellow arrow"))
            assert_true(sc.arrow_rgb[0] > 0.9f && sc.arrow_rgb[1] > 0.8f && sc.arrow_rgb[2] < 0.5f);
        if (strstr(caption, "red arrow"))
            assert_true(sc.arrow_rgb[0] > 0.9f && sc.arrow_rgb[1] < 0.5f);
        if (strstr(caption, "green arrow"))
            assert_true(sc.arrow_rgb[1] > 0.8f && sc.arrow_rgb[0] < 0.5f);
        if (!(flags & SYNTH_MESSY))
            assert_null(strchr(caption, '\n'));
        free(with);
        free(without);
    }
    free(annotation);
    print_message("%d scenes, %d findings, %d arrows, %d normal; checked %d contrast words, %d stated sizes, "
                  "%d drawn extents\n",
                  N_SCENES, lesions_total, arrows_total, normals, checked_sign, checked_size, checked_extent);
    /* The loop really covered the ground. */
    for (int s = 0; s < SYNTH_N_STUDIES; s++)
        assert_true(seen_study[s] >= 5);
    assert_true(normals >= 10 && normals <= 60);
    assert_true(lesions_total >= 120);
    assert_true(arrows_total >= 40);
    assert_true(checked_sign >= 15);
    assert_true(checked_size >= 20);
    assert_true(checked_extent >= 10);
}

/* Captions vary: many distinct captions and a good vocabulary, so that
 * BLEU and CIDEr have something to measure. */
static void test_caption_variety(void **state)
{
    (void)state;
    enum { N = 300 };
    char *captions[N];
    int distinct = 0, with_decimal = 0, with_bracket = 0, normal = 0;
    for (int k = 0; k < N; k++) {
        rng_state r;
        rng_seed(&r, 4242 + k);
        synth_scene sc;
        synth_scene_choose(&r, 128, 128, 0, &sc);
        char caption[SYNTH_CAPTION_MAX];
        rc_error err = {{0}};
        assert_true(synth_scene_caption(&sc, &r, caption, sizeof caption, &err) > 0);
        assert_true(caption[0] >= 'A' && caption[0] <= 'Z');
        assert_int_equal(caption[strlen(caption) - 1], '.');
        /* "a" and "an" agree with the next word. */
        assert_null(strstr(caption, " a 8"));
        assert_null(strstr(caption, " a area"));
        assert_null(strstr(caption, " an 2"));
        captions[k] = strdup(caption);
        int seen = 0;
        for (int j = 0; j < k && !seen; j++)
            seen = strcmp(captions[j], caption) == 0;
        distinct += !seen;
        for (const char *p = caption; p[0] && p[1] && p[2]; p++)
            if (p[0] >= '0' && p[0] <= '9' && p[1] == '.' && p[2] >= '0' && p[2] <= '9') {
                with_decimal++;
                break;
            }
        with_bracket += strchr(caption, '(') != NULL;
        normal += sc.n_lesions == 0;
    }
    assert_true(distinct >= 0.9 * N);
    assert_true(with_decimal >= N / 5);
    assert_true(with_bracket >= N / 4);
    assert_true(normal >= N / 10);
    for (int k = 0; k < N; k++)
        free(captions[k]);
}

/* ---- Archives ---- */

static char *read_whole(const char *path, size_t *len)
{
    char *data = tu_read_file(path, len);
    if (!data)
        fail_msg("cannot read %s", path);
    return data;
}

static void make_archive(const synth_options *opt, const char *dir, synth_report *report)
{
    rc_error err = {{0}};
    if (synth_archive(opt, dir, report, &err) != 0)
        fail_msg("synth_archive: %s", err.msg);
}

/* Re-renders a planned row's scene and caption the way the archive does. */
static void replay_row(const synth_options *opt, const synth_entry *e, synth_scene *sc, char *caption, void **pixels)
{
    rng_state r;
    rng_seed(&r, e->scene_seed);
    synth_scene_choose(&r, e->width, e->height,
                       (e->pixel == SYNTH_RGB8 ? SYNTH_COLOUR : 0) | (opt->mixed ? SYNTH_MESSY : 0), sc);
    rc_error err = {{0}};
    assert_true(synth_scene_caption(sc, &r, caption, SYNTH_CAPTION_MAX, &err) > 0);
    if (pixels) {
        const size_t n = (size_t)e->width * e->height;
        float *image = malloc(sizeof(float) * n), *annotation = malloc(sizeof(float) * n);
        assert_int_equal(synth_scene_draw(sc, image, annotation, &err), 0);
        *pixels = malloc(n * synth_pixel_bytes(e->pixel));
        synth_compose(sc, image, annotation, e->pixel, *pixels);
        free(image);
        free(annotation);
    }
}

static int no_temporary_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int clean = 1;
    while ((de = readdir(d)) != NULL)
        clean &= strstr(de->d_name, ".tmp-") == NULL;
    closedir(d);
    return clean;
}

/* Checks one intact image file against its plan and its re-drawn pixels. */
static void check_intact_image(const char *path, const synth_entry *e, const void *expected)
{
    const char *loader = vips_foreign_find_load(path);
    if (!loader)
        fail_msg("%s: libvips does not recognise it", path);
    static const char *const loader_words[SYNTH_N_FORMATS] = {"Jpeg", "Png", "Tiff"};
    if (!strstr(loader, loader_words[e->format]))
        fail_msg("%s: loaded by %s", path, loader);
    VipsImage *im = vips_image_new_from_file(path, "fail_on", VIPS_FAIL_ON_WARNING, NULL);
    if (!im)
        fail_msg("%s: %s", path, vips_error_buffer());
    assert_int_equal(vips_image_get_width(im), e->width);
    assert_int_equal(vips_image_get_height(im), e->height);
    assert_int_equal(vips_image_get_bands(im), e->pixel == SYNTH_RGB8 ? 3 : 1);
    assert_int_equal(vips_image_get_format(im), e->pixel == SYNTH_GREY16 ? VIPS_FORMAT_USHORT : VIPS_FORMAT_UCHAR);
    size_t size = 0;
    void *decoded = vips_image_write_to_memory(im, &size);
    if (!decoded)
        fail_msg("%s: %s", path, vips_error_buffer());
    const size_t n = (size_t)e->width * e->height * synth_pixel_bytes(e->pixel);
    assert_int_equal(size, n);
    if (e->format == SYNTH_JPEG) {
        /* Lossy at quality 90: close on average, nowhere wildly off. */
        double sum = 0;
        int worst = 0;
        for (size_t i = 0; i < n; i++) {
            const int d = abs(((uint8_t *)decoded)[i] - ((const uint8_t *)expected)[i]);
            sum += d;
            worst = d > worst ? d : worst;
        }
        if (sum / n > 3.0 || worst > 80)
            fail_msg("%s: JPEG differs from the drawing by %.2f on average, %d at worst", path, sum / n, worst);
    } else if (memcmp(decoded, expected, n) != 0) {
        fail_msg("%s: lossless file differs from the drawn pixels", path);
    }
    g_free(decoded);
    g_object_unref(im);
}

static void check_broken_file(const char *dir, const char *path, const synth_entry *e)
{
    struct stat st;
    if (e->defect == SYNTH_MISSING) {
        /* No file under the ID with any extension. */
        DIR *d = opendir(dir);
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (strncmp(de->d_name, e->id, strlen(e->id)) == 0)
                fail_msg("%s: the missing row has a file %s", e->id, de->d_name);
        closedir(d);
        return;
    }
    assert_int_equal(stat(path, &st), 0);
    size_t len = 0;
    unsigned char *data = (unsigned char *)read_whole(path, &len);
    switch (e->defect) {
    case SYNTH_EMPTY: assert_int_equal(len, 0); break;
    case SYNTH_NOT_IMAGE:
        assert_memory_equal(data, "<!DOCTYPE html>", 15);
        assert_null(vips_foreign_find_load(path));
        vips_error_clear();
        break;
    case SYNTH_TRUNCATED: {
        /* A JPEG header (SOI), no end-of-image marker, header readable at
         * the planned size, pixels not decodable when truncation is an error. */
        assert_true(len > 200);
        assert_true(data[0] == 0xff && data[1] == 0xd8);
        assert_false(data[len - 2] == 0xff && data[len - 1] == 0xd9);
        VipsImage *im = vips_image_new_from_file(path, "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL);
        assert_non_null(im);
        assert_int_equal(vips_image_get_width(im), e->width);
        assert_int_equal(vips_image_get_height(im), e->height);
        double mean;
        assert_int_not_equal(vips_avg(im, &mean, NULL), 0);
        vips_error_clear();
        g_object_unref(im);
        break;
    }
    default: fail_msg("unexpected defect %d", e->defect);
    }
    free(data);
}

static void test_archive_layout_and_contents(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("synth-archive");
    synth_options opt;
    synth_options_default(&opt);
    opt.seed = 3;
    opt.count = 24;
    opt.broken = 5;
    opt.mixed = 1;
    opt.width = 96;
    opt.height = 80;
    assert_int_equal(synth_parse_formats("jpg,png,tif", &opt.formats, NULL), 0);
    synth_report rep;
    make_archive(&opt, dir, &rep);

    assert_int_equal(rep.n_entries, 29);
    assert_int_equal(rep.n_intact, 24);
    assert_int_equal(rep.n_defect[SYNTH_INTACT], 24);
    assert_int_equal(rep.n_defect[SYNTH_TRUNCATED], 2); /* the kinds take turns: 2, 1, 1, 1 */
    assert_int_equal(rep.n_defect[SYNTH_EMPTY], 1);
    assert_int_equal(rep.n_defect[SYNTH_NOT_IMAGE], 1);
    assert_int_equal(rep.n_defect[SYNTH_MISSING], 1);
    for (int f = 0; f < SYNTH_N_FORMATS; f++) /* formats take turns */
        assert_int_equal(rep.n_format[f], 8);
    assert_int_equal(rep.n_pixel[SYNTH_GREY8] + rep.n_pixel[SYNTH_GREY16] + rep.n_pixel[SYNTH_RGB8], 24);

    char csv_path[4096], image_dir[4096], path[8300];
    snprintf(csv_path, sizeof csv_path, "%s/valid_captions.csv", dir);
    snprintf(image_dir, sizeof image_dir, "%s/valid", dir);
    assert_string_equal(rep.csv_path, csv_path);
    assert_string_equal(rep.image_dir, image_dir);
    size_t len;
    char *text = read_whole(csv_path, &len);
    csv_table t;
    if (csv_parse(text, len, &t) != 0)
        fail_msg("%s is not valid RFC 4180", csv_path);
    assert_int_equal(t.n_cols, 2);
    assert_int_equal(t.n_rows, 30);
    assert_string_equal(t.cells[0], "ID");
    assert_string_equal(t.cells[1], "Caption");

    int sizes_vary = 0, broken_seen = 0, quoted_specials = 0;
    int pixels_seen[SYNTH_N_PIXELS] = {0};
    for (int i = 0; i < 29; i++) {
        synth_entry e;
        rc_error err = {{0}};
        assert_int_equal(synth_plan_entry(&opt, i, &e, &err), 0);
        char want_id[64];
        snprintf(want_id, sizeof want_id, "ROCOv2_2023_valid_%06d", i + 1);
        assert_string_equal(e.id, want_id);
        assert_string_equal(t.cells[2 * (i + 1)], want_id);
        synth_scene sc;
        char caption[SYNTH_CAPTION_MAX];
        void *pixels = NULL;
        replay_row(&opt, &e, &sc, caption, e.defect == SYNTH_INTACT ? &pixels : NULL);
        /* The caption survives the CSV byte for byte, quotes and line breaks included. */
        assert_string_equal(t.cells[2 * (i + 1) + 1], caption);
        quoted_specials += strpbrk(caption, ",\"\n") != NULL;
        snprintf(path, sizeof path, "%s/%s", image_dir, e.file_name);
        if (e.defect == SYNTH_INTACT) {
            /* Mixed sizes stay within 0.5x..1.5x of the base size. */
            assert_in_range(e.width, 48, 144);
            assert_in_range(e.height, 40, 120);
            sizes_vary += e.width != 96 || e.height != 80;
            pixels_seen[e.pixel]++;
            if (e.format == SYNTH_JPEG)
                assert_int_not_equal(e.pixel, SYNTH_GREY16);
            check_intact_image(path, &e, pixels);
            free(pixels);
        } else {
            broken_seen++;
            check_broken_file(image_dir, path, &e);
        }
    }
    assert_int_equal(broken_seen, 5);
    assert_true(sizes_vary >= 20);
    assert_true(quoted_specials >= 3);
    assert_true(pixels_seen[SYNTH_GREY8] > 0 && pixels_seen[SYNTH_GREY16] > 0 && pixels_seen[SYNTH_RGB8] > 0);
    assert_true(no_temporary_files(dir));
    assert_true(no_temporary_files(image_dir));
    csv_table_free(&t);
    free(text);
    free(dir);
}

/* Without --mixed every image has the requested size, is 8-bit grey, and
 * the formats take turns in the order jpg, png, tif. */
static void test_archive_plain(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("synth-plain");
    synth_options opt;
    synth_options_default(&opt);
    opt.count = 7;
    opt.width = 64;
    opt.height = 48;
    opt.formats = (1u << SYNTH_PNG) | (1u << SYNTH_TIFF);
    synth_report rep;
    make_archive(&opt, dir, &rep);
    assert_int_equal(rep.n_entries, 7);
    assert_int_equal(rep.n_format[SYNTH_PNG], 4);
    assert_int_equal(rep.n_format[SYNTH_TIFF], 3);
    assert_int_equal(rep.n_pixel[SYNTH_GREY8], 7);
    for (int i = 0; i < 7; i++) {
        synth_entry e;
        assert_int_equal(synth_plan_entry(&opt, i, &e, NULL), 0);
        assert_int_equal(e.format, i % 2 == 0 ? SYNTH_PNG : SYNTH_TIFF);
        synth_scene sc;
        char caption[SYNTH_CAPTION_MAX], path[8300];
        void *pixels;
        replay_row(&opt, &e, &sc, caption, &pixels);
        assert_null(strchr(caption, '\n'));
        assert_null(strstr(caption, "\xc3\x97"));
        snprintf(path, sizeof path, "%s/valid/%s", dir, e.file_name);
        assert_int_equal(e.width, 64);
        assert_int_equal(e.height, 48);
        check_intact_image(path, &e, pixels);
        free(pixels);
    }
    free(dir);
}

static int files_equal(const char *a, const char *b)
{
    size_t la, lb;
    char *da = read_whole(a, &la), *db = read_whole(b, &lb);
    const int same = la == lb && memcmp(da, db, la) == 0;
    free(da);
    free(db);
    return same;
}

static void test_archive_deterministic(void **state)
{
    (void)state;
    char *one = tu_mkdtemp("synth-det1"), *two = tu_mkdtemp("synth-det2"), *other = tu_mkdtemp("synth-det3");
    synth_options opt;
    synth_options_default(&opt);
    opt.seed = 99;
    opt.count = 12;
    opt.broken = 4;
    opt.mixed = 1;
    opt.width = 72;
    opt.height = 72;
    opt.formats = 7;
    make_archive(&opt, one, NULL);
    make_archive(&opt, two, NULL);
    opt.seed = 100;
    make_archive(&opt, other, NULL);
    char a[8300], b[8300];
    snprintf(a, sizeof a, "%s/valid_captions.csv", one);
    snprintf(b, sizeof b, "%s/valid_captions.csv", two);
    assert_true(files_equal(a, b));
    snprintf(b, sizeof b, "%s/valid_captions.csv", other);
    assert_false(files_equal(a, b));
    opt.seed = 99;
    int compared = 0;
    for (int i = 0; i < 16; i++) {
        synth_entry e;
        assert_int_equal(synth_plan_entry(&opt, i, &e, NULL), 0);
        if (!e.file_name[0])
            continue;
        snprintf(a, sizeof a, "%s/valid/%s", one, e.file_name);
        snprintf(b, sizeof b, "%s/valid/%s", two, e.file_name);
        if (!files_equal(a, b))
            fail_msg("%s differs between two runs with the same seed", e.file_name);
        compared++;
    }
    assert_int_equal(compared, 15);
    free(one);
    free(two);
    free(other);
}

static void test_archive_refuses_and_overwrites(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("synth-again");
    synth_options opt;
    synth_options_default(&opt);
    opt.count = 2;
    opt.width = opt.height = 32;
    opt.split = "test";
    synth_report rep;
    make_archive(&opt, dir, &rep);
    char csv[8300];
    snprintf(csv, sizeof csv, "%s/test_captions.csv", dir);
    assert_true(tu_file_exists(csv));
    rc_error err = {{0}};
    assert_int_equal(synth_archive(&opt, dir, &rep, &err), -1);
    assert_non_null(strstr(err.msg, "not empty"));
    assert_non_null(strstr(err.msg, "/test"));
    opt.overwrite = 1;
    opt.count = 3;
    assert_int_equal(synth_archive(&opt, dir, &rep, &err), 0);
    size_t len;
    char *text = read_whole(csv, &len);
    csv_table t;
    assert_int_equal(csv_parse(text, len, &t), 0);
    assert_int_equal(t.n_rows, 4);
    assert_string_equal(t.cells[6], "ROCOv2_2023_test_000003");
    csv_table_free(&t);
    free(text);
    /* No rows at all: the header alone. */
    opt.count = 0;
    opt.split = "empty";
    assert_int_equal(synth_archive(&opt, dir, &rep, &err), 0);
    snprintf(csv, sizeof csv, "%s/empty_captions.csv", dir);
    text = read_whole(csv, &len);
    assert_string_equal(text, "ID,Caption\n");
    free(text);
    assert_int_equal(synth_archive(&opt, "", &rep, &err), -1);
    assert_non_null(strstr(err.msg, "no output folder"));
    /* A path that cannot be a folder. */
    opt.count = 1;
    snprintf(csv, sizeof csv, "%s/test_captions.csv/sub", dir);
    assert_int_equal(synth_archive(&opt, csv, &rep, &err), -1);
    assert_non_null(strstr(err.msg, "test_captions.csv"));
    free(dir);
}

static void test_options_and_parsers(void **state)
{
    (void)state;
    rc_error err = {{0}};
    int w = 0, h = 0;
    unsigned formats = 0;
    assert_int_equal(synth_parse_size("256x128", &w, &h, &err), 0);
    assert_int_equal(w, 256);
    assert_int_equal(h, 128);
    assert_int_equal(synth_parse_size("16X4096", &w, &h, &err), 0);
    assert_int_equal(w, 16);
    assert_int_equal(h, 4096);
    static const char *const bad_sizes[] = {"", "256", "x256", "256x", "256x256x1", "-5x10", "15x100",
                                            "100x4097", "12a x 5", " 256x256", "99999999999999x1", NULL};
    for (int i = 0; bad_sizes[i]; i++)
        if (synth_parse_size(bad_sizes[i], &w, &h, &err) != -1)
            fail_msg("size '%s' was accepted", bad_sizes[i]);
    assert_int_equal(synth_parse_size(NULL, &w, &h, &err), -1);

    assert_int_equal(synth_parse_formats("jpg", &formats, &err), 0);
    assert_int_equal(formats, 1u << SYNTH_JPEG);
    assert_int_equal(synth_parse_formats("TIFF,jpeg,png,tif", &formats, &err), 0);
    assert_int_equal(formats, 7u);
    static const char *const bad_formats[] = {"", "gif", "jpg,", ",png", "jpg,,png", "png tif", "jp", NULL};
    for (int i = 0; bad_formats[i]; i++)
        if (synth_parse_formats(bad_formats[i], &formats, &err) != -1)
            fail_msg("formats '%s' were accepted", bad_formats[i]);
    assert_non_null(strstr(err.msg, "'jp'"));

    synth_options opt;
    synth_options_default(&opt);
    synth_entry e;
    opt.count = 3;
    assert_int_equal(synth_plan_entry(&opt, 3, &e, &err), -1);
    assert_int_equal(synth_plan_entry(&opt, -1, &e, &err), -1);
    opt.split = "va/lid";
    assert_int_equal(synth_plan_entry(&opt, 0, &e, &err), -1);
    assert_non_null(strstr(err.msg, "va/lid"));
    opt.split = "valid";
    opt.formats = 0;
    assert_int_equal(synth_plan_entry(&opt, 0, &e, &err), -1);
    opt.formats = 1u << SYNTH_N_FORMATS;
    assert_int_equal(synth_plan_entry(&opt, 0, &e, &err), -1);
    opt.formats = 1;
    opt.jpeg_quality = 0;
    assert_int_equal(synth_archive(&opt, "/nonexistent-never-written", NULL, &err), -1);
    assert_non_null(strstr(err.msg, "quality"));
    opt.jpeg_quality = 90;
    opt.width = 8;
    assert_int_equal(synth_plan_entry(&opt, 0, &e, &err), -1);
    assert_non_null(strstr(err.msg, "8x256"));
}

/* Broken rows: K spread evenly among N intact rows, kinds taking turns. */
static void test_broken_rows_spread(void **state)
{
    (void)state;
    synth_options opt;
    synth_options_default(&opt);
    opt.count = 10;
    opt.broken = 4;
    /* Broken row j sits at j + floor((j + 1) * 10 / 5): rows 2, 5, 8, 11. */
    static const int expected_rows[4] = {2, 5, 8, 11};
    static const synth_defect kinds[4] = {SYNTH_TRUNCATED, SYNTH_EMPTY, SYNTH_NOT_IMAGE, SYNTH_MISSING};
    int k = 0;
    for (int i = 0; i < 14; i++) {
        synth_entry e;
        assert_int_equal(synth_plan_entry(&opt, i, &e, NULL), 0);
        if (k < 4 && i == expected_rows[k]) {
            assert_int_equal(e.defect, kinds[k]);
            k++;
        } else {
            assert_int_equal(e.defect, SYNTH_INTACT);
        }
    }
    assert_int_equal(k, 4);
    /* Only broken rows, no intact ones. */
    opt.count = 0;
    opt.broken = 3;
    for (int i = 0; i < 3; i++) {
        synth_entry e;
        assert_int_equal(synth_plan_entry(&opt, i, &e, NULL), 0);
        assert_int_equal(e.defect, kinds[i]);
    }
}

/* The command line: --help, usage errors, a run. */
static void test_command(void **state)
{
    (void)state;
    if (!tu_file_exists(tu_radcap_bin()))
        skip();
    char cmd[8600];
    char *dir = tu_mkdtemp("synth-cmd");
    snprintf(cmd, sizeof cmd, "%s synth --help >/dev/null", tu_radcap_bin());
    assert_int_equal(tu_run(cmd), 0);
    static const char *const usage_errors[] = {"", "--count 2 --size 2x2", "--count 2 --formats bmp",
                                               "--count -1", "--count 2 --seed x", "--count 2 --quality 101",
                                               "--count 2 extra", NULL};
    for (int i = 0; usage_errors[i]; i++) {
        snprintf(cmd, sizeof cmd, "%s synth --out '%s/never' %s 2>/dev/null", tu_radcap_bin(), dir, usage_errors[i]);
        if (tu_run(cmd) != 2)
            fail_msg("'radcap synth %s' did not exit with 2", usage_errors[i]);
    }
    snprintf(cmd, sizeof cmd, "%s/never", dir);
    struct stat st;
    assert_int_not_equal(stat(cmd, &st), 0);
    snprintf(cmd, sizeof cmd,
             "%s synth --out '%s/demo' --count 5 --broken 2 --seed 4 --size 48x40 --formats png >/dev/null",
             tu_radcap_bin(), dir);
    assert_int_equal(tu_run(cmd), 0);
    char path[8300];
    snprintf(path, sizeof path, "%s/demo/valid_captions.csv", dir);
    size_t len;
    char *text = read_whole(path, &len);
    csv_table t;
    assert_int_equal(csv_parse(text, len, &t), 0);
    assert_int_equal(t.n_rows, 8);
    csv_table_free(&t);
    free(text);
    /* The same archive as the library writes. */
    synth_options opt;
    synth_options_default(&opt);
    opt.seed = 4;
    opt.count = 5;
    opt.broken = 2;
    opt.width = 48;
    opt.height = 40;
    opt.formats = 1u << SYNTH_PNG;
    char lib_dir[8300], lib_csv[8400];
    snprintf(lib_dir, sizeof lib_dir, "%s/lib", dir);
    make_archive(&opt, lib_dir, NULL);
    snprintf(lib_csv, sizeof lib_csv, "%s/valid_captions.csv", lib_dir);
    assert_true(files_equal(path, lib_csv));
    /* A second run into the same folder is refused without --force. */
    snprintf(cmd, sizeof cmd, "%s synth --out '%s/demo' --count 5 2>/dev/null", tu_radcap_bin(), dir);
    assert_int_equal(tu_run(cmd), 3);
    snprintf(cmd, sizeof cmd, "%s synth --out '%s/demo' --count 5 --force >/dev/null", tu_radcap_bin(), dir);
    assert_int_equal(tu_run(cmd), 0);
    free(dir);
}

/* The truncated-JPEG checks make libvips warn on purpose. */
static void quiet_log(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer user)
{
    (void)domain, (void)level, (void)message, (void)user;
}

int main(int argc, char **argv)
{
    (void)argc;
    if (VIPS_INIT(argv[0]) != 0) {
        fprintf(stderr, "libvips could not start\n");
        return 1;
    }
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, quiet_log, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phantom_deterministic),
        cmocka_unit_test(test_phantom_errors),
        cmocka_unit_test(test_findings_match_captions),
        cmocka_unit_test(test_caption_variety),
        cmocka_unit_test(test_options_and_parsers),
        cmocka_unit_test(test_broken_rows_spread),
        cmocka_unit_test(test_archive_layout_and_contents),
        cmocka_unit_test(test_archive_plain),
        cmocka_unit_test(test_archive_deterministic),
        cmocka_unit_test(test_archive_refuses_and_overwrites),
        cmocka_unit_test(test_command),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
