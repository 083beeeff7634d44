/* synth.c: synthetic radiograph-like phantoms, the captions that describe
 * them, and archives of them in ROCOv2's layout.
 *
 * Drawing works on a float canvas with intensities in 0..1. Anatomy is
 * written in "anatomy units" (the body spans about -1..1 on both axes, v
 * pointing down, +u towards the image's right unless the scene is flipped),
 * which the canvas maps to pixels; findings are stored and drawn in pixels
 * so that tests can find them. Every shape is a signed distance function
 * (negative inside) painted with an antialiased edge, so the one painter
 * serves ellipses, tapered capsules (bones, ribs seen end-on, arrows) and
 * elliptical arcs (ribs, the skull, rims).
 */
#include "io/synth.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "io/csv.h"

/* ------------------------------------------------------------------------
 * Canvas and shapes
 * ------------------------------------------------------------------------ */

typedef enum paint_op {
    PAINT_BLEND, /* move towards value by the coverage */
    PAINT_ADD,   /* add value times the coverage */
    PAINT_MAX,   /* keep the larger of the pixel and value times the coverage */
} paint_op;

typedef enum shape_kind { SHAPE_ELLIPSE, SHAPE_CAPSULE, SHAPE_ARC } shape_kind;

/* A shape in pixel coordinates; pixel column i spans x in [i, i + 1). */
typedef struct shape {
    shape_kind kind;
    double x0, y0;       // ellipse, arc: centre; capsule: first end
    double x1, y1;       // capsule: second end
    double rx, ry;       // ellipse, arc: semi-axes; capsule: radius at the first, second end
    double cos_a, sin_a; // ellipse, arc: rotation of the rx axis
    double t0, t1;       // arc: parameter range, radians, t0 <= t1 (point = (rx cos t, ry sin t))
    double half_width;   // arc: half the band's width
    double ends[4];      // arc: (x, y) of the points at t0 and t1
    double exact_within; // arc: distances beyond this may be returned as a lower bound
    double box[4];       // arc: x0, y0, x1, y1 around the arc's centre line
    int clip;            // 0: none; +1: keep y >= clip_y; -1: keep y <= clip_y
    double clip_y;
} shape;

typedef struct canvas {
    float *px;   // (h, w) intensities
    int w, h;
    double cx;   // anatomy origin, pixels
    double cy;
    double s;    // pixels per anatomy unit
    int flip;    // 1, or -1 to mirror the anatomy left-right
} canvas;

static double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

static shape ellipse_shape(double x, double y, double rx, double ry, double angle)
{
    shape s = {.kind = SHAPE_ELLIPSE, .x0 = x, .y0 = y, .rx = rx, .ry = ry, .cos_a = cos(angle), .sin_a = sin(angle)};
    return s;
}

static shape capsule_shape(double x0, double y0, double x1, double y1, double r0, double r1)
{
    shape s = {.kind = SHAPE_CAPSULE, .x0 = x0, .y0 = y0, .x1 = x1, .y1 = y1, .rx = r0, .ry = r1};
    return s;
}

/* Signed distance to an ellipse's outline, exact for circles and close
 * enough near the outline of an ellipse: |p| (1 - 1/q), where q is the
 * point's "ellipse radius" (1 on the outline). */
static double ellipse_distance(const shape *s, double x, double y)
{
    const double dx = x - s->x0, dy = y - s->y0;
    const double ex = (dx * s->cos_a + dy * s->sin_a) / s->rx;
    const double ey = (-dx * s->sin_a + dy * s->cos_a) / s->ry;
    const double q = sqrt(ex * ex + ey * ey);
    if (q < 1e-9)
        return -fmin(s->rx, s->ry);
    return sqrt(dx * dx + dy * dy) * (1.0 - 1.0 / q);
}

static double capsule_distance(const shape *s, double x, double y)
{
    const double ax = s->x1 - s->x0, ay = s->y1 - s->y0, len2 = ax * ax + ay * ay;
    double t = len2 > 0 ? ((x - s->x0) * ax + (y - s->y0) * ay) / len2 : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    const double px = s->x0 + t * ax - x, py = s->y0 + t * ay - y;
    return sqrt(px * px + py * py) - (s->rx + t * (s->ry - s->rx));
}

static void arc_point(const shape *s, double t, double *x, double *y)
{
    const double ex = s->rx * cos(t), ey = s->ry * sin(t);
    *x = s->x0 + ex * s->cos_a - ey * s->sin_a;
    *y = s->y0 + ex * s->sin_a + ey * s->cos_a;
}

/* A band of half_width around the part t0..t1 of an ellipse's outline,
 * with round ends, to be painted with the given edge. */
static shape arc_shape(double x, double y, double rx, double ry, double angle, double t0, double t1,
                       double half_width, double edge)
{
    shape s = ellipse_shape(x, y, rx, ry, angle);
    s.kind = SHAPE_ARC;
    s.t0 = t0;
    s.t1 = t1;
    s.half_width = half_width;
    s.exact_within = edge;
    arc_point(&s, t0, &s.ends[0], &s.ends[1]);
    arc_point(&s, t1, &s.ends[2], &s.ends[3]);
    /* Box from points along the arc; 32 chords sag by under 0.5 % of the radius. */
    s.box[0] = s.box[2] = s.ends[0];
    s.box[1] = s.box[3] = s.ends[1];
    for (int k = 1; k <= 32; k++) {
        double px, py;
        arc_point(&s, t0 + (t1 - t0) * k / 32, &px, &py);
        s.box[0] = fmin(s.box[0], px), s.box[2] = fmax(s.box[2], px);
        s.box[1] = fmin(s.box[1], py), s.box[3] = fmax(s.box[3], py);
    }
    const double sag = 0.005 * fmax(rx, ry) + 0.5;
    s.box[0] -= sag, s.box[1] -= sag, s.box[2] += sag, s.box[3] += sag;
    return s;
}

/* Farther than exact_within from the whole outline, the distance to the
 * outline is returned: a lower bound of the distance to the band, which is
 * enough for paint() to tell that the pixel is outside (it needs exact
 * distances only within half an edge). This spares an atan2 per pixel. */
static double arc_distance(const shape *s, double x, double y)
{
    const double to_outline = fabs(ellipse_distance(s, x, y)) - s->half_width;
    if (to_outline > s->exact_within)
        return to_outline;
    const double dx = x - s->x0, dy = y - s->y0;
    const double ex = (dx * s->cos_a + dy * s->sin_a) / s->rx;
    const double ey = (-dx * s->sin_a + dy * s->cos_a) / s->ry;
    double t = atan2(ey, ex);
    while (t < s->t0)
        t += 2 * M_PI;
    if (t <= s->t1)
        return to_outline;
    const double da = hypot(x - s->ends[0], y - s->ends[1]), db = hypot(x - s->ends[2], y - s->ends[3]);
    return fmin(da, db) - s->half_width;
}

static double shape_distance(const shape *s, double x, double y)
{
    switch (s->kind) {
    case SHAPE_ELLIPSE: return ellipse_distance(s, x, y);
    case SHAPE_CAPSULE: return capsule_distance(s, x, y);
    case SHAPE_ARC: return arc_distance(s, x, y);
    }
    return 1e30;
}

/* Pixel box that holds every point within `margin` of the shape. */
static void shape_box(const shape *s, double margin, double *xa, double *ya, double *xb, double *yb)
{
    if (s->kind == SHAPE_CAPSULE) {
        const double r = fmax(s->rx, s->ry) + margin;
        *xa = fmin(s->x0, s->x1) - r, *xb = fmax(s->x0, s->x1) + r;
        *ya = fmin(s->y0, s->y1) - r, *yb = fmax(s->y0, s->y1) + r;
        return;
    }
    if (s->kind == SHAPE_ARC) {
        const double r = s->half_width + margin;
        *xa = s->box[0] - r, *ya = s->box[1] - r, *xb = s->box[2] + r, *yb = s->box[3] + r;
        return;
    }
    const double extra = margin;
    const double hx = hypot(s->rx * s->cos_a, s->ry * s->sin_a) + extra;
    const double hy = hypot(s->rx * s->sin_a, s->ry * s->cos_a) + extra;
    *xa = s->x0 - hx, *xb = s->x0 + hx, *ya = s->y0 - hy, *yb = s->y0 + hy;
}

/* Coverage of the pixel centred at (x, y) by the shape painted with an edge
 * ramp `edge` pixels wide: 1 inside, 0 outside, linear across the outline.
 * Most pixels of an ellipse are decided from its "ellipse radius" q alone:
 * the distance to the outline is between (q - 1) r_min and (q - 1) r_max. */
static double coverage(const shape *s, double x, double y, double edge)
{
    if (s->kind == SHAPE_ELLIPSE) {
        const double dx = x - s->x0, dy = y - s->y0;
        const double ex = (dx * s->cos_a + dy * s->sin_a) / s->rx;
        const double ey = (-dx * s->sin_a + dy * s->cos_a) / s->ry;
        const double q2 = ex * ex + ey * ey, margin = 0.5 * edge / fmin(s->rx, s->ry);
        if (margin < 1 && q2 <= (1 - margin) * (1 - margin))
            return 1.0;
        if (q2 >= (1 + margin) * (1 + margin))
            return 0.0;
    }
    return clamp01(0.5 - shape_distance(s, x, y) / edge);
}

/* Paints the shape with an edge ramp `edge` pixels wide, applying op with
 * value weighted by the coverage. */
static void paint(canvas *c, const shape *s, double edge, paint_op op, double value)
{
    edge = fmax(edge, 0.5);
    double xa, ya, xb, yb;
    shape_box(s, edge, &xa, &ya, &xb, &yb);
    const int i0 = xa < 0 ? 0 : (int)xa, j0 = ya < 0 ? 0 : (int)ya;
    const int i1 = xb >= c->w ? c->w - 1 : (int)xb, j1 = yb >= c->h ? c->h - 1 : (int)yb;
    for (int j = j0; j <= j1; j++) {
        const double y = j + 0.5;
        double clip = 1.0;
        if (s->clip)
            clip = clamp01(0.5 + s->clip * (y - s->clip_y));
        if (clip <= 0)
            continue;
        float *row = c->px + (size_t)j * c->w;
        for (int i = i0; i <= i1; i++) {
            const double a = coverage(s, i + 0.5, y, edge) * clip;
            if (a <= 0)
                continue;
            switch (op) {
            case PAINT_BLEND: row[i] += (float)(a * (value - row[i])); break;
            case PAINT_ADD: row[i] += (float)(a * value); break;
            case PAINT_MAX: row[i] = fmaxf(row[i], (float)(a * value)); break;
            }
        }
    }
}

