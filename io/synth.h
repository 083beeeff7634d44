/* synth.h: a synthetic archive of radiograph-like images with captions that
 * describe them, in ROCOv2's layout, for demos and tests.
 *
 * An image is a "scene": a study (chest X-ray, abdominal CT slice, head CT,
 * brain MRI, knee X-ray) drawn as a phantom (body outline, soft tissue,
 * organs, bones), with 0 to 3 findings (nodules, masses, cysts, lytic or
 * sclerotic bone lesions, calcifications, collections with an air-fluid
 * level, ring-enhancing lesions) at named anatomical sites, blur and noise,
 * and an arrow pointing at some findings. The caption says what was drawn,
 * in the style of ROCO captions:
 *
 *     Chest X-ray showing a 2.5-cm nodule in the right lower lobe (arrow).
 *     Axial contrast-enhanced CT showing a 3.1 x 2.2 cm hypodense lesion in
 *     the right hepatic lobe (arrow) and a 6-mm renal calculus in the left
 *     kidney.
 *     Brain MRI without abnormal findings.
 *
 * Captions are truthful: the sizes are the drawn sizes (at the study's
 * field of view), "right" and "left" are the patient's sides in the
 * radiological convention (the patient's right is on the image's left),
 * "hypo-"/"hyper-", "lucent"/"sclerotic" match the drawn contrast, and
 * "(arrow)" appears exactly for findings with an arrow.
 *
 * Everything is deterministic for a seed (engine/rng.h): the same options
 * give byte-identical files (checked by the tests within one build; across
 * machines the pixels could differ in the last bit only where libm's
 * exp/log/sin/cos or the image encoders differ). Each archive entry draws
 * from its own random stream, so entries are independent of each other and
 * are generated in parallel (OpenMP).
 *
 * Drawing (synth_scene_*, synth_phantom) is pure computation without I/O;
 * synth_archive encodes the images with libvips, which the caller must
 * have initialised once for the process (img_system_init, or VIPS_INIT).
 */
#ifndef RC_SYNTH_H
#define RC_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"
#include "engine/rng.h"

enum {
    SYNTH_MAX_LESIONS = 3,    /* findings per image */
    SYNTH_CAPTION_MAX = 1024, /* caption buffer that always suffices, NUL included */
    SYNTH_MIN_SIDE = 16,      /* smallest image side in pixels */
    SYNTH_MAX_SIDE = 4096,    /* largest --size side (mixed sizes reach 1.5x; phantoms 2x) */
};

typedef enum synth_study {
    SYNTH_CHEST_XRAY, /* variants: 0 PA, 1 AP */
    SYNTH_ABDOMEN_CT, /* variants: 0 contrast-enhanced, 1 non-contrast */
    SYNTH_HEAD_CT,    /* variant 0 only (non-contrast) */
    SYNTH_BRAIN_MRI,  /* variants: 0 T1, 1 T1 post-contrast, 2 T2, 3 FLAIR */
    SYNTH_KNEE_XRAY,  /* variants: 0 right knee, 1 left knee (AP view) */
    SYNTH_N_STUDIES
} synth_study;

/* How a finding is drawn. */
typedef enum synth_shape {
    SYNTH_SOLID,       /* soft-edged blob adding `contrast` */
    SYNTH_SHARP,       /* sharp-edged blob adding `contrast` (cysts, lytic lesions) */
    SYNTH_SPECK,       /* small sharp blob (calcifications, stones) */
    SYNTH_FLUID_LEVEL, /* a walled cavity: gas above a horizontal level, fluid below */
    SYNTH_RING,        /* a bright rim of +|contrast| around a darker centre */
} synth_shape;

/* Flags of synth_scene_choose. */
enum {
    SYNTH_COLOUR = 1, /* the image will be RGB: arrows may be coloured, and named so */
    SYNTH_MESSY = 2,  /* captions may hold a line break and a non-ASCII '×' */
};

typedef struct synth_lesion {
    int finding;           // index in the finding table (synth_finding_name)
    int site;              // index in the study's site table (synth_site_name)
    synth_shape shape;
    double cx, cy;         // centre, pixels (x to the right, y down; pixel column i
                           //   spans x in [i, i + 1), so its centre is at i + 0.5)
    double rx, ry;         // semi-axes, pixels (rx >= ry)
    double angle;          // direction of the rx axis, radians, clockwise on screen
    double contrast;       // signed intensity change (intensities span 0..1)
    int size_mm[2];        // drawn diameters in mm: long (2 rx), short (2 ry; 0 when round)
    int has_arrow;         // 1 when an arrow points at it
    double arrow_tip[2];   // (x, y) pixels, outside the lesion
    double arrow_tail[2];  // (x, y) pixels
} synth_lesion;

