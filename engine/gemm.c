/* gemm.c: backend choice, weight packing and the blocked driver shared by
 * the engine's micro-kernels (gemm_kernel.h), plus the cblas backend.
 *
 * Blocking: y is cut into tiles of up to TILE_ROWS rows by as many panels
 * as keep the tile's slice of W (one K block of them) within TILE_W_BYTES,
 * and fewer when threads need more tiles; OpenMP hands tiles out
 * dynamically. Decoder-shaped products (a few rows, up to 30522 columns)
 * thus split over N, encoder-shaped ones (thousands of rows) over M and N.
 * Inside a tile, for each K block, each kernel block of rows (its slice of
 * x stays in L1) passes over the tile's panels (their slice stays in L2)
 * while the kernel prefetches the next rows. None of these choices changes
 * a single bit of the result (gemm.h): a partial sum stored to y between K
 * blocks and loaded back is the same float.
 */
#include "gemm.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gemm_kernel.h"
#include "ops.h"

/* OpenBLAS's own thread control (not part of the CBLAS standard). */
void openblas_set_num_threads(int num_threads);

/* Measured best on the model's shapes (tests/bench/bench_gemm.c); any
 * values give the same results. */
enum {
    K_BLOCK = 1024,           /* a kernel block's slice of x: 6 x 1024 floats, 24 KB of L1 */
    TILE_ROWS = 336,          /* a multiple of every kernel's rows (6, 4) */
    TILE_ROWS_MIN = 96,       /* shortest tile cut by rows: decoding (< 180 rows) is cut by columns */
    TILE_PANELS = 8,          /* 256 columns at most */
    TILE_W_BYTES = 512 << 10, /* half of L2 for the tile's slice of W */
    TILES_PER_THREAD = 4,     /* when there is enough work, for dynamic balance */
};

/* Below this many multiply-adds a product runs on one thread: waking the
 * others would cost more than it saves (tens of microseconds, far more when
 * other processes hold the cores). */
#define PARALLEL_MIN_MACS (1 << 17)

/* ---- backend choice ---------------------------------------------------- */

/* "auto" takes the first of the first three that the CPU runs */
enum {
    BACKEND_AVX512, BACKEND_AVX2, BACKEND_PORTABLE, BACKEND_CBLAS, BACKEND_AVX512BF16, BACKEND_AVX512BF16_EMULATED,
    N_BACKENDS
};

static const char *const backend_names[N_BACKENDS] = {"avx512", "avx2", "portable", "cblas", "avx512bf16",
                                                      "avx512bf16-emulated"};
static const gemm_ukernel *const backend_kernels[N_BACKENDS] = {
    &gemm_ukernel_avx512, &gemm_ukernel_avx2, &gemm_ukernel_portable, NULL, &gemm_ukernel_avx512bf16,
    &gemm_ukernel_avx512bf16_emulated};

/* The backend in use, or -1 until the first product or gemm_set_backend.
 * Process-wide on purpose: it follows from the CPU, which is process-wide
 * too, and threading it through every layer call would change nothing. */
static _Atomic int chosen_backend = -1;

static int cpu_runs(int backend)
{
    __builtin_cpu_init();
    switch (backend) {
    case BACKEND_AVX512:
    case BACKEND_AVX512BF16_EMULATED: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    case BACKEND_AVX512BF16:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("avx512bf16");
    case BACKEND_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return 1;
    }
}

static int fastest_backend(void)
{
    for (int b = 0; b < BACKEND_PORTABLE; b++)
        if (cpu_runs(b))
            return b;
    return BACKEND_PORTABLE;
}

/* Index of a backend name, the fastest one for "auto", -1 if unknown. */
static int backend_index(const char *name)
{
    if (strcmp(name, "auto") == 0)
        return fastest_backend();
    for (int b = 0; b < N_BACKENDS; b++)
        if (strcmp(name, backend_names[b]) == 0)
            return b;
    return -1;
}

