#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/interner.h"

/* The last bits must match the reference's Python, which rounds every
 * operation: no fused multiply-add (GCC keeps ISO C's default of not
 * contracting under -std=c11; clang needs telling). */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define N_ORDERS METRICS_BLEU_N /* BLEU and CIDEr-D both use n-grams of order 1..4 */

/* The reference's constants, spelled as its Python spells them. */
static const double BLEU_TINY = 1e-15;       /* added to matches and lengths */
static const double BLEU_SMALL = 1e-9;       /* added to counts and reference lengths */
static const double CIDER_SIGMA = 6.0;       /* Gaussian length penalty width */
static const double PY_NUMPY_E = 2.718281828459045; /* np.e: the penalty is np.e ** x, a pow(), not exp() */
static const double ROUGE_BETA = 1.2;

/* ---- splitting as Python's str.split() and str.split(" ") ---- */

/* Byte length of the whitespace character at p (Python's str.isspace set,
 * read from UTF-8), or 0 if p does not start one. */
static size_t space_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f))
        return 1;
    if (c < 0xc2 || end - p < 2)
        return 0;
    if (c == 0xc2)
        return (p[1] == 0x85 || p[1] == 0xa0) ? 2 : 0; /* U+0085, U+00A0 */
    if (end - p < 3)
        return 0;
    if (c == 0xe1)
        return (p[1] == 0x9a && p[2] == 0x80) ? 3 : 0; /* U+1680 */
    if (c == 0xe2 && p[1] == 0x80)                     /* U+2000-200A, 2028, 2029, 202F */
        return (p[2] <= 0x8a && p[2] >= 0x80) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf ? 3 : 0;
    if (c == 0xe2 && p[1] == 0x81)
        return p[2] == 0x9f ? 3 : 0; /* U+205F */
    if (c == 0xe3)
        return (p[1] == 0x80 && p[2] == 0x80) ? 3 : 0; /* U+3000 */
    return 0;
}

/* ---- working state ---- */

/* A distinct n-gram of a sentence and its count there. */
typedef struct gram_count {
    uint32_t gram;  // id in the n-gram interner
    uint32_t count; // term frequency in the sentence
} gram_count;

typedef struct sentence {
    size_t n_words;                // tokens by str.split()
    size_t rouge_off;              // first of its str.split(" ") tokens in work.rouge_words
    size_t n_rouge;                // number of those tokens (at least 1)
    size_t gram_off;               // first of its distinct n-grams in work.grams
    uint32_t n_distinct[N_ORDERS]; // distinct n-grams per order, stored order 1 first, each
                                   // order in order of first occurrence (the reference's dict order)
} sentence;

typedef struct work {
    interner *words;         // word -> id
    interner *ngrams;        // n-gram (the bytes of its n word ids) -> id
    sentence *sent;          // (n_sent) per scored image: its candidate, then its references
    size_t n_sent, sent_cap;
    size_t *first_sent;      // (n_items) index in sent of the item's candidate
    uint32_t *rouge_words;   // (n_rouge_words) every sentence's str.split(" ") word ids
    size_t n_rouge_words, rouge_cap;
    gram_count *grams;       // (n_grams) every sentence's distinct n-grams
    size_t n_grams, grams_cap;
    uint32_t *words_buf;     // (words_cap) the current sentence's str.split() word ids
    size_t words_cap;
    uint32_t *stamp;         // (scratch_cap) per n-gram id: 1 + the last sentence it was seen in
    uint32_t *where;         // (scratch_cap) per n-gram id: its index among that sentence's grams
    size_t scratch_cap;
} work;

/* Returns buf (capacity *cap elements of `size` bytes), or a larger copy
 * holding at least `need` elements; NULL when memory runs out, buf then
 * still valid. */
static void *reserve(void *buf, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap && buf)
        return buf;
    size_t new_cap = *cap ? *cap : 64;
    while (new_cap < need) {
        if (new_cap > SIZE_MAX / 2 / size)
            return NULL;
        new_cap *= 2;
    }
    void *grown = realloc(buf, new_cap * size);
    if (grown)
        *cap = new_cap;
    return grown;
}

static void work_free(work *w)
{
    interner_free(w->words);
    interner_free(w->ngrams);
    free(w->sent);
    free(w->first_sent);
    free(w->rouge_words);
    free(w->grams);
    free(w->words_buf);
    free(w->stamp);
    free(w->where);
}