static void fill(canvas *c, float value)
{
    for (size_t i = 0; i < (size_t)c->w * c->h; i++)
        c->px[i] = value;
}

/* Anatomy units to pixels. Edges are given in units with a floor of a
 * pixel, so small images stay antialiased. */
static double unit_x(const canvas *c, double u) { return c->cx + c->flip * u * c->s; }
static double unit_y(const canvas *c, double v) { return c->cy + v * c->s; }
static double unit_edge(const canvas *c, double e) { return fmax(0.8, e * c->s); }

static void ellipse_u(canvas *c, double u, double v, double ru, double rv, double angle, double edge, paint_op op,
                      double value)
{
    const shape s = ellipse_shape(unit_x(c, u), unit_y(c, v), ru * c->s, rv * c->s, c->flip * angle);
    paint(c, &s, unit_edge(c, edge), op, value);
}

static void capsule_u(canvas *c, double u0, double v0, double u1, double v1, double r0, double r1, double edge,
                      paint_op op, double value)
{
    const shape s = capsule_shape(unit_x(c, u0), unit_y(c, v0), unit_x(c, u1), unit_y(c, v1), r0 * c->s, r1 * c->s);
    paint(c, &s, unit_edge(c, edge), op, value);
}

/* An unrotated elliptical arc for parameters t0..t1 (t = -pi/2 is the top). */
static void arc_u(canvas *c, double u, double v, double ru, double rv, double t0, double t1, double width,
                  double edge, paint_op op, double value)
{
    /* Mirroring maps the parameter t to pi - t. */
    const double a = c->flip > 0 ? t0 : M_PI - t1, b = c->flip > 0 ? t1 : M_PI - t0;
    const double edge_px = unit_edge(c, edge);
    const shape s = arc_shape(unit_x(c, u), unit_y(c, v), ru * c->s, rv * c->s, 0, a, b, 0.5 * width * c->s, edge_px);
    paint(c, &s, edge_px, op, value);
}

/* Adds smooth random texture (value noise on a grid of cell_px pixels,
 * interpolated with smoothstep weights), amplitude in intensity units,
 * weighted by the coverage of `mask` when given. */
static int add_texture(canvas *c, rng_state *r, double cell_px, double amplitude, const shape *mask, rc_error *err)
{
    cell_px = fmax(cell_px, 2.0);
    const int gw = (int)(c->w / cell_px) + 3, gh = (int)(c->h / cell_px) + 3;
    float *grid = malloc(sizeof(float) * gw * gh);
    if (!grid)
        return rc_fail(err, "out of memory for a %dx%d texture grid", gw, gh);
    for (int i = 0; i < gw * gh; i++)
        grid[i] = (float)((2 * rng_uniform(r) - 1) * amplitude);
    for (int j = 0; j < c->h; j++) {
        const double gy = (j + 0.5) / cell_px;
        const int iy = (int)gy;
        double fy = gy - iy;
        fy = fy * fy * (3 - 2 * fy);
        for (int i = 0; i < c->w; i++) {
            const double gx = (i + 0.5) / cell_px;
            const int ix = (int)gx;
            double fx = gx - ix;
            fx = fx * fx * (3 - 2 * fx);
            const float *g0 = grid + (size_t)iy * gw + ix, *g1 = g0 + gw;
            const double top = g0[0] + fx * (g0[1] - g0[0]), bottom = g1[0] + fx * (g1[1] - g1[0]);
            double weight = 1.0;
            if (mask)
                weight = clamp01(0.5 - shape_distance(mask, i + 0.5, j + 0.5) / 2.0);
            c->px[(size_t)j * c->w + i] += (float)(weight * (top + fy * (bottom - top)));
        }
    }
    free(grid);
    return 0;
}

/* out[i] (+)= sum over k < taps of weights[k] * in[i + k]: cleared first
 * when `clear`, else added to. */
static void accumulate_rows(float *restrict out, const float *restrict in, const float *weights, int taps, int clear,
                            int n)
{
    if (clear)
        for (int i = 0; i < n; i++)
            out[i] = 0;
    for (int k = 0; k < taps; k++) {
        const float wk = weights[k];
        const float *restrict row = in + k;
        for (int i = 0; i < n; i++)
            out[i] += wk * row[i];
    }
}

/* Separable Gaussian blur, kernel cut at 3 sigma, edges repeated. The
 * result at a pixel depends only on the pixels within the kernel's reach,
 * in a fixed order, so two canvases equal there blur to equal values. */
static int gaussian_blur(canvas *c, double sigma, rc_error *err)
{
    if (sigma < 0.3)
        return 0;
    const int radius = (int)ceil(3 * sigma), w = c->w, h = c->h;
    float *kernel = malloc(sizeof(float) * (2 * radius + 1));
    float *tmp = malloc(sizeof(float) * w * h), *padded = malloc(sizeof(float) * (w + 2 * radius));
    if (!kernel || !tmp || !padded) {
        free(kernel), free(tmp), free(padded);
        return rc_fail(err, "out of memory for blurring a %dx%d image", w, h);
    }
    double sum = 0;
    for (int k = -radius; k <= radius; k++)
        sum += exp(-0.5 * k * k / (sigma * sigma));
    for (int k = -radius; k <= radius; k++)
        kernel[k + radius] = (float)(exp(-0.5 * k * k / (sigma * sigma)) / sum);
    /* Both passes accumulate whole rows (out += k * shifted row), which the
     * compiler vectorises; the order of the sums is fixed. */
    for (int j = 0; j < h; j++) {
        const float *in = c->px + (size_t)j * w;
        for (int k = 0; k < radius; k++) {
            padded[k] = in[0];
            padded[radius + w + k] = in[w - 1];
        }
        memcpy(padded + radius, in, sizeof(float) * w);
        accumulate_rows(tmp + (size_t)j * w, padded, kernel, 2 * radius + 1, 1, w);
    }
    for (int j = 0; j < h; j++) {
        float *out = c->px + (size_t)j * w;
        for (int i = 0; i < w; i++)
            out[i] = 0;
        for (int k = -radius; k <= radius; k++) {
            const int jj = j + k < 0 ? 0 : j + k >= h ? h - 1 : j + k;
            accumulate_rows(out, tmp + (size_t)jj * w, kernel + k + radius, 1, 0, w);
        }
    }
    free(kernel), free(tmp), free(padded);
    return 0;
}

/* ------------------------------------------------------------------------
 * Studies: anatomy, sites, findings, words
 * ------------------------------------------------------------------------ */

typedef struct site_info {
    const char *name;      // words after "in the"
    double u0, u1, v0, v1; // where a finding's centre may fall, anatomy units
    int max_mm;            // largest finding diameter that fits the site
} site_info;

typedef int (*draw_fn)(canvas *c, const synth_scene *scene, rng_state *texture, rc_error *err);

enum { MAX_VARIANTS = 4, MAX_WORDS = 7, MAX_SITES = 8 };

typedef struct study_info {
    const char *name;
    double weight;                              // how often it is chosen
    int n_variants;
    double mm_per_unit;                         // field of view
    double blur_units;                          // blur sigma, anatomy units
    double noise_sigma;
    int rician;                                 // noise magnitude kept (MRI: no negative background)
    int n_sites;
    site_info sites[MAX_SITES];
    const char *titles[MAX_VARIANTS][MAX_WORDS]; // names of the study, NULL-terminated
    const char *normals[MAX_WORDS];              // captions without findings; '$' is a title
    const char *negatives[MAX_WORDS];            // true negative sentences
    draw_fn draw;
} study_info;

typedef struct finding_info {
    synth_study study;
    unsigned variants;           // bit v: appears in variant v
    const char *name;
    synth_shape shape;
    double contrast;             // signed; each lesion draws it within +-15 %
    int min_mm, max_mm;          // diameter range
    int elongated;               // 1: drawn as a rotated ellipse with two diameters
    unsigned sites;              // bit i: may appear at the study's site i
    const char *phrases[MAX_WORDS]; // '~' article, '@' size before a noun, '#' size as a measurement
} finding_info;

static int draw_chest(canvas *c, const synth_scene *sc, rng_state *tex, rc_error *err)
{
    (void)sc;
    fill(c, 0.04f);
    ellipse_u(c, 0, 0.3, 0.98, 1.3, 0, 0.04, PAINT_BLEND, 0.42); /* trunk */
    for (int side = -1; side <= 1; side += 2)
        capsule_u(c, side * 0.15, -0.9, side * 0.95, -0.78, 0.2, 0.2, 0.04, PAINT_BLEND, 0.42); /* shoulders */
    capsule_u(c, 0, -1.4, 0, -0.8, 0.2, 0.22, 0.03, PAINT_BLEND, 0.42);                        /* neck */
    ellipse_u(c, -0.42, -0.02, 0.31, 0.62, 0.05, 0.03, PAINT_BLEND, 0.14); /* right lung */
    ellipse_u(c, 0.43, 0.0, 0.29, 0.60, -0.05, 0.03, PAINT_BLEND, 0.14);   /* left lung */
    capsule_u(c, 0, -0.75, 0.02, 0.25, 0.11, 0.16, 0.02, PAINT_BLEND, 0.55); /* mediastinum */
    const double heart = 0.28 + 0.02 * rng_uniform(tex);
    ellipse_u(c, 0.12, 0.3, heart, 0.24, -0.35, 0.02, PAINT_BLEND, 0.55);
    ellipse_u(c, -0.42, 0.84, 0.44, 0.26, 0, 0.02, PAINT_BLEND, 0.44); /* hemidiaphragms */
    ellipse_u(c, 0.44, 0.90, 0.42, 0.26, 0, 0.02, PAINT_BLEND, 0.44);
    capsule_u(c, 0, -1.2, 0, 1.3, 0.065, 0.065, 0.01, PAINT_ADD, 0.07); /* spine */
    for (int side = -1; side <= 1; side += 2) {
        for (int k = 0; k < 9; k++) { /* posterior ribs: from the spine up, out and down */
            const double top = -0.82 + 0.145 * k + 0.01 * rng_normal(tex);
            const double t0 = side < 0 ? -M_PI : -M_PI / 2 - 0.15, t1 = side < 0 ? -M_PI / 2 + 0.15 : 0;
            arc_u(c, side * 0.04, top + 0.3, 0.6, 0.3, t0, t1, 0.03, 0.012, PAINT_ADD, 0.09);
        }
        capsule_u(c, side * 0.1, -0.7, side * 0.62, -0.84, 0.028, 0.024, 0.01, PAINT_ADD, 0.12); /* clavicle */
    }
    return add_texture(c, tex, 0.07 * c->s, 0.03, NULL, err); /* lung markings */
}