static int current_backend(void)
{
    int b = atomic_load(&chosen_backend);
    if (b >= 0)
        return b;
    const char *env = getenv("RADCAP_GEMM");
    b = env ? backend_index(env) : -1;
    if (b < 0 || !cpu_runs(b))
        b = fastest_backend();
    atomic_store(&chosen_backend, b);
    return b;
}

int gemm_set_backend(const char *name, rc_error *err)
{
    const int b = backend_index(name);
    if (b < 0)
        return rc_fail(err,
                       "unknown matrix-product backend '%s' (expected auto, avx512, avx2, portable, cblas, "
                       "avx512bf16 or avx512bf16-emulated)",
                       name);
    if (!cpu_runs(b))
        return rc_fail(err, "matrix-product backend '%s' needs instructions this CPU lacks", name);
    atomic_store(&chosen_backend, b);
    return 0;
}

const char *gemm_backend_name(void)
{
    return backend_names[current_backend()];
}

int gemm_backend_supported(const char *name)
{
    const int b = backend_index(name);
    return b >= 0 && cpu_runs(b);
}

void gemm_init(void)
{
    openblas_set_num_threads(1);
}

/* ---- precision --------------------------------------------------------- */

static const char *const precision_names[] = {[GEMM_FP32] = "fp32", [GEMM_BF16] = "bf16"};

int gemm_precision_parse(const char *name, gemm_precision *precision, rc_error *err)
{
    for (int p = GEMM_FP32; p <= GEMM_BF16; p++)
        if (strcmp(name, precision_names[p]) == 0) {
            *precision = (gemm_precision)p;
            return 0;
        }
    return rc_fail(err, "unknown weight precision '%s' (expected fp32 or bf16)", name);
}

const char *gemm_precision_name(gemm_precision precision)
{
    return precision == GEMM_FP32 || precision == GEMM_BF16 ? precision_names[precision] : "?";
}

uint16_t gemm_bf16_round(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) /* NaN: truncating could leave an Inf's bits */
        return (uint16_t)((bits >> 16) | 0x0040u);
    /* adding 0x7FFF rounds up exactly the low halves above one half; the
     * kept half's low bit makes a tie (0x8000) round up only to even. A
     * carry into the exponent is right: it is the next binade, or Inf. */
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