typedef struct synth_scene {
    synth_study study;
    int variant;           // see synth_study
    int width, height;     // pixels
    double centre_x;       // the anatomy's centre, pixels
    double centre_y;
    double scale;          // pixels per anatomy unit (the body spans about -1..1)
    int flip;              // 1, or -1 when the anatomy is mirrored left-right (a right knee)
    double mm_per_pixel;   // field of view: how the caption's sizes map to pixels
    double blur_sigma;     // pixels, Gaussian blur applied after the findings are drawn
    double noise_sigma;    // intensity, Gaussian noise added last
    uint64_t texture_seed; // seeds the anatomy's small random variations and the noise
    float arrow_rgb[3];    // arrow colour, 0..1 (white unless SYNTH_COLOUR)
    int arrow_colour_named;// 1 when captions say "(yellow arrow)" rather than "(arrow)"
    unsigned flags;        // SYNTH_COLOUR | SYNTH_MESSY as given to synth_scene_choose
    int n_lesions;
    synth_lesion lesions[SYNTH_MAX_LESIONS];
} synth_scene;

/* ---- Scenes: pure computation, no I/O ---- */

/* Chooses a study, its variant, the anatomy's placement and 0-3 findings
 * (none in about a fifth of the images) for a width x height image, both at
 * least SYNTH_MIN_SIDE. Each finding's centre lies in its named site;
 * findings are kept apart so that their drawings (blur included) do not
 * touch; arrows (for about 60 % of findings) stay inside the image and off
 * the other findings. */
void synth_scene_choose(rng_state *r, int width, int height, unsigned flags, synth_scene *scene);

/* Draws the scene: image (height, width) gets intensities in 0..1 (anatomy,
 * findings, blur, noise; no arrows); annotation (height, width), if not
 * NULL, gets the arrows' coverage in 0..1. The result depends only on the
 * scene: drawing a copy with n_lesions set to 0 gives the same image away
 * from the findings, which is how tests find them. Returns 0, or -1 (out of
 * memory) with err filled. */
int synth_scene_draw(const synth_scene *scene, float *image, float *annotation, rc_error *err);

/* Writes the scene's caption, one or two sentences, into caption (size
 * bytes, NUL-terminated; SYNTH_CAPTION_MAX always suffices). The phrasing
 * is drawn from r. Returns the caption's length, or -1 with err filled when
 * it does not fit. */
int synth_scene_caption(const synth_scene *scene, rng_state *r, char *caption, size_t size, rc_error *err);

/* Pixel layouts of composed images. */
typedef enum synth_pixel {
    SYNTH_GREY8,  /* 1 byte per pixel */
    SYNTH_GREY16, /* 1 uint16_t per pixel, full 0..65535 range */
    SYNTH_RGB8,   /* 3 bytes per pixel, R G B */
    SYNTH_N_PIXELS
} synth_pixel;

/* Bytes per pixel of a layout. */
int synth_pixel_bytes(synth_pixel pixel);

/* Turns drawn intensities into pixels: out (height, width) in the layout,
 * rounded to nearest; arrows (annotation, may be NULL) are painted over the
 * image in the scene's arrow colour (white in the grey layouts). */
void synth_compose(const synth_scene *scene, const float *image, const float *annotation, synth_pixel pixel,
                   void *out);

/* One 8-bit greyscale image with arrows and its caption, from r: chooses a
 * scene (no flags), captions, draws and composes it. pixels holds width *
 * height bytes, caption caption_size bytes (SYNTH_CAPTION_MAX suffices).
 * scene, if not NULL, receives what was drawn. Returns 0, or -1 with err
 * filled (a side outside SYNTH_MIN_SIDE..2 * SYNTH_MAX_SIDE, caption too
 * small, out of memory). */
int synth_phantom(rng_state *r, int width, int height, uint8_t *pixels, char *caption, size_t caption_size,
                  synth_scene *scene, rc_error *err);

/* "chest X-ray", "abdominal CT", "head CT", "brain MRI", "knee X-ray". */
const char *synth_study_name(synth_study study);

/* The site's words as captions use them after "in the", e.g. "right lower
 * lobe", "distal femur"; NULL for an index out of range. */
const char *synth_site_name(synth_study study, int site);

/* A short name of the finding, e.g. "nodule", "renal calculus"; NULL for
 * an index out of range. */
const char *synth_finding_name(int finding);

/* ---- Archives: ROCOv2 layout on disk, encoded with libvips ---- */