static int draw_abdomen(canvas *c, const synth_scene *sc, rng_state *tex, rc_error *err)
{
    const int enhanced = sc->variant == 0;
    fill(c, 0.0f);
    capsule_u(c, -0.95, 0.8, 0.95, 0.8, 0.025, 0.025, 0.01, PAINT_BLEND, 0.30); /* table */
    ellipse_u(c, 0, 0.05, 0.86, 0.62, 0, 0.012, PAINT_BLEND, 0.24);              /* subcutaneous fat */
    ellipse_u(c, 0, 0.06, 0.78, 0.55, 0, 0.012, PAINT_BLEND, 0.42);              /* abdominal wall */
    ellipse_u(c, 0, 0.06, 0.74, 0.51, 0, 0.012, PAINT_BLEND, 0.27);              /* visceral fat */
    ellipse_u(c, -0.36, -0.08, 0.40, 0.34, -0.35, 0.012, PAINT_BLEND, enhanced ? 0.56 : 0.50); /* liver */
    ellipse_u(c, 0.52, -0.05, 0.15, 0.22, 0.4, 0.012, PAINT_BLEND, enhanced ? 0.54 : 0.48);    /* spleen */
    ellipse_u(c, 0.18, -0.32, 0.20, 0.11, 0.2, 0.012, PAINT_BLEND, 0.38);                      /* stomach */
    ellipse_u(c, 0.20, -0.37, 0.12, 0.04, 0.2, 0.008, PAINT_BLEND, 0.02);                      /* its gas */
    for (int side = -1; side <= 1; side += 2) {
        ellipse_u(c, side * 0.31, 0.2, 0.09, 0.13, side * 0.3, 0.01, PAINT_BLEND, enhanced ? 0.66 : 0.48);
        ellipse_u(c, side * 0.26, 0.21, 0.03, 0.045, 0, 0.008, PAINT_BLEND, 0.36); /* renal hilum */
        ellipse_u(c, side * 0.14, 0.30, 0.05, 0.07, 0, 0.01, PAINT_BLEND, 0.44);   /* psoas */
        ellipse_u(c, side * 0.17, 0.46, 0.11, 0.08, side * 0.2, 0.01, PAINT_BLEND, 0.44); /* paraspinal */
        capsule_u(c, side * 0.06, 0.44, side * 0.19, 0.41, 0.022, 0.018, 0.006, PAINT_BLEND, 0.85);
        for (int k = 0; k < 5; k++) { /* ribs cut across, along the body wall */
            const double t = (side < 0 ? M_PI : 0) + side * (-0.6 + 0.3 * k);
            ellipse_u(c, 0.80 * cos(t), 0.06 + 0.56 * sin(t), 0.025, 0.035, t, 0.006, PAINT_BLEND, 0.82);
        }
    }
    ellipse_u(c, 0, 0.30, 0.12, 0.11, 0, 0.006, PAINT_BLEND, 0.85); /* vertebral body */
    ellipse_u(c, 0, 0.30, 0.09, 0.085, 0, 0.01, PAINT_BLEND, 0.62);
    capsule_u(c, 0, 0.48, 0, 0.6, 0.035, 0.03, 0.006, PAINT_BLEND, 0.85);  /* posterior elements */
    ellipse_u(c, 0, 0.44, 0.04, 0.04, 0, 0.006, PAINT_BLEND, 0.36);        /* spinal canal */
    ellipse_u(c, 0.05, 0.15, 0.045, 0.045, 0, 0.006, PAINT_BLEND, enhanced ? 0.80 : 0.45); /* aorta */
    ellipse_u(c, -0.10, 0.13, 0.05, 0.04, 0, 0.006, PAINT_BLEND, enhanced ? 0.65 : 0.45);  /* IVC */
    const int loops = 6 + (int)(4 * rng_uniform(tex));
    for (int k = 0; k < loops; k++) { /* bowel: walls around gas or fluid */
        const double u = -0.02 + 0.38 * rng_uniform(tex), v = -0.18 + 0.2 * rng_uniform(tex);
        const double r = 0.035 + 0.025 * rng_uniform(tex);
        const int gas = rng_uniform(tex) < 0.4;
        ellipse_u(c, u, v, r, r, 0, 0.008, PAINT_BLEND, 0.5);
        ellipse_u(c, u, v, r - 0.012, r - 0.012, 0, 0.006, PAINT_BLEND, gas ? 0.02 : 0.36);
    }
    return add_texture(c, tex, 0.04 * c->s, 0.015, NULL, err);
}

/* Intensities of the head's tissues, per modality. */
typedef struct head_tissues {
    double scalp, skull, grey, white, csf, falx;
    double texture; // amplitude of the cortical texture
} head_tissues;

static int draw_head_with(canvas *c, const head_tissues *t, rng_state *tex, rc_error *err)
{
    fill(c, 0.0f);
    ellipse_u(c, 0, 0, 0.74, 0.90, 0, 0.015, PAINT_BLEND, t->scalp);
    ellipse_u(c, 0, 0, 0.70, 0.86, 0, 0.008, PAINT_BLEND, t->skull);
    ellipse_u(c, 0, 0.01, 0.645, 0.805, 0, 0.008, PAINT_BLEND, t->grey);
    ellipse_u(c, 0, 0.02, 0.50, 0.66, 0, 0.06, PAINT_BLEND, t->white);
    for (int side = -1; side <= 1; side += 2) {
        ellipse_u(c, side * 0.075, -0.12, 0.045, 0.17, -side * 0.25, 0.01, PAINT_BLEND, t->csf); /* frontal horns */
        ellipse_u(c, side * 0.11, 0.18, 0.035, 0.10, side * 0.3, 0.01, PAINT_BLEND, t->csf);    /* occipital horns */
    }
    ellipse_u(c, 0, 0.03, 0.012, 0.06, 0, 0.006, PAINT_BLEND, t->csf); /* third ventricle */
    capsule_u(c, 0, -0.8, 0, -0.32, 0.006, 0.006, 0.004, PAINT_BLEND, t->falx);
    capsule_u(c, 0, 0.32, 0, 0.8, 0.006, 0.006, 0.004, PAINT_BLEND, t->falx);
    const shape brain = ellipse_shape(unit_x(c, 0), unit_y(c, 0.01), 0.64 * c->s, 0.80 * c->s, 0);
    return add_texture(c, tex, 0.05 * c->s, t->texture, &brain, err); /* sulci and gyri */
}

static int draw_head_ct(canvas *c, const synth_scene *sc, rng_state *tex, rc_error *err)
{
    (void)sc;
    static const head_tissues ct = {0.32, 0.95, 0.45, 0.41, 0.12, 0.60, 0.03};
    return draw_head_with(c, &ct, tex, err);
}

static int draw_brain_mri(canvas *c, const synth_scene *sc, rng_state *tex, rc_error *err)
{
    static const head_tissues mri[4] = {
        {0.75, 0.08, 0.45, 0.62, 0.08, 0.20, 0.04}, /* T1 */
        {0.75, 0.08, 0.45, 0.62, 0.08, 0.35, 0.04}, /* T1 after gadolinium: the dura enhances */
        {0.55, 0.05, 0.58, 0.42, 0.92, 0.20, 0.04}, /* T2 */
        {0.50, 0.05, 0.55, 0.45, 0.06, 0.20, 0.04}, /* FLAIR */
    };
    return draw_head_with(c, &mri[sc->variant], tex, err);
}

/* An AP knee with the lateral side (fibula) towards +u; a right knee is
 * drawn flipped so that its lateral side is on the image's left. */
static int draw_knee(canvas *c, const synth_scene *sc, rng_state *tex, rc_error *err)
{
    (void)sc;
    fill(c, 0.05f);
    capsule_u(c, 0, -1.4, 0, 1.4, 0.62, 0.52, 0.05, PAINT_BLEND, 0.30); /* soft tissue */
    capsule_u(c, 0, -1.4, 0, -0.3, 0.19, 0.25, 0.012, PAINT_BLEND, 0.74); /* femur */
    for (int side = -1; side <= 1; side += 2)
        ellipse_u(c, side * 0.19, -0.17, 0.19, 0.14, 0, 0.012, PAINT_BLEND, 0.74); /* condyles */
    capsule_u(c, 0, -1.4, 0, -0.5, 0.11, 0.13, 0.03, PAINT_BLEND, 0.60); /* medullary canal */
    ellipse_u(c, 0, -0.25, 0.30, 0.14, 0, 0.05, PAINT_BLEND, 0.66);      /* metaphysis */
    ellipse_u(c, 0, -0.22, 0.12, 0.15, 0, 0.03, PAINT_ADD, 0.06);         /* patella, through the femur */
    capsule_u(c, 0, 0.2, 0, 1.4, 0.25, 0.17, 0.012, PAINT_BLEND, 0.74);  /* tibia */
    capsule_u(c, -0.36, 0.08, 0.36, 0.08, 0.06, 0.06, 0.012, PAINT_BLEND, 0.74); /* tibial plateau */
    ellipse_u(c, 0, 0.2, 0.33, 0.14, 0, 0.012, PAINT_BLEND, 0.74);
    ellipse_u(c, 0, 0.26, 0.26, 0.12, 0, 0.05, PAINT_BLEND, 0.66);
    capsule_u(c, 0, 0.45, 0, 1.4, 0.10, 0.09, 0.03, PAINT_BLEND, 0.60);
    for (int side = -1; side <= 1; side += 2)
        ellipse_u(c, side * 0.05, 0.01, 0.03, 0.04, 0, 0.008, PAINT_BLEND, 0.72); /* tibial spines */
    ellipse_u(c, 0.41, 0.24, 0.08, 0.065, 0, 0.012, PAINT_BLEND, 0.70); /* fibular head */
    capsule_u(c, 0.41, 0.26, 0.37, 1.4, 0.055, 0.045, 0.012, PAINT_BLEND, 0.70);
    return add_texture(c, tex, 0.025 * c->s, 0.025, NULL, err); /* trabecular bone */
}

#define BRAIN_SITES                                                                                        \
    8,                                                                                                     \
    {                                                                                                      \
        {"right frontal lobe", -0.30, -0.10, -0.62, -0.42, 35},                                            \
            {"left frontal lobe", 0.10, 0.30, -0.62, -0.42, 35},                                           \
            {"right parietal lobe", -0.48, -0.32, 0.0, 0.30, 30},                                          \
            {"left parietal lobe", 0.32, 0.48, 0.0, 0.30, 30},                                             \
            {"right occipital lobe", -0.28, -0.10, 0.50, 0.64, 25},                                        \
            {"left occipital lobe", 0.10, 0.28, 0.50, 0.64, 25},                                           \
            {"right basal ganglia", -0.27, -0.19, -0.06, 0.08, 20},                                        \
            {"left basal ganglia", 0.19, 0.27, -0.06, 0.08, 20},                                           \
    }