/* Grows the per-n-gram scratch arrays to cover every id interned so far. */
static int cover_ngrams(work *w)
{
    size_t n = interner_count(w->ngrams), old = w->scratch_cap;
    if (n <= old)
        return 0;
    size_t cap_stamp = old, cap_where = old;
    uint32_t *stamp = reserve(w->stamp, &cap_stamp, n, sizeof *w->stamp);
    if (!stamp)
        return -1;
    w->stamp = stamp;
    uint32_t *where = reserve(w->where, &cap_where, n, sizeof *w->where);
    if (!where)
        return -1; /* stamp's new tail is never read: scratch_cap is unchanged */
    w->where = where;
    size_t cap = cap_stamp < cap_where ? cap_stamp : cap_where;
    memset(w->stamp + old, 0, (cap - old) * sizeof *w->stamp);
    w->scratch_cap = cap;
    return 0;
}

/* Splits and counts one sentence and appends it to w->sent. */
static int add_sentence(work *w, const char *text, rc_error *err)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + strlen(text);
    if (w->n_sent >= UINT32_MAX - 1)
        return rc_fail(err, "too many sentences to score (%zu)", w->n_sent);
    void *grown;
    if (!(grown = reserve(w->sent, &w->sent_cap, w->n_sent + 1, sizeof *w->sent)))
        goto oom;
    w->sent = grown;
    sentence *s = &w->sent[w->n_sent];
    memset(s, 0, sizeof *s);
    uint32_t id;

    /* str.split(): runs of non-whitespace. */
    size_t n_words = 0;
    while (p < end) {
        size_t sp = space_len(p, end);
        if (sp) {
            p += sp;
            continue;
        }
        const unsigned char *start = p;
        while (p < end && !space_len(p, end))
            p++;
        if (interner_intern(w->words, start, (size_t)(p - start), &id, err) < 0)
            return -1;
        if (!(grown = reserve(w->words_buf, &w->words_cap, n_words + 1, sizeof *w->words_buf)))
            goto oom;
        w->words_buf = grown;
        w->words_buf[n_words++] = id;
    }
    s->n_words = n_words;

    /* str.split(" "): every single space separates, empty tokens included. */
    s->rouge_off = w->n_rouge_words;
    p = (const unsigned char *)text;
    for (;;) {
        const unsigned char *start = p;
        while (p < end && *p != ' ')
            p++;
        if (interner_intern(w->words, start, (size_t)(p - start), &id, err) < 0)
            return -1;
        if (!(grown = reserve(w->rouge_words, &w->rouge_cap, w->n_rouge_words + 1, sizeof *w->rouge_words)))
            goto oom;
        w->rouge_words = grown;
        w->rouge_words[w->n_rouge_words++] = id;
        s->n_rouge++;
        if (p == end)
            break;
        p++;
    }

    /* Distinct n-grams with counts, order by order, in first-occurrence order. */
    s->gram_off = w->n_grams;
    const uint32_t stamp = (uint32_t)w->n_sent + 1;
    for (int n = 1; n <= N_ORDERS; n++) {
        for (size_t i = 0; i + n <= n_words; i++) {
            if (interner_intern(w->ngrams, &w->words_buf[i], n * sizeof(uint32_t), &id, err) < 0)
                return -1;
            if (cover_ngrams(w))
                goto oom;
            if (w->stamp[id] == stamp) {
                w->grams[s->gram_off + w->where[id]].count++;
                continue;
            }
            if (!(grown = reserve(w->grams, &w->grams_cap, w->n_grams + 1, sizeof *w->grams)))
                goto oom;
            w->grams = grown;
            w->stamp[id] = stamp;
            w->where[id] = (uint32_t)(w->n_grams - s->gram_off);
            w->grams[w->n_grams++] = (gram_count){id, 1};
            s->n_distinct[n - 1]++;
        }
    }
    w->n_sent++;
    return 0;
oom:
    return rc_fail(err, "out of memory reading the captions to score (%zu sentences)", w->n_sent);
}

/* ---- BLEU ---- */

typedef struct bleu_counts {
    uint64_t correct[N_ORDERS]; // clipped n-gram matches
    uint64_t guess[N_ORDERS];   // candidate n-grams
    uint64_t cand_len;          // candidate tokens
    uint64_t ref_len;           // closest reference tokens
} bleu_counts;

/* BLEU-1..4 from counts, one image's or the corpus's sums: the reference's
 * running product, its (1/n)-th power, then the brevity penalty. */