float gemm_bf16_to_float(uint16_t h)
{
    const uint32_t bits = (uint32_t)h << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* ---- packing ----------------------------------------------------------- */

enum { HUGE_PAGE_BYTES = 2 << 20, HUGE_MIN_BYTES = 4 << 20 };

static int n_panels(int n_out)
{
    return (n_out + GEMM_PANEL - 1) / GEMM_PANEL;
}

/* Rows of K a panel stores: n_in, or n_in rounded up to pairs. */
static int k_stored(int n_in, int pairs)
{
    return pairs ? (n_in + 1) / 2 * 2 : n_in;
}

/* Where column c of a panel is within a row of bfloat16 panels of either
 * layout (gemm.h), from the row's column 0. */
static size_t bf16_column(int pairs, int c)
{
    return pairs ? 2 * (size_t)c : (size_t)gemm_bf16_slot(c);
}

/* Where W[j, k] is among bfloat16 panels of either layout (gemm.h). */
static size_t bf16_index(int n_in, int pairs, int j, int k)
{
    const size_t panel = (size_t)(j / GEMM_PANEL) * k_stored(n_in, pairs);
    const size_t row = pairs ? (panel + (size_t)k / 2 * 2) * GEMM_PANEL + (size_t)k % 2 : (panel + (size_t)k) * GEMM_PANEL;
    return row + bf16_column(pairs, j % GEMM_PANEL);
}

/* Whether the backend in use reads bfloat16 panels as k pairs. */
static int backend_reads_pairs(void)
{
    const gemm_ukernel *kernel = backend_kernels[current_backend()];
    return kernel && kernel->bf16_dot;
}

/* W[j, k] from w's values: w->w, else its bfloat16 panels. */
static inline float source_value(const gemm_weights *w, int j, int k)
{
    if (w->w)
        return w->w[(size_t)j * w->n_in + k];
    return gemm_bf16_to_float(w->packed_bf16[bf16_index(w->n_in, w->bf16_pairs, j, k)]);
}

/* New panels of w's values: float, or bfloat16 in the k-pair layout
 * (pairs) or the other; *memory NULL and -1 if memory runs out. */
static int pack_panels(const gemm_weights *w, int bf16, int pairs, void **memory, rc_error *err)
{
    const int n = w->n_out, k = w->n_in, rows_stored = k_stored(k, bf16 && pairs), panels = n_panels(n);
    const size_t elements = (size_t)panels * rows_stored * GEMM_PANEL, size = bf16 ? sizeof(uint16_t) : sizeof(float);
    /* Large matrices go on transparent huge pages where the system allows:
     * far fewer page faults at load (which cost more than the copy)
     * and of the TLB misses while W streams through the kernels. */
    const size_t align = elements * size >= HUGE_MIN_BYTES ? HUGE_PAGE_BYTES : 64;
    const size_t bytes = (elements * size + align - 1) / align * align;
    void *panel_memory = aligned_alloc(align, bytes ? bytes : align);
    *memory = panel_memory;
    if (!panel_memory)
        return rc_fail(err, "out of memory packing a (%d, %d) weight matrix (%zu MB)", n, k, bytes >> 20);
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE_BYTES)
        madvise(panel_memory, bytes, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
    float *full = panel_memory;
    uint16_t *half = panel_memory;
    /* written in order (whole cache lines at once); the 32 rows read
     * meanwhile each advance one float per step, and stay in cache */
#pragma omp parallel for schedule(static) if (elements > 65536)
    for (int p = 0; p < panels; p++) {
        const int rows = n - p * GEMM_PANEL < GEMM_PANEL ? n - p * GEMM_PANEL : GEMM_PANEL;
        const float *from = w->w ? w->w + (size_t)p * GEMM_PANEL * k : NULL;
        for (int i = 0; i < rows_stored; i++) {
            float values[GEMM_PANEL] = {0}; /* row i of the panel: zero past n_out and n_in */
            for (int c = 0; c < rows && i < k; c++)
                values[c] = from ? from[(size_t)c * k + i] : source_value(w, p * GEMM_PANEL + c, i);
            if (!bf16)
                memcpy(full + ((size_t)p * k + i) * GEMM_PANEL, values, sizeof values);
            else {
                const size_t row = bf16_index(k, pairs, p * GEMM_PANEL, i); /* column 0's place, once a row */
                for (int c = 0; c < GEMM_PANEL; c++)
                    half[row + bf16_column(pairs, c)] = gemm_bf16_round(values[c]);
            }
        }
    }
    return 0;
}

int gemm_pack(gemm_weights *w, rc_error *err)
{
    const int bf16 = w->precision == GEMM_BF16, pairs = bf16 && backend_reads_pairs();
    if (w->precision != GEMM_FP32 && !bf16)
        return rc_fail(err, "unknown weight precision %d", (int)w->precision);
    if (bf16 ? w->packed_bf16 != NULL && w->bf16_pairs == pairs : w->packed != NULL)
        return 0;
    if (w->n_out < 0 || w->n_in < 0 ||
        (!w->w && !(bf16 && w->packed_bf16) && (size_t)w->n_out * w->n_in > 0))
        return rc_fail(err, "cannot pack a (%d, %d) weight matrix without its values", w->n_out, w->n_in);
    void *memory;
    if (pack_panels(w, bf16, pairs, &memory, err) < 0)
        return -1;
    gemm_unpack(w); /* a copy in the other precision or layout, if any */
    if (bf16) {
        w->packed_bf16 = memory;
        w->bf16_pairs = pairs;
    } else {
        w->packed = memory;
    }
    return 0;
}

void gemm_unpack(gemm_weights *w)
{
    free(w->packed);
    free(w->packed_bf16);
    w->packed = NULL;
    w->packed_bf16 = NULL;
    w->bf16_pairs = 0;
}

/* Panel row-major floats (kc, GEMM_PANEL) from the bfloat16 panel rows at
 * `from`: what the kernels compute on, for sgemm. */
static void widen_panel(const uint16_t *from, int kc, float *to)
{
    for (int i = 0; i < kc; i++, from += GEMM_PANEL, to += GEMM_PANEL)
        for (int c = 0; c < GEMM_PANEL; c++)
            to[c] = gemm_bf16_to_float(from[gemm_bf16_slot(c)]);
}

/* ---- the product ------------------------------------------------------- */

/* One gemm_linear call, as every tile sees it. */
typedef struct gemm_call {
    const gemm_weights *w;
    const gemm_ukernel *kernel; /* NULL: cblas */
    const float *packed;        /* float panels of W (NULL in bf16, or for cblas on unpacked weights) */
    const uint16_t *packed_bf16; /* bfloat16 panels of W, or NULL: not bf16 */
    int dot;                    /* 1: a dot-product kernel's bf16 product (x rounded, panels of
                                 * k pairs) */
    float *scratch;             /* cblas only: per thread, scratch_floats floats: a widened panel
                                 * (n_in, GEMM_PANEL) on bf16 panels, then a tile's patch rows
                                 * (tile_m, n_in) for a convolution; else NULL */
    size_t scratch_floats;
    const float *x;             /* dense x: (m, ldx); NULL for a convolution */
    size_t ldx;
    const gemm_conv *conv;      /* the convolution whose patches are x, or NULL */
    int out_w, out_pixels;      /* with conv: its output's width and out_h * out_w */
    int k_span;                 /* columns of x contiguous in memory: n_in, or one window row */
    size_t run_stride;          /* from one run of k_span columns to the next: an image row */
    float *y;
    size_t ldy;
    const gemm_epilogue *ep;    /* or NULL */
    int k_block;                /* K range per block, > 0 unless K is 0 */
    /* tiles of y: tile t covers row tile t / tiles_n and panel tile t % tiles_n */
    int m, panels;              /* rows of y, panels of W */
    int tile_m, tile_panels;    /* tile size in rows and in panels */
    int tiles_n;
} gemm_call;

/* Row i of x at column 0. */
static const float *row_start(const gemm_call *call, int i)
{
    const gemm_conv *cv = call->conv;
    if (!cv)
        return call->x + (size_t)i * call->ldx;
    const int image = i / call->out_pixels, pixel = i % call->out_pixels;
    const int iy = pixel / call->out_w * cv->stride, ix = pixel % call->out_w * cv->stride;
    return cv->x + (((size_t)image * cv->h + iy) * cv->w + ix) * cv->c_in;
}

/* Where column k of a row starting at `start` is: k_span columns are
 * contiguous, the next k_span one run_stride further. */
static const float *column_at(const gemm_call *call, const float *start, int k)
{
    return start + (size_t)(k / call->k_span) * call->run_stride + k % call->k_span;
}

static const float *row_at(const gemm_call *call, int i, int k)
{
    return column_at(call, row_start(call, i), k);
}

static void tile_bounds(const gemm_call *call, int t, int *m0, int *m1, int *p0, int *p1)
{
    *m0 = (t / call->tiles_n) * call->tile_m;
    *p0 = (t % call->tiles_n) * call->tile_panels;
    *m1 = *m0 + call->tile_m < call->m ? *m0 + call->tile_m : call->m;
    *p1 = *p0 + call->tile_panels < call->panels ? *p0 + call->tile_panels : call->panels;
}

/* The kc columns from k0 of the `mr` rows starting at starts[0 ..], rounded
 * to bfloat16 into out (row r at r * K_BLOCK), with a zero after an odd kc:
 * what a dot kernel multiplies. */
static void rows_to_bf16(const gemm_call *call, const float *const *starts, int mr, int k0, int kc, uint16_t *out)
{
    for (int r = 0; r < mr; r++) {
        uint16_t *row = out + (size_t)r * K_BLOCK;
        for (int k = k0; k < k0 + kc;) { /* run by run (a convolution's window rows) */
            const int run_end = (k / call->k_span + 1) * call->k_span;
            const int len = (run_end < k0 + kc ? run_end : k0 + kc) - k;
            call->kernel->to_bf16(column_at(call, starts[r], k), len, row + (k - k0));
            k += len;
        }
        if (kc % 2)
            row[kc] = 0;
    }
}

/* Tile t with the engine's micro-kernel: for each K block, each block of
 * rows (its slice of x stays in L1) passes over the tile's panels (their
 * slice stays in L2), while the next rows' slice is prefetched. */
static void kernel_tile(const gemm_call *call, int t)
{
    const gemm_weights *w = call->w;
    const int K = w->n_in, mr_max = call->kernel->mr_max, step = call->kernel->nr_max / GEMM_PANEL;
    const gemm_epilogue *ep = call->ep;
    const float *residual = ep ? ep->residual : NULL;
    void (*const run)(const gemm_block *) = call->packed_bf16 ? call->kernel->run_bf16 : call->kernel->run;
    const int stored = k_stored(K, call->dot);
    /* a dot kernel's rows of x, rounded to bfloat16 for one K block */
    _Alignas(64) uint16_t x_bf16[GEMM_MR_MAX * K_BLOCK];
    int m0, m1, p0, p1;
    tile_bounds(call, t, &m0, &m1, &p0, &p1);
    /* where the tile's rows start, found once (for a convolution, a few
     * divisions a row: per block and K block they showed in profiles) */
    const float *starts[TILE_ROWS + GEMM_MR_MAX];
    for (int i = m0; i < m1; i++)
        starts[i - m0] = row_start(call, i);
    /* K blocks of whole runs, or parts of one run (gemm_linear's choice);
     * a dot kernel reads its own copy of x, and takes any even K block */
    const int whole_runs = call->dot || call->k_block % call->k_span == 0;
    int k0 = 0;
    do {
        const int end = whole_runs ? K : (k0 / call->k_span + 1) * call->k_span;
        const int kc = end - k0 < call->k_block ? end - k0 : call->k_block;
        gemm_block g = {.panel_stride = (size_t)stored * GEMM_PANEL, .kc = kc, .ldc = call->ldy,
                        .run = whole_runs ? call->k_span : kc, .run_stride = call->run_stride,
                        .first = k0 == 0, .last = k0 + kc == K,
                        .ld_residual = residual ? (size_t)ep->ld_residual : 0, .relu = ep ? ep->relu : 0};
        for (int i = m0; i < m1; i += mr_max) {
            g.mr = m1 - i < mr_max ? m1 - i : mr_max;
            if (call->dot) {
                rows_to_bf16(call, starts + (i - m0), g.mr, k0, kc, x_bf16);
                g.x_bf16 = x_bf16;
                g.ld_x_bf16 = K_BLOCK;
            }
            g.prefetch = !call->dot && i + mr_max < m1;
            for (int r = 0; r < GEMM_MR_MAX && !call->dot; r++) { /* short blocks repeat their last row */
                const int row = i + r < m1 ? i + r : m1 - 1, next = i + mr_max + r < m1 ? i + mr_max + r : m1 - 1;
                g.a[r] = column_at(call, starts[row - m0], k0);
                g.a_next[r] = column_at(call, starts[next - m0], k0);
            }
            for (int p = p0; p < p1; p += step) {
                const int j0 = p * GEMM_PANEL, j1 = (p + step < p1 ? p + step : p1) * GEMM_PANEL;
                const size_t at = ((size_t)p * stored + k0) * GEMM_PANEL;
                g.b = call->packed_bf16 ? (const void *)(call->packed_bf16 + at) : (const void *)(call->packed + at);
                g.nr = (j1 < w->n_out ? j1 : w->n_out) - j0;
                g.bias = w->bias ? w->bias + j0 : NULL;
                g.c = call->y + (size_t)i * call->ldy + j0;
                g.residual = residual ? residual + (size_t)i * g.ld_residual + j0 : NULL;
                run(&g);
            }
        }
        k0 += kc;
    } while (k0 < K);
}

/* Tile t with CBLAS sgemm (single-threaded), then the epilogue. */
static void cblas_tile(const gemm_call *call, int t)
{
    const gemm_weights *w = call->w;
    int m0, m1, p0, p1;
    tile_bounds(call, t, &m0, &m1, &p0, &p1);
    const int k = w->n_in, mt = m1 - m0, j0 = p0 * GEMM_PANEL;
    const int j1 = p1 * GEMM_PANEL < w->n_out ? p1 * GEMM_PANEL : w->n_out;
    float *yt = call->y + (size_t)m0 * call->ldy + j0;
    float *scratch = call->scratch ? call->scratch + (size_t)omp_get_thread_num() * call->scratch_floats : NULL;
    const float *xt = call->x ? call->x + (size_t)m0 * call->ldx : NULL;
    size_t ldx = call->ldx;
    if (call->conv) { /* sgemm needs the tile's patch rows as a matrix */
        float *patches = scratch + (call->packed_bf16 ? (size_t)k * GEMM_PANEL : 0);
        for (int i = 0; i < mt; i++) {
            const float *start = row_start(call, m0 + i);
            for (int k0 = 0; k0 < k; k0 += call->k_span)
                memcpy(patches + (size_t)i * k + k0, column_at(call, start, k0), sizeof(float) * call->k_span);
        }
        xt = patches;
        ldx = (size_t)k;
    }
    for (int i = 0; i < mt; i++)
        for (int j = j0; j < j1; j++)
            yt[(size_t)i * call->ldy + j - j0] = w->bias ? w->bias[j] : 0.0f;
    if (k > 0 && w->w && !call->packed_bf16) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mt, j1 - j0, k, 1.0f, xt, (int)ldx,
                    w->w + (size_t)j0 * k, k, 1.0f, yt, (int)call->ldy);
    } else if (k > 0) { /* from the packed panels (in bf16 the weights are theirs): each is a (k, 32) matrix */
        float *widened = scratch;
        for (int p = p0; p < p1; p++) {
            const int cols = w->n_out - p * GEMM_PANEL < GEMM_PANEL ? w->n_out - p * GEMM_PANEL : GEMM_PANEL;
            const float *panel = call->packed + (size_t)p * k * GEMM_PANEL;
            if (call->packed_bf16) {
                widen_panel(call->packed_bf16 + (size_t)p * k * GEMM_PANEL, k, widened);
                panel = widened;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mt, cols, k, 1.0f, xt, (int)ldx, panel,
                        GEMM_PANEL, 1.0f, yt + (p - p0) * GEMM_PANEL, (int)call->ldy);
        }
    }
    const gemm_epilogue *ep = call->ep;
    if (!ep)
        return;
    for (int i = m0; i < m1; i++) {
        float *row = call->y + (size_t)i * call->ldy;
        if (ep->residual) {
            const float *res = ep->residual + (size_t)i * ep->ld_residual;
            for (int j = j0; j < j1; j++)
                row[j] += res[j];
        }
        if (ep->relu)
            for (int j = j0; j < j1; j++)
                row[j] = row[j] > 0.0f ? row[j] : 0.0f;
    }
}