static const study_info studies[SYNTH_N_STUDIES] = {
    [SYNTH_CHEST_XRAY] =
        {"chest X-ray", 0.30, 2, 200, 0.007, 0.015, 0, 7,
         {
             {"right upper lobe", -0.58, -0.30, -0.45, -0.20, 60},
             {"right middle lobe", -0.52, -0.30, 0.00, 0.18, 40},
             {"right lower lobe", -0.60, -0.38, 0.25, 0.42, 40},
             {"left upper lobe", 0.30, 0.56, -0.45, -0.15, 60},
             {"left lower lobe", 0.48, 0.62, 0.15, 0.38, 40},
             {"right perihilar region", -0.30, -0.22, -0.12, 0.02, 40},
             {"left perihilar region", 0.26, 0.32, -0.15, -0.02, 40},
         },
         {{"Chest X-ray", "Chest radiograph", "Posteroanterior chest radiograph", "PA chest X-ray",
           "Frontal chest radiograph", NULL},
          {"Chest X-ray", "Anteroposterior chest radiograph", "AP chest X-ray", "Portable AP chest radiograph",
           "Frontal chest radiograph", NULL}},
         {"$ without abnormal findings.", "Normal chest radiograph.", "$ showing clear lungs.",
          "$ with no focal lung lesion.", "$ showing no acute cardiopulmonary abnormality.", NULL},
         {"No pleural effusion.", "The heart size is normal.", "No pneumothorax.", NULL},
         draw_chest},
    [SYNTH_ABDOMEN_CT] =
        {"abdominal CT", 0.25, 2, 220, 0.005, 0.02, 0, 5,
         {
             {"right hepatic lobe", -0.58, -0.38, -0.15, 0.05, 60},
             {"liver", -0.45, -0.20, -0.25, -0.05, 60},
             {"spleen", 0.48, 0.55, -0.10, 0.00, 40},
             {"right kidney", -0.33, -0.29, 0.17, 0.23, 35},
             {"left kidney", 0.29, 0.33, 0.17, 0.23, 35},
         },
         {{"Axial contrast-enhanced CT of the abdomen", "Contrast-enhanced CT scan of the abdomen",
           "Axial CT of the abdomen", "CT abdomen (axial view, portal venous phase)", "Abdominal CT", NULL},
          {"Non-contrast axial CT of the abdomen", "Unenhanced CT of the abdomen", "Axial CT of the abdomen",
           "CT abdomen (axial view)", "Abdominal CT", NULL}},
         {"$ without abnormal findings.", "$ with no focal lesion.", "$ showing a normal liver, spleen and kidneys.",
          "Normal abdominal CT.", NULL},
         {"No free fluid.", "No lymphadenopathy.", "No ascites.", NULL},
         draw_abdomen},
    [SYNTH_HEAD_CT] =
        {"head CT", 0.12, 1, 105, 0.005, 0.015, 0, BRAIN_SITES,
         {{"Non-contrast CT of the head", "Axial CT of the brain", "Head CT", "Unenhanced axial CT scan of the brain",
           "CT brain (axial view)", NULL}},
         {"$ without abnormal findings.", "$ showing no acute intracranial abnormality.", "Normal head CT.",
          "$ with no focal lesion.", NULL},
         {"No midline shift.", "The ventricles are normal in size.", "No mass effect.", NULL},
         draw_head_ct},
    [SYNTH_BRAIN_MRI] =
        {"brain MRI", 0.18, 4, 105, 0.007, 0.02, 1, BRAIN_SITES,
         {{"Axial T1-weighted MRI of the brain", "Brain MRI (axial T1-weighted image)", "T1-weighted MR image",
           "Axial T1-weighted image", NULL},
          {"Contrast-enhanced T1-weighted MRI of the brain", "Axial post-gadolinium T1-weighted image",
           "Brain MRI (T1-weighted, post-contrast)", "Gadolinium-enhanced T1-weighted MRI", NULL},
          {"Axial T2-weighted MRI of the brain", "Brain MRI (axial T2-weighted image)", "T2-weighted MR image",
           "Axial T2-weighted image", NULL},
          {"Axial FLAIR image of the brain", "Brain MRI (FLAIR sequence)", "Axial FLAIR MRI", "FLAIR MR image",
           NULL}},
         {"Brain MRI without abnormal findings.", "$ without abnormal findings.", "$ showing no focal lesion.",
          "Normal brain MRI.", NULL},
         {"No midline shift.", "No mass effect.", NULL},
         draw_brain_mri},
    [SYNTH_KNEE_XRAY] =
        {"knee X-ray", 0.15, 2, 100, 0.005, 0.012, 0, 6,
         {
             {"distal femur", -0.08, 0.08, -0.75, -0.45, 30},
             {"proximal tibia", -0.08, 0.08, 0.35, 0.60, 30},
             {"medial femoral condyle", -0.24, -0.15, -0.22, -0.14, 20},
             {"lateral femoral condyle", 0.15, 0.24, -0.22, -0.14, 20},
             {"medial tibial plateau", -0.25, -0.15, 0.13, 0.18, 18},
             {"lateral tibial plateau", 0.15, 0.25, 0.13, 0.18, 18},
         },
         {{"Anteroposterior radiograph of the right knee", "AP X-ray of the right knee",
           "Right knee radiograph (AP view)", "Plain radiograph of the right knee", "Right knee X-ray", NULL},
          {"Anteroposterior radiograph of the left knee", "AP X-ray of the left knee", "Left knee radiograph (AP view)",
           "Plain radiograph of the left knee", "Left knee X-ray", NULL}},
         {"$ without abnormal findings.", "$ showing no fracture or focal bone lesion.", "$ with normal joint spaces.",
          "Normal knee radiograph.", NULL},
         {"No fracture.", "No joint effusion.", "The joint spaces are preserved.", NULL},
         draw_knee},
};

enum { ALL_SITES = 0xff };

static const finding_info findings[] = {
    {SYNTH_CHEST_XRAY, 0x3, "nodule", SYNTH_SOLID, 0.22, 8, 30, 0, ALL_SITES,
     {"~ @ nodule", "~ @ pulmonary nodule", "~ well-defined @ nodule", "~ round opacity measuring #",
      "~ solitary pulmonary nodule measuring #", "~ @ \"coin lesion\"", NULL}},
    {SYNTH_CHEST_XRAY, 0x3, "mass", SYNTH_SOLID, 0.25, 35, 70, 1, ALL_SITES,
     {"~ @ mass", "~ large mass measuring #", "~ @ ill-defined opacity", "~ lobulated mass measuring #",
      "~ @ soft-tissue mass", NULL}},
    {SYNTH_CHEST_XRAY, 0x3, "calcified granuloma", SYNTH_SPECK, 0.45, 3, 6, 0, ALL_SITES,
     {"~ calcified granuloma", "~ small calcified nodule", "~ @ calcified nodule", "~ punctate calcification", NULL}},
    {SYNTH_CHEST_XRAY, 0x3, "cavity with an air-fluid level", SYNTH_FLUID_LEVEL, 0.30, 30, 60, 0, 0x1d,
     {"~ cavitary lesion with an air-fluid level", "~ @ lung abscess with an air-fluid level",
      "~ thick-walled cavity measuring # with an air-fluid level", NULL}},

    {SYNTH_ABDOMEN_CT, 0x3, "hypodense lesion", SYNTH_SHARP, -0.22, 10, 60, 1, ALL_SITES,
     {"~ @ hypodense lesion", "~ hypodense lesion measuring #", "~ @ low-attenuation lesion",
      "~ well-circumscribed cystic lesion measuring #", "~ simple cyst", NULL}},
    {SYNTH_ABDOMEN_CT, 0x1, "enhancing mass", SYNTH_SOLID, 0.20, 20, 60, 1, 0x1b,
     {"~ @ enhancing mass", "~ heterogeneously enhancing mass measuring #", "~ @ hypervascular lesion",
      "~ @ hyperenhancing lesion", NULL}},
    {SYNTH_ABDOMEN_CT, 0x3, "renal calculus", SYNTH_SPECK, 0.40, 4, 12, 0, 0x18,
     {"~ @ renal calculus", "~ @ kidney stone", "~ calculus measuring #", "~ small renal stone", NULL}},
    {SYNTH_ABDOMEN_CT, 0x3, "calcified granuloma", SYNTH_SPECK, 0.40, 3, 8, 0, 0x07,
     {"~ calcified granuloma", "~ small calcification", "~ @ calcified focus", NULL}},
    {SYNTH_ABDOMEN_CT, 0x3, "abscess", SYNTH_FLUID_LEVEL, 0.22, 30, 60, 0, 0x07,
     {"~ @ collection with an air-fluid level", "~ abscess with an air-fluid level",
      "~ fluid collection containing gas, measuring #", NULL}},
    {SYNTH_ABDOMEN_CT, 0x1, "rim-enhancing lesion", SYNTH_RING, 0.22, 20, 50, 0, 0x03,
     {"~ rim-enhancing lesion", "~ @ ring-enhancing lesion", "~ cystic lesion with an enhancing wall, measuring #",
      "~ @ lesion with a \"target\" appearance", NULL}},

    {SYNTH_HEAD_CT, 0x1, "hemorrhage", SYNTH_SOLID, 0.30, 10, 40, 0, ALL_SITES,
     {"~ @ intraparenchymal hemorrhage", "~ hyperdense lesion measuring #", "~ @ acute hematoma",
      "~ hyperdense focus consistent with hemorrhage", NULL}},
    {SYNTH_HEAD_CT, 0x1, "infarct", SYNTH_SOLID, -0.15, 15, 35, 0, ALL_SITES,
     {"~ hypodense area consistent with infarction", "~ @ hypodense lesion", "~ area of low attenuation measuring #",
      NULL}},
    {SYNTH_HEAD_CT, 0x1, "calcification", SYNTH_SPECK, 0.45, 3, 6, 0, ALL_SITES,
     {"~ punctate calcification", "~ small calcified focus", "~ @ calcification", NULL}},

    {SYNTH_BRAIN_MRI, 0x3, "hypointense lesion", SYNTH_SOLID, -0.22, 10, 40, 0, ALL_SITES,
     {"~ @ hypointense lesion", "~ hypointense lesion measuring #", "~ @ T1-hypointense lesion", NULL}},
    {SYNTH_BRAIN_MRI, 0x2, "ring-enhancing lesion", SYNTH_RING, 0.30, 15, 35, 0, ALL_SITES,
     {"~ @ ring-enhancing lesion", "~ ring-enhancing mass measuring #", "~ peripherally enhancing lesion", NULL}},
    {SYNTH_BRAIN_MRI, 0x2, "enhancing mass", SYNTH_SOLID, 0.30, 15, 35, 0, ALL_SITES,
     {"~ @ homogeneously enhancing mass", "~ enhancing lesion measuring #", "~ @ enhancing nodule", NULL}},
    {SYNTH_BRAIN_MRI, 0xc, "hyperintense lesion", SYNTH_SOLID, 0.25, 10, 35, 0, ALL_SITES,
     {"~ @ hyperintense lesion", "~ hyperintense lesion measuring #", "~ @ T2-hyperintense lesion", NULL}},
    {SYNTH_BRAIN_MRI, 0x4, "cystic lesion", SYNTH_SHARP, 0.35, 10, 30, 0, ALL_SITES,
     {"~ @ cystic lesion", "~ well-defined cystic lesion measuring #", "~ @ T2-hyperintense cyst", NULL}},
    {SYNTH_BRAIN_MRI, 0xc, "white matter lesion", SYNTH_SPECK, 0.35, 3, 8, 0, ALL_SITES,
     {"~ small hyperintense white matter lesion", "~ punctate hyperintense focus", "~ @ hyperintense focus", NULL}},

    {SYNTH_KNEE_XRAY, 0x3, "lytic lesion", SYNTH_SHARP, -0.25, 10, 35, 1, ALL_SITES,
     {"~ @ lytic lesion", "~ well-defined lucent lesion measuring #", "~ @ osteolytic lesion",
      "~ geographic lytic lesion", NULL}},
    {SYNTH_KNEE_XRAY, 0x3, "sclerotic lesion", SYNTH_SOLID, 0.20, 8, 30, 0, ALL_SITES,
     {"~ @ sclerotic lesion", "~ sclerotic focus measuring #", "~ bone island", NULL}},
    {SYNTH_KNEE_XRAY, 0x3, "lesion with a sclerotic rim", SYNTH_RING, 0.20, 15, 35, 0, ALL_SITES,
     {"~ lucent lesion with a sclerotic rim", "~ @ well-circumscribed lesion with a sclerotic margin", NULL}},
};
#define N_FINDINGS ((int)(sizeof findings / sizeof findings[0]))