static void bleu_from_counts(const bleu_counts *k, double bleu[N_ORDERS])
{
    double product = 1.0;
    for (int n = 0; n < N_ORDERS; n++) {
        product *= ((double)k->correct[n] + BLEU_TINY) / ((double)k->guess[n] + BLEU_SMALL);
        bleu[n] = pow(product, 1.0 / (n + 1));
    }
    double ratio = ((double)k->cand_len + BLEU_TINY) / ((double)k->ref_len + BLEU_SMALL);
    if (ratio < 1.0)
        for (int n = 0; n < N_ORDERS; n++)
            bleu[n] *= exp(1.0 - 1.0 / ratio);
}

/* The distinct n-grams of order n (1-based) of sentence s. */
static const gram_count *grams_of(const work *w, const sentence *s, int n, size_t *count)
{
    size_t off = s->gram_off;
    for (int k = 1; k < n; k++)
        off += s->n_distinct[k - 1];
    *count = s->n_distinct[n - 1];
    return w->grams + off;
}

/* The n-gram counts of every order of sentence s, one run of *total. */
static const gram_count *all_grams_of(const work *w, const sentence *s, size_t *total)
{
    *total = 0;
    for (int n = 0; n < N_ORDERS; n++)
        *total += s->n_distinct[n];
    return w->grams + s->gram_off;
}

/* One image's BLEU counts. refmax is all-zero scratch indexed by n-gram id,
 * left all-zero. */
static void bleu_count_image(const work *w, const sentence *cand, const sentence *refs, size_t n_refs,
                             uint32_t *refmax, bleu_counts *k)
{
    memset(k, 0, sizeof *k);
    for (size_t r = 0; r < n_refs; r++) {
        size_t total;
        const gram_count *g = all_grams_of(w, &refs[r], &total);
        for (size_t i = 0; i < total; i++)
            if (g[i].count > refmax[g[i].gram])
                refmax[g[i].gram] = g[i].count;
    }
    for (int n = 1; n <= N_ORDERS; n++) {
        size_t count;
        const gram_count *g = grams_of(w, cand, n, &count);
        for (size_t i = 0; i < count; i++)
            k->correct[n - 1] += g[i].count < refmax[g[i].gram] ? g[i].count : refmax[g[i].gram];
        k->guess[n - 1] = cand->n_words >= (size_t)n ? cand->n_words - n + 1 : 0;
    }
    for (size_t r = 0; r < n_refs; r++) {
        size_t total;
        const gram_count *g = all_grams_of(w, &refs[r], &total);
        for (size_t i = 0; i < total; i++)
            refmax[g[i].gram] = 0;
    }
    /* Closest reference length; the reference takes min((|l - c|, l)), so a
     * tie goes to the shorter reference. */
    uint64_t c = cand->n_words, best = 0, best_diff = UINT64_MAX;
    for (size_t r = 0; r < n_refs; r++) {
        uint64_t l = refs[r].n_words, diff = l > c ? l - c : c - l;
        if (diff < best_diff || (diff == best_diff && l < best)) {
            best = l;
            best_diff = diff;
        }
    }
    k->cand_len = c;
    k->ref_len = best;
}

/* ---- CIDEr-D ---- */

/* Weights tf * idf of sentence s written into vec (indexed by n-gram id, if
 * not NULL) and the vector's norm per order, summed in the reference's order. */
static void cider_vector(const work *w, const sentence *s, const double *idf, double *vec, double norm[N_ORDERS])
{
    for (int n = 1; n <= N_ORDERS; n++) {
        size_t count;
        const gram_count *g = grams_of(w, s, n, &count);
        double sum = 0.0;
        for (size_t i = 0; i < count; i++) {
            double v = (double)g[i].count * idf[g[i].gram];
            if (vec)
                vec[g[i].gram] = v;
            sum += v * v;
        }
        norm[n - 1] = sqrt(sum);
    }
}

/* The reference's "length": the number of bigrams. */
static double bigram_length(const sentence *s) { return s->n_words >= 2 ? (double)(s->n_words - 1) : 0.0; }

/* One image's CIDEr-D. refvec is all-zero scratch indexed by n-gram id, left
 * all-zero. */