/* W[j, k] as gemm.h says it is multiplied. */
static float weight_at(const gemm_call *call, int j, int k)
{
    const float value = source_value(call->w, j, k);
    return call->w->precision == GEMM_BF16 ? gemm_bf16_to_float(gemm_bf16_round(value)) : value;
}

/* x[i, k] as multiplied: a dot kernel rounds it to bfloat16; 0 past K. */
static float x_at(const gemm_call *call, int i, int k)
{
    if (k >= call->w->n_in)
        return 0.0f;
    const float x = *row_at(call, i, k);
    return call->dot ? gemm_bf16_to_float(gemm_bf16_round(x)) : x;
}

/* The definition of gemm.h, element by element: used only when the memory
 * to pack a temporary copy of unpacked weights (or to widen bf16 panels for
 * cblas) is lacking. */
static void scalar_product(const gemm_call *call, int m)
{
    const gemm_weights *w = call->w;
    const gemm_epilogue *ep = call->ep;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < w->n_out; j++) {
            float s = 0.0f;
            if (call->dot) /* pairs, the odd k first; products exact */
                for (int k = 0; k < w->n_in; k += 2) {
                    s = s + x_at(call, i, k + 1) * (k + 1 < w->n_in ? weight_at(call, j, k + 1) : 0.0f);
                    s = s + x_at(call, i, k) * weight_at(call, j, k);
                }
            else
                for (int k = 0; k < w->n_in; k++)
                    s = fmaf(x_at(call, i, k), weight_at(call, j, k), s);
            if (w->bias)
                s = s + w->bias[j];
            if (ep && ep->residual)
                s = s + ep->residual[(size_t)i * ep->ld_residual + j];
            if (ep && ep->relu)
                s = s > 0.0f ? s : 0.0f;
            call->y[(size_t)i * call->ldy + j] = s;
        }
}