static const char *const verbs[] = {" showing ", " demonstrating ", " revealing ", " with ", " shows ", NULL};

const char *synth_study_name(synth_study study)
{
    return study >= 0 && study < SYNTH_N_STUDIES ? studies[study].name : "unknown study";
}

const char *synth_site_name(synth_study study, int site)
{
    if (study < 0 || study >= SYNTH_N_STUDIES || site < 0 || site >= studies[study].n_sites)
        return NULL;
    return studies[study].sites[site].name;
}

const char *synth_finding_name(int finding)
{
    return finding >= 0 && finding < N_FINDINGS ? findings[finding].name : NULL;
}

/* ------------------------------------------------------------------------
 * Scenes
 * ------------------------------------------------------------------------ */

static int count_words(const char *const *list)
{
    int n = 0;
    while (n < MAX_WORDS && list[n])
        n++;
    return n;
}

static const char *pick_word(rng_state *r, const char *const *list)
{
    return list[(int)(rng_uniform(r) * count_words(list))];
}

static int pick_bit(rng_state *r, unsigned set)
{
    int n = __builtin_popcount(set), k = (int)(rng_uniform(r) * n);
    for (int bit = 0; bit < 32; bit++)
        if ((set >> bit & 1) && k-- == 0)
            return bit;
    return 0;
}

/* Tries to place one finding; 0 when it did not fit beside the others. */
static int place_lesion(rng_state *r, synth_scene *sc, synth_lesion *l)
{
    const study_info *st = &studies[sc->study];
    int candidates[N_FINDINGS], n = 0;
    for (int f = 0; f < N_FINDINGS; f++)
        if (findings[f].study == sc->study && (findings[f].variants >> sc->variant & 1))
            candidates[n++] = f;
    const finding_info *fi = &findings[candidates[(int)(rng_uniform(r) * n)]];
    const unsigned sites = fi->sites & ((1u << st->n_sites) - 1);
    const site_info *si = &st->sites[pick_bit(r, sites)];

    /* Sizes are whole millimetres; the smallest keeps the finding visible
     * (radius >= 3 pixels, 1.2 for specks) unless the site cannot hold it. */
    const double min_radius_px = fi->shape == SYNTH_SPECK ? 1.2 : 3.0;
    int lo = fi->min_mm, hi = fi->max_mm < si->max_mm ? fi->max_mm : si->max_mm;
    const int visible = (int)ceil(2 * min_radius_px * sc->mm_per_pixel);
    lo = lo > visible ? lo : visible;
    lo = lo < hi ? lo : hi;
    const int size = lo + (int)(rng_uniform(r) * (hi - lo + 1));

    memset(l, 0, sizeof *l);
    l->finding = (int)(fi - findings);
    l->site = (int)(si - st->sites);
    l->shape = fi->shape;
    l->size_mm[0] = size;
    l->rx = l->ry = 0.5 * size / sc->mm_per_pixel;
    if (fi->elongated) {
        int minor = (int)lrint(size * (0.6 + 0.25 * rng_uniform(r)));
        l->size_mm[1] = minor < 1 ? 1 : minor;
        l->ry = 0.5 * l->size_mm[1] / sc->mm_per_pixel;
        l->angle = M_PI * rng_uniform(r);
    }
    const double u = si->u0 + (si->u1 - si->u0) * rng_uniform(r), v = si->v0 + (si->v1 - si->v0) * rng_uniform(r);
    l->cx = sc->centre_x + sc->flip * u * sc->scale;
    l->cy = sc->centre_y + v * sc->scale;
    l->contrast = fi->contrast * (0.85 + 0.3 * rng_uniform(r));

    const double reach = 3 * sc->blur_sigma + 3;
    for (int k = 0; k < sc->n_lesions; k++) {
        const synth_lesion *o = &sc->lesions[k];
        if (hypot(l->cx - o->cx, l->cy - o->cy) < l->rx + o->rx + 2 * reach)
            return 0;
    }
    return 1;
}

/* Distance from point p to the segment a-b. */
static double segment_distance(const double p[2], const double a[2], const double b[2])
{
    const double ax = b[0] - a[0], ay = b[1] - a[1], len2 = ax * ax + ay * ay;
    double t = len2 > 0 ? ((p[0] - a[0]) * ax + (p[1] - a[1]) * ay) / len2 : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    return hypot(a[0] + t * ax - p[0], a[1] + t * ay - p[1]);
}

/* Points an arrow at lesion l from the first of 8 directions (starting at a
 * random one) where it stays inside the image and clear of other lesions. */
static void place_arrow(rng_state *r, synth_scene *sc, synth_lesion *l)
{
    const double length = fmax(8.0, 0.16 * sc->scale), gap = 2 + 3 * sc->blur_sigma;
    const double start = 2 * M_PI * rng_uniform(r);
    for (int k = 0; k < 8; k++) {
        const double a = start + k * M_PI / 4, dx = cos(a), dy = sin(a);
        const double tip[2] = {l->cx + (l->rx + gap) * dx, l->cy + (l->rx + gap) * dy};
        const double tail[2] = {tip[0] + length * dx, tip[1] + length * dy};
        int ok = tip[0] > 3 && tip[0] < sc->width - 3 && tip[1] > 3 && tip[1] < sc->height - 3 && tail[0] > 3 &&
                 tail[0] < sc->width - 3 && tail[1] > 3 && tail[1] < sc->height - 3;
        for (int o = 0; o < sc->n_lesions && ok; o++) {
            const synth_lesion *other = &sc->lesions[o];
            const double centre[2] = {other->cx, other->cy};
            ok = other == l || segment_distance(centre, tip, tail) > other->rx + gap;
        }
        if (ok) {
            l->has_arrow = 1;
            memcpy(l->arrow_tip, tip, sizeof tip);
            memcpy(l->arrow_tail, tail, sizeof tail);
            return;
        }
    }
}

void synth_scene_choose(rng_state *r, int width, int height, unsigned flags, synth_scene *sc)
{
    memset(sc, 0, sizeof *sc);
    double u = rng_uniform(r), total = 0;
    for (int s = 0; s < SYNTH_N_STUDIES; s++)
        total += studies[s].weight;
    u *= total;
    sc->study = SYNTH_N_STUDIES - 1;
    for (int s = 0; s < SYNTH_N_STUDIES; s++) {
        if (u < studies[s].weight) {
            sc->study = (synth_study)s;
            break;
        }
        u -= studies[s].weight;
    }
    const study_info *st = &studies[sc->study];
    sc->variant = (int)(rng_uniform(r) * st->n_variants);
    sc->width = width;
    sc->height = height;
    const int side = width < height ? width : height;
    sc->scale = 0.5 * side * (0.86 + 0.11 * rng_uniform(r));
    sc->centre_x = 0.5 * width + side * 0.06 * (rng_uniform(r) - 0.5);
    sc->centre_y = 0.5 * height + side * 0.06 * (rng_uniform(r) - 0.5);
    sc->flip = sc->study == SYNTH_KNEE_XRAY && sc->variant == 0 ? -1 : 1;
    sc->mm_per_pixel = st->mm_per_unit / sc->scale;
    sc->blur_sigma = st->blur_units * sc->scale;
    sc->noise_sigma = st->noise_sigma;
    sc->texture_seed = rng_next(r);
    sc->flags = flags;
    sc->arrow_rgb[0] = sc->arrow_rgb[1] = sc->arrow_rgb[2] = 1.0f;
    if (flags & SYNTH_COLOUR) {
        static const float colours[3][3] = {{1.0f, 0.9f, 0.1f}, {0.95f, 0.15f, 0.1f}, {0.2f, 0.9f, 0.25f}};
        memcpy(sc->arrow_rgb, colours[(int)(rng_uniform(r) * 3)], sizeof sc->arrow_rgb);
        sc->arrow_colour_named = rng_uniform(r) < 0.6;
    }
    const double n = rng_uniform(r);
    const int wanted = n < 0.2 ? 0 : n < 0.7 ? 1 : n < 0.9 ? 2 : 3;
    for (int attempt = 0; attempt < 20 && sc->n_lesions < wanted; attempt++)
        if (place_lesion(r, sc, &sc->lesions[sc->n_lesions]))
            sc->n_lesions++;
    for (int k = 0; k < sc->n_lesions; k++)
        if (rng_uniform(r) < 0.6)
            place_arrow(r, sc, &sc->lesions[k]);
}