typedef enum synth_format { SYNTH_JPEG, SYNTH_PNG, SYNTH_TIFF, SYNTH_N_FORMATS } synth_format;

/* What is wrong with a deliberately broken entry. */
typedef enum synth_defect {
    SYNTH_INTACT = 0,
    SYNTH_TRUNCATED, /* a JPEG cut inside its compressed data (no end marker) */
    SYNTH_EMPTY,     /* a zero-byte .png file */
    SYNTH_NOT_IMAGE, /* an HTML error page saved as .jpg */
    SYNTH_MISSING,   /* listed in the CSV, no file at all */
    SYNTH_N_DEFECTS
} synth_defect;

typedef struct synth_options {
    uint64_t seed;
    int count;             // intact images
    int broken;            // broken entries, in addition, spread evenly among the intact ones
    int width, height;     // image size; with `mixed`, each side varies from 0.5x to 1.5x
    unsigned formats;      // set of (1u << synth_format), taken in turn by the intact images
    int mixed;             // 1: mixed sizes; some RGB images; some 16-bit PNG/TIFF; messy captions
    const char *split;     // ROCOv2 split name: DIR/<split>/, DIR/<split>_captions.csv,
                           //   IDs ROCOv2_2023_<split>_000001; letters, digits, '_' or '-'
    int overwrite;         // 1: write into an image folder that is not empty
    int jpeg_quality;      // 1..100
} synth_options;

/* seed 1, count 0, broken 0, 256x256, JPEG only, not mixed, split "valid",
 * no overwrite, JPEG quality 90. */
void synth_options_default(synth_options *opt);

/* The plan of one CSV row: everything about it except the pixels. */
typedef struct synth_entry {
    int index;             // 0-based row of the CSV (after the header)
    char id[64];           // e.g. ROCOv2_2023_valid_000001
    synth_defect defect;
    synth_format format;   // encoding of the file (JPEG for a truncated entry)
    synth_pixel pixel;
    int width, height;
    char file_name[96];    // name inside the image folder; "" for SYNTH_MISSING
    uint64_t scene_seed;   // seeds the entry's scene and caption
} synth_entry;

/* Plans row `index` (0 <= index < count + broken) of the archive the
 * options describe; the same for every call. Returns 0, or -1 with err
 * filled for invalid options or index. */
int synth_plan_entry(const synth_options *opt, int index, synth_entry *entry, rc_error *err);

typedef struct synth_report {
    int n_entries;                     // rows in the CSV
    int n_intact;                      // decodable images written
    int n_defect[SYNTH_N_DEFECTS];     // rows by defect (n_defect[SYNTH_INTACT] == n_intact)
    int n_format[SYNTH_N_FORMATS];     // intact images by format
    int n_pixel[SYNTH_N_PIXELS];       // intact images by pixel layout
    int n_study[SYNTH_N_STUDIES];      // rows by study (broken ones included)
    int n_lesions;                     // findings over all rows
    int n_normal;                      // rows without findings
    long long bytes;                   // bytes written, CSV included
    char csv_path[4096];               // DIR/<split>_captions.csv
    char image_dir[4096];              // DIR/<split>
} synth_report;

/* Writes the archive into out_dir (created if needed, parents included):
 * out_dir/<split>/<ID>.<ext> for every intact or broken entry with a file,
 * and out_dir/<split>_captions.csv with the header `ID,Caption` and one row
 * per entry in ID order (RFC 4180 quoting, LF line ends, UTF-8). Each file
 * is written under a temporary name and renamed, so an interrupted run
 * never leaves a half-written file under a final name; the CSV is renamed
 * last, after every image is in place. Refuses an image folder that is not
 * empty unless opt->overwrite (then same-named files are replaced and
 * others left alone). report may be NULL; it is filled on success. Returns
 * 0, or -1 with err naming the option, file or libvips failure (the first
 * failing row's, when several fail; files of other rows may then be in
 * place, but no CSV). */
int synth_archive(const synth_options *opt, const char *out_dir, synth_report *report, rc_error *err);

/* "jpg", "png", "tif". */
const char *synth_format_extension(synth_format format);

/* Parses "WxH" (e.g. "256x256") with sides in SYNTH_MIN_SIDE..SYNTH_MAX_SIDE. */
int synth_parse_size(const char *text, int *width, int *height, rc_error *err);

/* Parses a comma-separated list of formats ("jpg,png,tif"; also "jpeg" and
 * "tiff", any case) into a set of (1u << synth_format). */
int synth_parse_formats(const char *text, unsigned *formats, rc_error *err);

#endif