static double cider_image(const work *w, const sentence *cand, const sentence *refs, size_t n_refs,
                          const double *idf, double *refvec)
{
    double norm_c[N_ORDERS], norm_r[N_ORDERS], score[N_ORDERS] = {0};
    cider_vector(w, cand, idf, NULL, norm_c);
    for (size_t r = 0; r < n_refs; r++) {
        cider_vector(w, &refs[r], idf, refvec, norm_r);
        double delta = bigram_length(cand) - bigram_length(&refs[r]);
        double penalty = pow(PY_NUMPY_E, -(delta * delta) / (2 * CIDER_SIGMA * CIDER_SIGMA));
        for (int n = 1; n <= N_ORDERS; n++) {
            size_t count;
            const gram_count *g = grams_of(w, cand, n, &count);
            double val = 0.0;
            for (size_t i = 0; i < count; i++) {
                double h = (double)g[i].count * idf[g[i].gram], v = refvec[g[i].gram];
                val += (v < h ? v : h) * v;
            }
            if (norm_c[n - 1] != 0.0 && norm_r[n - 1] != 0.0)
                val /= norm_c[n - 1] * norm_r[n - 1];
            val *= penalty;
            score[n - 1] += val;
        }
        const gram_count *g = w->grams + refs[r].gram_off;
        size_t total = 0;
        for (int n = 0; n < N_ORDERS; n++)
            total += refs[r].n_distinct[n];
        for (size_t i = 0; i < total; i++)
            refvec[g[i].gram] = 0.0;
    }
    double mean = metrics_mean(score, N_ORDERS);
    mean /= (double)n_refs;
    return mean * 10.0;
}

/* ---- ROUGE-L ---- */

/* Length of the longest common subsequence of a[0..na) and b[0..nb); row is
 * scratch of nb + 1 entries. */
static size_t lcs_length(const uint32_t *a, size_t na, const uint32_t *b, size_t nb, uint32_t *row)
{
    memset(row, 0, (nb + 1) * sizeof *row);
    for (size_t i = 0; i < na; i++) {
        uint32_t diagonal = 0; /* row[j] of the previous i, before it was overwritten */
        for (size_t j = 1; j <= nb; j++) {
            uint32_t above = row[j];
            if (a[i] == b[j - 1])
                row[j] = diagonal + 1;
            else if (row[j - 1] > above)
                row[j] = row[j - 1];
            diagonal = above;
        }
    }
    return row[nb];
}

static double rouge_image(const work *w, const sentence *cand, const sentence *refs, size_t n_refs, uint32_t *row)
{
    const double beta2 = ROUGE_BETA * ROUGE_BETA;
    const uint32_t *c = w->rouge_words + cand->rouge_off;
    double best_p = 0.0, best_r = 0.0;
    for (size_t r = 0; r < n_refs; r++) {
        const uint32_t *t = w->rouge_words + refs[r].rouge_off;
        double lcs = (double)lcs_length(t, refs[r].n_rouge, c, cand->n_rouge, row);
        double p = lcs / (double)cand->n_rouge, rec = lcs / (double)refs[r].n_rouge;
        best_p = p > best_p ? p : best_p;
        best_r = rec > best_r ? rec : best_r;
    }
    if (best_p == 0.0 || best_r == 0.0)
        return 0.0;
    return ((1 + beta2) * best_p * best_r) / (best_r + beta2 * best_p);
}

/* ---- the corpus ---- */

/* numpy's pairwise_sum for one block: plain below 8 values, 8 accumulators
 * up to 128, halves (rounded to a multiple of 8) above. */
static double pairwise_sum(const double *x, size_t n)
{
    if (n < 8) {
        double s = -0.0;
        for (size_t i = 0; i < n; i++)
            s += x[i];
        return s;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++)
            r[j] = x[j];
        size_t i;
        for (i = 8; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += x[i + j];
        double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            s += x[i];
        return s;
    }
    size_t half = n / 2;
    half -= half % 8;
    return pairwise_sum(x, half) + pairwise_sum(x + half, n - half);
}

double metrics_mean(const double *x, size_t n)
{
    enum { NUMPY_BUFSIZE = 8192 }; /* np.add.reduce hands its loop blocks of this many values */
    if (n == 0)
        return 0.0;
    double sum = 0.0;
    for (size_t i = 0; i < n; i += NUMPY_BUFSIZE) {
        size_t m = n - i < NUMPY_BUFSIZE ? n - i : NUMPY_BUFSIZE;
        double block = pairwise_sum(x + i, m);
        sum = i == 0 ? block : sum + block;
    }
    return sum / (double)n;
}

void metrics_free(metrics_result *result)
{
    if (!result)
        return;
    free(result->per_image);
    free(result->scored);
    free(result);
}