static void draw_lesion(canvas *c, const synth_lesion *l)
{
    const double magnitude = fabs(l->contrast);
    shape e = ellipse_shape(l->cx, l->cy, l->rx, l->ry, l->angle);
    switch (l->shape) {
    case SYNTH_SOLID: paint(c, &e, fmax(1.5, 0.4 * l->ry), PAINT_ADD, l->contrast); break;
    case SYNTH_SHARP: paint(c, &e, 1.0, PAINT_ADD, l->contrast); break;
    case SYNTH_SPECK: paint(c, &e, 0.8, PAINT_ADD, l->contrast); break;
    case SYNTH_FLUID_LEVEL: {
        const double wall = fmax(1.5, 0.2 * l->ry);
        paint(c, &e, 1.0, PAINT_ADD, 0.5 * magnitude);
        shape inside = ellipse_shape(l->cx, l->cy, fmax(0.5, l->rx - wall), fmax(0.5, l->ry - wall), l->angle);
        inside.clip_y = l->cy + 0.1 * l->ry;
        inside.clip = -1; /* gas above the level */
        paint(c, &inside, 1.0, PAINT_BLEND, 0.02);
        inside.clip = 1; /* fluid below it */
        paint(c, &inside, 1.0, PAINT_ADD, magnitude);
        break;
    }
    case SYNTH_RING: {
        const double half = 0.5 * fmax(1.5, 0.22 * l->ry);
        const shape rim =
            arc_shape(l->cx, l->cy, fmax(0.5, l->rx - half), fmax(0.5, l->ry - half), l->angle, -M_PI, M_PI, half, 1.0);
        paint(c, &rim, 1.0, PAINT_ADD, magnitude);
        const shape core =
            ellipse_shape(l->cx, l->cy, fmax(0.5, l->rx - 2 * half), fmax(0.5, l->ry - 2 * half), l->angle);
        paint(c, &core, 1.0, PAINT_ADD, -0.5 * magnitude);
        break;
    }
    }
}

static void draw_arrow(canvas *c, const synth_lesion *l, double scale)
{
    const double half = fmax(0.8, 0.008 * scale);
    const double *tip = l->arrow_tip, *tail = l->arrow_tail;
    const double dx = tail[0] - tip[0], dy = tail[1] - tip[1], len = hypot(dx, dy);
    const shape shaft = capsule_shape(tip[0], tip[1], tail[0], tail[1], half, half);
    paint(c, &shaft, 1.0, PAINT_MAX, 1.0);
    for (int side = -1; side <= 1; side += 2) { /* the head's two barbs */
        const double a = side * 0.5, head = 0.35 * len;
        const double hx = (dx * cos(a) - dy * sin(a)) / len * head, hy = (dx * sin(a) + dy * cos(a)) / len * head;
        const shape barb = capsule_shape(tip[0], tip[1], tip[0] + hx, tip[1] + hy, half, half);
        paint(c, &barb, 1.0, PAINT_MAX, 1.0);
    }
}

/* Two independent standard normal deviates (Marsaglia's polar method: no
 * trigonometry, one logarithm per pair), for per-pixel noise. */
static void normal_pair(rng_state *r, double out[2])
{
    double u, v, s;
    do {
        u = 2 * rng_uniform(r) - 1;
        v = 2 * rng_uniform(r) - 1;
        s = u * u + v * v;
    } while (s >= 1 || s == 0);
    const double f = sqrt(-2 * log(s) / s);
    out[0] = u * f;
    out[1] = v * f;
}