/* The product of gemm_linear and gemm_conv2d: `call` has w, x or conv,
 * k_span, y, ldy and ep set; m rows. */
static void product(gemm_call call, int m)
{
    const gemm_weights *w = call.w;
    const int n = w->n_out, k = w->n_in;
    if (m <= 0 || n <= 0)
        return;
    const int backend = current_backend(), bf16 = w->precision == GEMM_BF16;
    call.kernel = backend_kernels[backend];
    call.dot = bf16 && call.kernel && call.kernel->bf16_dot;
    call.packed = bf16 ? NULL : w->packed;
    call.packed_bf16 = bf16 && w->bf16_pairs == call.dot ? w->packed_bf16 : NULL;
    /* unpacked weights, or bfloat16 ones in the other layout: packed for the
     * call (the kernels read only panels, and in bf16 the panels hold the
     * rounded weights every backend multiplies) */
    void *temporary = NULL;
    const int pack_now = (call.kernel || bf16) && !(bf16 ? call.packed_bf16 != NULL : call.packed != NULL);
    if (pack_now) {
        if (pack_panels(w, bf16, call.dot, &temporary, NULL) < 0) {
            scalar_product(&call, m);
            return;
        }
        call.packed = bf16 ? NULL : temporary;
        call.packed_bf16 = bf16 ? temporary : NULL;
    }
    /* K blocks of at most K_BLOCK: as many whole runs as fit in equal
     * numbers (a convolution's window rows: the accumulators stay in
     * registers across them), else equal parts of each run */
    if (call.dot) { /* a dot kernel's blocks: equal and even (pairs) */
        const int blocks = (k + K_BLOCK - 1) / K_BLOCK;
        call.k_block = k > 0 ? ((k + blocks - 1) / blocks + 1) / 2 * 2 : 0;
    } else if (call.k_span <= K_BLOCK) {
        const int runs = (k + call.k_span - 1) / call.k_span, per_block = K_BLOCK / call.k_span;
        const int blocks = (runs + per_block - 1) / per_block;
        call.k_block = k > 0 ? (runs + blocks - 1) / blocks * call.k_span : 0;
    } else {
        const int parts = (call.k_span + K_BLOCK - 1) / K_BLOCK;
        call.k_block = (call.k_span + parts - 1) / parts;
    }

    /* Tiles: rows in equal multiples of the kernel's block height; panels
     * as many as keep the tile's slice of W within L2, then fewer until
     * every thread has a few tiles to take. */
    const int threads = omp_in_parallel() || (double)m * n * k < PARALLEL_MIN_MACS ? 1 : omp_get_max_threads();
    const int mr = call.kernel ? call.kernel->mr_max : 1;
    call.m = m;
    call.panels = n_panels(n);
    int tiles_m = (m + TILE_ROWS - 1) / TILE_ROWS;
    call.tile_m = (m + tiles_m - 1) / tiles_m;
    call.tile_m = (call.tile_m + mr - 1) / mr * mr;
    tiles_m = (m + call.tile_m - 1) / call.tile_m;
    if (!call.kernel && (call.packed_bf16 || call.conv)) {
        call.scratch_floats = (call.packed_bf16 ? (size_t)k * GEMM_PANEL : 0) +
                              (call.conv ? (size_t)call.tile_m * k : 0);
        call.scratch = malloc(sizeof(float) * ((size_t)threads * call.scratch_floats + 1));
        if (!call.scratch) {
            scalar_product(&call, m);
            free(temporary);
            return;
        }
    }
    const size_t element = call.packed_bf16 ? sizeof(uint16_t) : sizeof(float);
    const int fit = TILE_W_BYTES / (int)((call.k_block > 0 ? call.k_block : 1) * GEMM_PANEL * element);
    call.tile_panels = fit < 1 ? 1 : fit < TILE_PANELS ? fit : TILE_PANELS;
    call.tile_panels = call.tile_panels < call.panels ? call.tile_panels : call.panels;
    const int step = call.kernel ? call.kernel->nr_max / GEMM_PANEL : 1; /* panels per kernel block */
    /* Too few tiles for the threads: cut rows while tiles stay tall (W's
     * slice is reused over TILE_ROWS_MIN rows at least) and as wide as the
     * kernel's block, then columns. Cutting columns first left the
     * convolutions of one image in tiles one panel wide (half the kernel's
     * block: 1.2-1.5x from 2 threads); with few rows, as in decoding,
     * columns are cut at once (cutting rows there would read W, which
     * streams from memory, once per row tile). */
    while (threads > 1 &&
           tiles_m * ((call.panels + call.tile_panels - 1) / call.tile_panels) < TILES_PER_THREAD * threads) {
        const int shorter = ((m + tiles_m) / (tiles_m + 1) + mr - 1) / mr * mr; /* rows of tiles_m + 1 tiles */
        const int full_width = call.tile_panels >= step || call.tile_panels == call.panels;
        if (full_width && shorter >= TILE_ROWS_MIN && (m + shorter - 1) / shorter > tiles_m) {
            call.tile_m = shorter;
            tiles_m = (m + shorter - 1) / shorter;
        } else if (call.tile_panels > 1) {
            call.tile_panels--;
        } else {
            break;
        }
    }
    if (call.tile_panels > step)
        call.tile_panels -= call.tile_panels % step;
    call.tiles_n = (call.panels + call.tile_panels - 1) / call.tile_panels;
    const int n_tiles = tiles_m * call.tiles_n;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (n_tiles > 1 && threads > 1)
    for (int t = 0; t < n_tiles; t++) {
        if (call.kernel)
            kernel_tile(&call, t);
        else
            cblas_tile(&call, t);
    }
    free(call.scratch);
    free(temporary); /* packed for this call, if it was */
}

void gemm_linear(const gemm_weights *w, int m, const float *x, int ldx, float *y, int ldy,
                 const gemm_epilogue *epilogue)
{
    product((gemm_call){.w = w, .x = x, .ldx = (size_t)ldx, .k_span = w->n_in > 0 ? w->n_in : 1, .y = y,
                        .ldy = (size_t)ldy, .ep = epilogue},
            m);
}

void gemm_conv2d(const gemm_weights *w, const gemm_conv *conv, float *y, int ldy, const gemm_epilogue *epilogue)
{
    const int out_w = ops_conv_out(conv->w, conv->kernel, conv->stride, 0);
    const int out_pixels = ops_conv_out(conv->h, conv->kernel, conv->stride, 0) * out_w;
    product((gemm_call){.w = w, .conv = conv, .out_w = out_w, .out_pixels = out_pixels,
                        .k_span = conv->kernel * conv->c_in > 0 ? conv->kernel * conv->c_in : 1,
                        .run_stride = (size_t)conv->w * conv->c_in, .y = y, .ldy = (size_t)ldy, .ep = epilogue},
            conv->batch * out_pixels);
}