metrics_result *metrics_compute(const metrics_item *items, size_t n_items, rc_error *err)
{
    work w = {0};
    metrics_result *res = calloc(1, sizeof *res);
    uint32_t *df = NULL, *mark = NULL, *refmax = NULL, *row = NULL;
    double *idf = NULL, *refvec = NULL, *cider = NULL, *rouge = NULL;
    if (!res)
        goto oom;
    res->n_items = n_items;
    res->per_image = calloc(n_items ? n_items : 1, sizeof *res->per_image);
    res->scored = calloc(n_items ? n_items : 1, 1);
    w.first_sent = calloc(n_items ? n_items : 1, sizeof *w.first_sent);
    if (!res->per_image || !res->scored || !w.first_sent)
        goto oom;
    if (!(w.words = interner_new(1024, err)) || !(w.ngrams = interner_new(4096, err)))
        goto fail;
    /* Never NULL, even for a corpus without any n-gram: pointer arithmetic
     * on them is then always defined. */
    if (!(w.grams = reserve(NULL, &w.grams_cap, 64, sizeof *w.grams)))
        goto oom;

    /* Split and count every sentence of the scored images. */
    size_t max_rouge = 1;
    for (size_t i = 0; i < n_items; i++) {
        if (items[i].n_references == 0)
            continue;
        res->scored[i] = 1;
        res->n_scored++;
        w.first_sent[i] = w.n_sent;
        if (add_sentence(&w, items[i].candidate, err))
            goto fail;
        for (size_t r = 0; r < items[i].n_references; r++)
            if (add_sentence(&w, items[i].references[r], err))
                goto fail;
    }
    for (size_t s = 0; s < w.n_sent; s++)
        max_rouge = w.sent[s].n_rouge > max_rouge ? w.sent[s].n_rouge : max_rouge;

    /* Document frequency over each image's references, and the idf weights. */
    size_t n_ngrams = interner_count(w.ngrams);
    df = calloc(n_ngrams + 1, sizeof *df);
    mark = calloc(n_ngrams + 1, sizeof *mark);
    refmax = calloc(n_ngrams + 1, sizeof *refmax);
    idf = malloc((n_ngrams + 1) * sizeof *idf);
    refvec = calloc(n_ngrams + 1, sizeof *refvec);
    row = malloc((max_rouge + 1) * sizeof *row);
    cider = malloc((res->n_scored + 1) * sizeof *cider);
    rouge = malloc((res->n_scored + 1) * sizeof *rouge);
    if (!df || !mark || !refmax || !idf || !refvec || !row || !cider || !rouge)
        goto oom;
    for (size_t i = 0, image = 0; i < n_items; i++) {
        if (!res->scored[i])
            continue;
        image++;
        for (size_t r = 1; r <= items[i].n_references; r++) {
            const sentence *s = &w.sent[w.first_sent[i] + r];
            size_t total = 0;
            for (int n = 0; n < N_ORDERS; n++)
                total += s->n_distinct[n];
            for (size_t k = 0; k < total; k++) {
                uint32_t g = w.grams[s->gram_off + k].gram;
                if (mark[g] != image) {
                    mark[g] = (uint32_t)image;
                    df[g]++;
                }
            }
        }
    }
    const double log_n = res->n_scored ? log((double)res->n_scored) : 0.0;
    for (size_t g = 0; g < n_ngrams; g++)
        idf[g] = log_n - log(df[g] > 1 ? (double)df[g] : 1.0);

    /* Per image, then the corpus. */
    bleu_counts total = {0};
    size_t n_scored = 0;
    for (size_t i = 0; i < n_items; i++) {
        if (!res->scored[i])
            continue;
        const sentence *cand = &w.sent[w.first_sent[i]], *refs = cand + 1;
        const size_t n_refs = items[i].n_references;
        metrics_scores *out = &res->per_image[i];
        bleu_counts k;
        bleu_count_image(&w, cand, refs, n_refs, refmax, &k);
        bleu_from_counts(&k, out->bleu);
        for (int n = 0; n < N_ORDERS; n++) {
            total.correct[n] += k.correct[n];
            total.guess[n] += k.guess[n];
        }
        total.cand_len += k.cand_len;
        total.ref_len += k.ref_len;
        out->cider = cider_image(&w, cand, refs, n_refs, idf, refvec);
        out->rouge_l = rouge_image(&w, cand, refs, n_refs, row);
        cider[n_scored] = out->cider;
        rouge[n_scored] = out->rouge_l;
        n_scored++;
    }
    bleu_from_counts(&total, res->corpus.bleu);
    res->corpus.cider = metrics_mean(cider, n_scored);
    res->corpus.rouge_l = metrics_mean(rouge, n_scored);
    res->cand_len = total.cand_len;
    res->ref_len = total.ref_len;
    goto done;

oom:
    rc_fail(err, "out of memory scoring %zu images", n_items);
fail:
    metrics_free(res);
    res = NULL;
done:
    work_free(&w);
    free(df);
    free(mark);
    free(refmax);
    free(idf);
    free(refvec);
    free(row);
    free(cider);
    free(rouge);
    return res;
}