int synth_scene_draw(const synth_scene *sc, float *image, float *annotation, rc_error *err)
{
    const study_info *st = &studies[sc->study];
    canvas c = {image, sc->width, sc->height, sc->centre_x, sc->centre_y, sc->scale, sc->flip};
    rng_state tex;
    rng_seed(&tex, sc->texture_seed);
    if (st->draw(&c, sc, &tex, err) < 0)
        return -1;
    for (int k = 0; k < sc->n_lesions; k++)
        draw_lesion(&c, &sc->lesions[k]);
    if (gaussian_blur(&c, sc->blur_sigma, err) < 0)
        return -1;
    /* The noise stream follows the anatomy's draws only, so it is the same
     * with and without findings. */
    const size_t n = (size_t)sc->width * sc->height;
    double pair[2];
    for (size_t i = 0; i < n; i++) {
        if (i % 2 == 0)
            normal_pair(&tex, pair);
        double v = image[i] + sc->noise_sigma * pair[i % 2];
        if (st->rician)
            v = fabs(v);
        image[i] = (float)clamp01(v);
    }
    if (annotation) {
        canvas a = c;
        a.px = annotation;
        fill(&a, 0.0f);
        for (int k = 0; k < sc->n_lesions; k++)
            if (sc->lesions[k].has_arrow)
                draw_arrow(&a, &sc->lesions[k], sc->scale);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Captions
 * ------------------------------------------------------------------------ */

typedef struct text_buf {
    char *buf;
    size_t cap;   // bytes at buf, NUL included
    size_t len;
    int overflow; // 1 once something did not fit
} text_buf;

static void text_put(text_buf *t, const char *s, size_t n)
{
    if (t->overflow || t->len + n + 1 > t->cap) {
        t->overflow = 1;
        return;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void text_add(text_buf *t, const char *s) { text_put(t, s, strlen(s)); }

/* Centimetres from millimetres, without a trailing ".0". */
static void format_cm(int mm, char *out, size_t size)
{
    if (mm % 10 == 0)
        snprintf(out, size, "%d", mm / 10);
    else
        snprintf(out, size, "%d.%d", mm / 10, mm % 10);
}

/* A lesion's size as captions write it, either before a noun
 * (adjective: "2.5-cm", "8-mm", "3.1 x 2.2 cm") or as a measurement
 * ("2.5 cm", "8 mm", "3.1 x 2.2 cm"). */
static void format_size(const synth_lesion *l, int adjective, unsigned flags, rng_state *r, char *out, size_t size)
{
    char a[16], b[16];
    format_cm(l->size_mm[0], a, sizeof a);
    if (l->size_mm[1] > 0) {
        format_cm(l->size_mm[1], b, sizeof b);
        const char *times = (flags & SYNTH_MESSY) && rng_uniform(r) < 0.5 ? "\xc3\x97" : "x"; /* U+00D7 */
        snprintf(out, size, "%s %s %s cm", a, times, b);
        return;
    }
    /* Below a centimetre captions mostly give millimetres. */
    const double u = rng_uniform(r);
    if ((l->size_mm[0] < 10 && u < 0.8) || (l->size_mm[0] < 30 && u < 0.3))
        snprintf(out, size, adjective ? "%d-mm" : "%d mm", l->size_mm[0]);
    else if (adjective && u < 0.85)
        snprintf(out, size, "%s-cm", a);
    else
        snprintf(out, size, "%s cm", a);
}

/* "an" before a vowel sound: a, e, i, o, or a number read as eight,
 * eighteen, eleven or eighty... */
static const char *article_for(const char *word)
{
    if (isdigit((unsigned char)word[0])) {
        if (word[0] == '8')
            return "an";
        if (word[0] == '1' && (word[1] == '1' || word[1] == '8') && !isdigit((unsigned char)word[2]))
            return "an";
        return "a";
    }
    return strchr("aeioAEIO", word[0]) && word[0] ? "an" : "a";
}

static void add_finding(text_buf *t, const synth_scene *sc, const synth_lesion *l, rng_state *r)
{
    const char *tpl = pick_word(r, findings[l->finding].phrases);
    char phrase[256], size_text[48];
    text_buf p = {phrase, sizeof phrase, 0, 0};
    phrase[0] = '\0';
    for (const char *s = tpl; *s; s++) {
        if (*s == '@' || *s == '#') {
            format_size(l, *s == '@', sc->flags, r, size_text, sizeof size_text);
            text_add(&p, size_text);
        } else {
            text_put(&p, s, 1);
        }
    }
    if (strncmp(phrase, "~ ", 2) == 0) {
        text_add(t, article_for(phrase + 2));
        text_add(t, phrase + 1);
    } else {
        text_add(t, phrase);
    }
    text_add(t, rng_uniform(r) < 0.85 ? " in the " : " within the ");
    text_add(t, studies[sc->study].sites[l->site].name);
}

static void add_arrow_label(text_buf *t, const synth_scene *sc, int plural)
{
    static const char *const names[] = {"yellow", "red", "green"};
    const float *rgb = sc->arrow_rgb;
    const char *colour = rgb[0] > 0.9f && rgb[1] > 0.8f && rgb[2] < 0.5f ? names[0]
                         : rgb[0] > 0.9f && rgb[1] < 0.5f                 ? names[1]
                                                                          : names[2];
    text_add(t, " (");
    if (sc->arrow_colour_named) {
        text_add(t, colour);
        text_add(t, " ");
    }
    text_add(t, plural ? "arrows)" : "arrow)");
}

int synth_scene_caption(const synth_scene *sc, rng_state *r, char *caption, size_t size, rc_error *err)
{
    if (!caption || size == 0)
        return rc_fail(err, "no room for a caption");
    text_buf t = {caption, size, 0, 0};
    caption[0] = '\0';
    const study_info *st = &studies[sc->study];
    const char *title = pick_word(r, st->titles[sc->variant]);
    if (sc->n_lesions == 0) {
        for (const char *s = pick_word(r, st->normals); *s; s++)
            if (*s == '$')
                text_add(&t, title);
            else
                text_put(&t, s, 1);
    } else {
        int all_arrows = 1;
        for (int k = 0; k < sc->n_lesions; k++)
            all_arrows &= sc->lesions[k].has_arrow;
        const int grouped = sc->n_lesions > 1 && all_arrows && rng_uniform(r) < 0.4;
        text_add(&t, title);
        text_add(&t, pick_word(r, verbs));
        for (int k = 0; k < sc->n_lesions; k++) {
            if (k > 0)
                text_add(&t, k == sc->n_lesions - 1 ? " and " : ", ");
            add_finding(&t, sc, &sc->lesions[k], r);
            if (sc->lesions[k].has_arrow && !grouped)
                add_arrow_label(&t, sc, 0);
        }
        if (grouped)
            add_arrow_label(&t, sc, 1);
        text_add(&t, ".");
    }
    if (rng_uniform(r) < 0.3) {
        text_add(&t, (sc->flags & SYNTH_MESSY) && rng_uniform(r) < 0.5 ? "\n" : " ");
        text_add(&t, pick_word(r, st->negatives));
    }
    if (t.overflow)
        return rc_fail(err, "a caption of the %s scene does not fit in %zu bytes", st->name, size);
    return (int)t.len;
}

/* ------------------------------------------------------------------------
 * Composition and phantoms
 * ------------------------------------------------------------------------ */

int synth_pixel_bytes(synth_pixel pixel)
{
    return pixel == SYNTH_GREY16 ? 2 : pixel == SYNTH_RGB8 ? 3 : 1;
}

void synth_compose(const synth_scene *sc, const float *image, const float *annotation, synth_pixel pixel, void *out)
{
    const size_t n = (size_t)sc->width * sc->height;
    for (size_t i = 0; i < n; i++) {
        const double v = clamp01(image[i]), a = annotation ? clamp01(annotation[i]) : 0;
        switch (pixel) {
        case SYNTH_GREY8: ((uint8_t *)out)[i] = (uint8_t)((v + a * (1 - v)) * 255 + 0.5); break;
        case SYNTH_GREY16: ((uint16_t *)out)[i] = (uint16_t)((v + a * (1 - v)) * 65535 + 0.5); break;
        case SYNTH_RGB8:
        default:
            for (int ch = 0; ch < 3; ch++)
                ((uint8_t *)out)[3 * i + ch] = (uint8_t)((v + a * (sc->arrow_rgb[ch] - v)) * 255 + 0.5);
            break;
        }
    }
}

/* Draws and composes a scene into a new pixel buffer (freed by the caller). */
static void *render_pixels(const synth_scene *sc, synth_pixel pixel, rc_error *err)
{
    const size_t n = (size_t)sc->width * sc->height;
    float *image = malloc(sizeof(float) * n), *annotation = malloc(sizeof(float) * n);
    void *pixels = malloc(n * synth_pixel_bytes(pixel));
    if (!image || !annotation || !pixels) {
        rc_fail(err, "out of memory for a %dx%d image", sc->width, sc->height);
        free(pixels);
        pixels = NULL;
    } else if (synth_scene_draw(sc, image, annotation, err) < 0) {
        free(pixels);
        pixels = NULL;
    } else {
        synth_compose(sc, image, annotation, pixel, pixels);
    }
    free(image), free(annotation);
    return pixels;
}

int synth_phantom(rng_state *r, int width, int height, uint8_t *pixels, char *caption, size_t caption_size,
                  synth_scene *scene, rc_error *err)
{
    if (width < SYNTH_MIN_SIDE || height < SYNTH_MIN_SIDE || width > SYNTH_MAX_SIDE * 2 ||
        height > SYNTH_MAX_SIDE * 2)
        return rc_fail(err, "phantom size %dx%d is outside %d..%d pixels per side", width, height, SYNTH_MIN_SIDE,
                       SYNTH_MAX_SIDE * 2);
    synth_scene local;
    synth_scene *sc = scene ? scene : &local;
    synth_scene_choose(r, width, height, 0, sc);
    if (synth_scene_caption(sc, r, caption, caption_size, err) < 0)
        return -1;
    uint8_t *drawn = render_pixels(sc, SYNTH_GREY8, err);
    if (!drawn)
        return -1;
    memcpy(pixels, drawn, (size_t)width * height);
    free(drawn);
    return 0;
}

/* ------------------------------------------------------------------------
 * Options and plans
 * ------------------------------------------------------------------------ */

static const char *const extensions[SYNTH_N_FORMATS] = {"jpg", "png", "tif"};

const char *synth_format_extension(synth_format format)
{
    return format >= 0 && format < SYNTH_N_FORMATS ? extensions[format] : "bin";
}

void synth_options_default(synth_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->seed = 1;
    opt->width = opt->height = 256;
    opt->formats = 1u << SYNTH_JPEG;
    opt->split = "valid";
    opt->jpeg_quality = 90;
}

enum { MAX_ENTRIES = 10000000 };

static int check_options(const synth_options *opt, rc_error *err)
{
    if (opt->count < 0 || opt->broken < 0 || (long long)opt->count + opt->broken > MAX_ENTRIES)
        return rc_fail(err, "synthetic archive: count %d and broken %d must be >= 0 and total at most %d", opt->count,
                       opt->broken, MAX_ENTRIES);
    if (opt->width < SYNTH_MIN_SIDE || opt->width > SYNTH_MAX_SIDE || opt->height < SYNTH_MIN_SIDE ||
        opt->height > SYNTH_MAX_SIDE)
        return rc_fail(err, "synthetic archive: size %dx%d is outside %d..%d pixels per side", opt->width,
                       opt->height, SYNTH_MIN_SIDE, SYNTH_MAX_SIDE);
    if (opt->formats == 0 || (opt->formats >> SYNTH_N_FORMATS) != 0)
        return rc_fail(err, "synthetic archive: the set of formats (0x%x) is empty or unknown", opt->formats);
    if (opt->jpeg_quality < 1 || opt->jpeg_quality > 100)
        return rc_fail(err, "synthetic archive: JPEG quality %d is outside 1..100", opt->jpeg_quality);
    const char *split = opt->split;
    size_t len = split ? strlen(split) : 0;
    if (len == 0 || len > 32)
        return rc_fail(err, "synthetic archive: the split name must have 1 to 32 characters");
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)split[i]) && split[i] != '_' && split[i] != '-')
            return rc_fail(err, "synthetic archive: split name '%s' may hold only letters, digits, '_' and '-'",
                           split);
    return 0;
}

/* A stream of its own for every (seed, row, purpose), so rows do not
 * depend on each other. */
static uint64_t mix_seed(uint64_t seed, uint64_t index, uint64_t stream)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (2 * index + stream + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Broken entry j sits at row j + floor((j + 1) N / (K + 1)) (N intact, K
 * broken): spread evenly, strictly increasing. */
static long long broken_row(const synth_options *opt, long long j)
{
    return j + (j + 1) * opt->count / (opt->broken + 1);
}

/* How many broken rows come before row `index`; *is_broken and *which say
 * whether row `index` itself is one, and which. */
static int broken_before(const synth_options *opt, int index, int *is_broken, int *which)
{
    int lo = 0, hi = opt->broken; /* first j with broken_row(j) >= index */
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (broken_row(opt, mid) < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    *is_broken = lo < opt->broken && broken_row(opt, lo) == index;
    *which = lo;
    return lo;
}

int synth_plan_entry(const synth_options *opt, int index, synth_entry *e, rc_error *err)
{
    if (check_options(opt, err) < 0)
        return -1;
    if (index < 0 || index >= opt->count + opt->broken)
        return rc_fail(err, "synthetic archive: row %d is outside 0..%d", index, opt->count + opt->broken - 1);
    memset(e, 0, sizeof *e);
    e->index = index;
    snprintf(e->id, sizeof e->id, "ROCOv2_2023_%s_%06d", opt->split, index + 1);
    e->scene_seed = mix_seed(opt->seed, (uint64_t)index, 1);
    rng_state r;
    rng_seed(&r, mix_seed(opt->seed, (uint64_t)index, 0));
    e->width = opt->width;
    e->height = opt->height;
    const double sw = 0.5 + rng_uniform(&r), sh = 0.5 + rng_uniform(&r), mode = rng_uniform(&r);
    if (opt->mixed) {
        e->width = (int)lrint(opt->width * sw);
        e->height = (int)lrint(opt->height * sh);
        e->width = e->width < SYNTH_MIN_SIDE ? SYNTH_MIN_SIDE : e->width;
        e->height = e->height < SYNTH_MIN_SIDE ? SYNTH_MIN_SIDE : e->height;
    }
    int is_broken, which;
    const int before = broken_before(opt, index, &is_broken, &which);
    e->pixel = SYNTH_GREY8;
    const char *ext;
    if (is_broken) {
        static const synth_defect cycle[4] = {SYNTH_TRUNCATED, SYNTH_EMPTY, SYNTH_NOT_IMAGE, SYNTH_MISSING};
        static const char *const defect_ext[4] = {"jpg", "png", "jpg", ""};
        e->defect = cycle[which % 4];
        e->format = SYNTH_JPEG;
        ext = defect_ext[which % 4];
    } else {
        int formats[SYNTH_N_FORMATS], n = 0;
        for (int f = 0; f < SYNTH_N_FORMATS; f++)
            if (opt->formats >> f & 1)
                formats[n++] = f;
        e->format = (synth_format)formats[(index - before) % n];
        ext = extensions[e->format];
        if (opt->mixed) {
            if (e->format == SYNTH_JPEG)
                e->pixel = mode < 0.25 ? SYNTH_RGB8 : SYNTH_GREY8;
            else
                e->pixel = mode < 0.3 ? SYNTH_GREY16 : mode < 0.5 ? SYNTH_RGB8 : SYNTH_GREY8;
        }
    }
    if (*ext)
        snprintf(e->file_name, sizeof e->file_name, "%s.%s", e->id, ext);
    return 0;
}

/* ------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------ */

/* Takes libvips' error message into err and clears libvips' buffer. */
static int vips_failure(rc_error *err, const char *what, const char *name)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", vips_error_buffer());
    vips_error_clear();
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        msg[--len] = '\0';
    return rc_fail(err, "%s: libvips could not %s: %s", name, what, len ? msg : "no reason given");
}

/* Encodes pixels in the entry's format into a g_malloc'd buffer. */
static int encode_image(const synth_options *opt, const synth_entry *e, const void *pixels, void **buf, size_t *len,
                        rc_error *err)
{
    const int bands = e->pixel == SYNTH_RGB8 ? 3 : 1;
    const VipsBandFormat band_format = e->pixel == SYNTH_GREY16 ? VIPS_FORMAT_USHORT : VIPS_FORMAT_UCHAR;
    const size_t bytes = (size_t)e->width * e->height * synth_pixel_bytes(e->pixel);
    VipsImage *im = vips_image_new_from_memory(pixels, bytes, e->width, e->height, bands, band_format);
    if (!im)
        return vips_failure(err, "wrap the drawn pixels", e->file_name);
    int rc;
    switch (e->format) {
    case SYNTH_PNG: /* libvips 8.14 writes 8 bits (clipping) unless told the depth */
        rc = vips_pngsave_buffer(im, buf, len, "compression", 6, "bitdepth", e->pixel == SYNTH_GREY16 ? 16 : 8, NULL);
        break;
    case SYNTH_TIFF:
        rc = vips_tiffsave_buffer(im, buf, len, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, NULL);
        break;
    case SYNTH_JPEG:
    default: rc = vips_jpegsave_buffer(im, buf, len, "Q", opt->jpeg_quality, NULL); break;
    }
    g_object_unref(im);
    if (rc != 0)
        return vips_failure(err, "encode the image", e->file_name);
    return 0;
}

/* Where to cut a JPEG so that its header is whole and its compressed data
 * is not: half way through the data after the first start-of-scan marker. */
static size_t jpeg_cut(const unsigned char *data, size_t len)
{
    for (size_t i = 2; i + 1 < len; i++)
        if (data[i] == 0xff && data[i + 1] == 0xda)
            return i + (len - i) / 2;
    return len / 2;
}

/* Writes data to path through a temporary file in the same folder and a
 * rename, so path never holds a partial file. */
static int write_file_atomic(const char *path, const void *data, size_t len, rc_error *err)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path) >= (int)sizeof tmp)
        return rc_fail(err, "%s: path too long", path);
    const int fd = mkstemp(tmp);
    if (fd < 0)
        return rc_fail(err, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    const unsigned char *p = data;
    size_t done = 0;
    while (done < len) {
        const ssize_t n = write(fd, p + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            const int e = errno;
            close(fd);
            unlink(tmp);
            return rc_fail(err, "%s: write failed: %s", tmp, strerror(e));
        }
        done += (size_t)n;
    }
    if (fchmod(fd, 0644) != 0 || close(fd) != 0) {
        const int e = errno;
        unlink(tmp);
        return rc_fail(err, "%s: cannot finish writing: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return rc_fail(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    return 0;
}

/* mkdir -p. */
static int make_dirs(const char *path, rc_error *err)
{
    char buf[4096];
    if (!path || !*path)
        return rc_fail(err, "no folder given");
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return rc_fail(err, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        const char saved = *p;
        if (saved != '/' && saved != '\0')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return rc_fail(err, "%s: cannot create the folder: %s", buf, strerror(errno));
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return rc_fail(err, "%s: exists and is not a folder", path);
    return 0;
}

static int folder_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return 1;
    int empty = 1;
    struct dirent *de;
    while (empty && (de = readdir(d)) != NULL)
        empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* What one row contributed, gathered after the parallel loop. */
typedef struct row_result {
    char *caption;      // malloc'd
    synth_entry entry;
    synth_study study;
    int n_lesions;
    long long bytes;
} row_result;

static int make_row(const synth_options *opt, const char *image_dir, int index, row_result *row, rc_error *err)
{
    synth_entry *e = &row->entry;
    if (synth_plan_entry(opt, index, e, err) < 0)
        return -1;
    rng_state r;
    rng_seed(&r, e->scene_seed);
    const unsigned flags = (e->pixel == SYNTH_RGB8 ? SYNTH_COLOUR : 0) | (opt->mixed ? SYNTH_MESSY : 0);
    synth_scene sc;
    synth_scene_choose(&r, e->width, e->height, flags, &sc);
    char caption[SYNTH_CAPTION_MAX];
    if (synth_scene_caption(&sc, &r, caption, sizeof caption, err) < 0)
        return rc_prefix(err, "%s", e->id);
    row->caption = strdup(caption);
    if (!row->caption)
        return rc_fail(err, "%s: out of memory", e->id);
    row->study = sc.study;
    row->n_lesions = sc.n_lesions;
    if (e->defect == SYNTH_MISSING)
        return 0;

    char path[4200];
    if (snprintf(path, sizeof path, "%s/%s", image_dir, e->file_name) >= (int)sizeof path)
        return rc_fail(err, "%s/%s: path too long", image_dir, e->file_name);
    if (e->defect == SYNTH_EMPTY)
        return write_file_atomic(path, "", 0, err);
    if (e->defect == SYNTH_NOT_IMAGE) {
        char page[512];
        const int n = snprintf(page, sizeof page,
                               "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
                               "<body><h1>Not Found</h1><p>The requested image %s was not found on this "
                               "server.</p></body></html>\n",
                               e->id);
        row->bytes = n;
        return write_file_atomic(path, page, (size_t)n, err);
    }
    void *pixels = render_pixels(&sc, e->pixel, err);
    if (!pixels)
        return rc_prefix(err, "%s", e->id);
    void *buf = NULL;
    size_t len = 0;
    const int rc = encode_image(opt, e, pixels, &buf, &len, err);
    free(pixels);
    if (rc < 0)
        return -1;
    if (e->defect == SYNTH_TRUNCATED)
        len = jpeg_cut(buf, len);
    const int written = write_file_atomic(path, buf, len, err);
    g_free(buf);
    row->bytes = (long long)len;
    return written;
}

static int write_csv(const char *csv_path, const row_result *rows, int n, long long *bytes, rc_error *err)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", csv_path) >= (int)sizeof tmp)
        return rc_fail(err, "%s: path too long", csv_path);
    const int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        const int e = errno;
        if (fd >= 0)
            close(fd), unlink(tmp);
        return rc_fail(err, "%s: cannot create a temporary file beside it: %s", csv_path, strerror(e));
    }
    int bad = fputs("ID,Caption\n", f) < 0;
    for (int i = 0; i < n && !bad; i++) {
        bad = csv_write_field(f, rows[i].entry.id, strlen(rows[i].entry.id)) < 0 || putc(',', f) == EOF ||
              csv_write_field(f, rows[i].caption, strlen(rows[i].caption)) < 0 || putc('\n', f) == EOF;
    }
    const long size = ftell(f);
    bad = bad || fflush(f) != 0 || fsync(fileno(f)) != 0 || fchmod(fileno(f), 0644) != 0;
    const int e = errno;
    bad = fclose(f) != 0 || bad;
    if (bad) {
        unlink(tmp);
        return rc_fail(err, "%s: write failed: %s", tmp, strerror(e));
    }
    if (rename(tmp, csv_path) != 0) {
        const int re = errno;
        unlink(tmp);
        return rc_fail(err, "%s: cannot rename %s into place: %s", csv_path, tmp, strerror(re));
    }
    *bytes = size;
    return 0;
}

int synth_archive(const synth_options *opt, const char *out_dir, synth_report *report, rc_error *err)
{
    if (check_options(opt, err) < 0)
        return -1;
    if (!out_dir || !*out_dir)
        return rc_fail(err, "synthetic archive: no output folder given");
    synth_report local;
    synth_report *rep = report ? report : &local;
    memset(rep, 0, sizeof *rep);
    if (snprintf(rep->image_dir, sizeof rep->image_dir, "%s/%s", out_dir, opt->split) >= (int)sizeof rep->image_dir ||
        snprintf(rep->csv_path, sizeof rep->csv_path, "%s/%s_captions.csv", out_dir, opt->split) >=
            (int)sizeof rep->csv_path)
        return rc_fail(err, "%s: path too long", out_dir);
    if (make_dirs(out_dir, err) < 0)
        return -1;
    if (!opt->overwrite && !folder_is_empty(rep->image_dir))
        return rc_fail(err, "%s: the image folder is not empty (overwriting was not asked for)", rep->image_dir);
    if (make_dirs(rep->image_dir, err) < 0)
        return -1;

    const int n = opt->count + opt->broken;
    row_result *rows = calloc(n > 0 ? (size_t)n : 1, sizeof *rows);
    if (!rows)
        return rc_fail(err, "out of memory for %d rows", n);
    int first_failed = n;
    rc_error first_err = {{0}};
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        int failed;
#pragma omp atomic read
        failed = first_failed;
        if (failed < i)
            continue;
        rc_error row_err = {{0}};
        if (make_row(opt, rep->image_dir, i, &rows[i], &row_err) < 0) {
#pragma omp critical(synth_archive_failure)
            if (i < first_failed) {
                first_err = row_err;
#pragma omp atomic write
                first_failed = i;
            }
        }
    }
    int rc = 0;
    if (first_failed < n) {
        if (err)
            *err = first_err;
        rc = -1;
    } else {
        long long csv_bytes = 0;
        rc = write_csv(rep->csv_path, rows, n, &csv_bytes, err);
        rep->bytes = csv_bytes;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        const row_result *row = &rows[i];
        rep->n_entries++;
        rep->n_defect[row->entry.defect]++;
        if (row->entry.defect == SYNTH_INTACT) {
            rep->n_intact++;
            rep->n_format[row->entry.format]++;
            rep->n_pixel[row->entry.pixel]++;
        }
        rep->n_study[row->study]++;
        rep->n_lesions += row->n_lesions;
        rep->n_normal += row->n_lesions == 0;
        rep->bytes += row->bytes;
    }
    for (int i = 0; i < n; i++)
        free(rows[i].caption);
    free(rows);
    return rc;
}

/* ------------------------------------------------------------------------
 * Option parsers
 * ------------------------------------------------------------------------ */

static int parse_side(const char **s, int *out)
{
    if (!isdigit((unsigned char)**s))
        return -1;
    long v = 0;
    while (isdigit((unsigned char)**s)) {
        v = v * 10 + (**s - '0');
        if (v > 1000000)
            return -1;
        (*s)++;
    }
    *out = (int)v;
    return 0;
}

int synth_parse_size(const char *text, int *width, int *height, rc_error *err)
{
    const char *s = text ? text : "";
    int w, h;
    if (parse_side(&s, &w) < 0 || (*s != 'x' && *s != 'X') || (s++, parse_side(&s, &h)) < 0 || *s != '\0')
        return rc_fail(err, "size '%.64s' is not WIDTHxHEIGHT (e.g. 256x256)", text ? text : "");
    if (w < SYNTH_MIN_SIDE || w > SYNTH_MAX_SIDE || h < SYNTH_MIN_SIDE || h > SYNTH_MAX_SIDE)
        return rc_fail(err, "size %dx%d: each side must be %d..%d pixels", w, h, SYNTH_MIN_SIDE, SYNTH_MAX_SIDE);
    *width = w;
    *height = h;
    return 0;
}

int synth_parse_formats(const char *text, unsigned *formats, rc_error *err)
{
    static const struct {
        const char *name;
        synth_format format;
    } names[] = {
        {"jpg", SYNTH_JPEG}, {"jpeg", SYNTH_JPEG}, {"png", SYNTH_PNG}, {"tif", SYNTH_TIFF}, {"tiff", SYNTH_TIFF},
    };
    unsigned set = 0;
    const char *s = text ? text : "";
    for (;;) {
        const char *end = strchr(s, ',');
        const size_t len = end ? (size_t)(end - s) : strlen(s);
        int found = 0;
        for (size_t k = 0; k < sizeof names / sizeof names[0] && !found; k++)
            if (strlen(names[k].name) == len && strncasecmp(names[k].name, s, len) == 0) {
                set |= 1u << names[k].format;
                found = 1;
            }
        if (!found)
            return rc_fail(err, "format '%.*s' in '%.64s' is not one of jpg, png, tif", (int)(len < 32 ? len : 32), s,
                           text ? text : "");
        if (!end)
            break;
        s = end + 1;
    }
    *formats = set;
    return 0;
}
