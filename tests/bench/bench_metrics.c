/* bench_metrics.c: scoring speed, for `make bench`. Builds a synthetic
 * corpus of radiology-like captions (10,000 images, one candidate and five
 * references each, by default; a fixed seed), tokenises every caption with
 * the PTB tokenizer as `radcap score` does, then computes BLEU-1..4,
 * CIDEr-D and ROUGE-L. Prints the seconds of each phase and one JSON line
 * (metrics_images, metrics_refs, metrics_tokenize_s, metrics_score_s,
 * metrics_total_s) for build/bench.json. One thread; times are CPU seconds.
 *
 * usage: bench_metrics [IMAGES [REFERENCES]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/rng.h"
#include "pipeline/metrics.h"
#include "pipeline/ptb.h"

static const char *const findings[] = {
    "mass", "nodule", "lesion", "cyst", "opacity", "effusion", "consolidation", "fracture", "hematoma",
    "calcification", "stenosis", "aneurysm", "abscess", "tumor", "thickening", "enhancement", "edema",
    "pneumothorax", "atelectasis", "lymphadenopathy", "infarct", "hemorrhage", "collection", "dilatation",
};
static const char *const places[] = {
    "left lobe", "right upper lobe", "liver", "pancreatic head", "left kidney", "spleen", "mediastinum",
    "right hemithorax", "frontal lobe", "cerebellum", "L4/L5 level", "femoral neck", "thyroid", "gallbladder",
    "left ventricle", "aortic arch", "pelvis", "C5-C6 disc", "bladder wall", "left breast",
};
static const char *const studies[] = {
    "Axial CT scan", "Contrast-enhanced CT", "Sagittal T2-weighted MRI", "Coronal T1/T2 MRI", "Chest X-ray",
    "Ultrasound", "18F-FDG PET/CT", "Non-contrast head CT", "Doppler US", "Plain radiograph", "CT angiography",
};
static const char *const verbs[] = {"showing", "demonstrating", "revealing", "with", "shows", "depicting"};
static const char *const adjectives[] = {"a well-defined", "an ill-defined", "a hypodense", "a large", "a small",
                                         "a heterogeneous", "a round", "an enhancing", "a calcified", "a cystic"};
static const char *const tails[] = {"(arrow).", "(arrowheads).", ".", "; no other abnormality.", ", consistent with malignancy.",
                                    " (white arrow) and mild edema.", "... see text.", " \u2013 don't miss it.", "."};

#define PICK(rng, list) list[rng_next(rng) % (sizeof(list) / sizeof(list[0]))]

static char *caption(rng_state *rng)
{
    char buf[512];
    int size10 = 5 + (int)(rng_next(rng) % 95);
    snprintf(buf, sizeof buf, "%s %s %s %d.%d-cm %s in the %s%s%s %s", PICK(rng, studies), PICK(rng, verbs),
             PICK(rng, adjectives), size10 / 10, size10 % 10, PICK(rng, findings), PICK(rng, places),
             rng_uniform(rng) < 0.3 ? " and the " : "", rng_uniform(rng) < 0.3 ? PICK(rng, places) : "",
             PICK(rng, tails));
    return strdup(buf);
}

/* CPU seconds of this process: unlike wall time, not inflated when other
 * jobs share the cores. */
static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t n_images = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000, n_refs = argc > 2 ? strtoul(argv[2], NULL, 10) : 5;
    size_t per = n_refs + 1, n_texts = n_images * per;
    rng_state rng;
    rng_seed(&rng, 7);
    char **raw = malloc(n_texts * sizeof *raw), **tok = malloc(n_texts * sizeof *tok);
    metrics_item *items = malloc(n_images * sizeof *items);
    if (!raw || !tok || !items)
        return 1;
    for (size_t k = 0; k < n_texts; k++)
        raw[k] = caption(&rng);

    rc_error err;
    double t0 = seconds();
    for (size_t k = 0; k < n_texts; k++)
        if (!(tok[k] = ptb_tokenize(raw[k], strlen(raw[k]), NULL, &err))) {
            fprintf(stderr, "bench_metrics: %s\n", err.msg);
            return 1;
        }
    double t1 = seconds();
    for (size_t i = 0; i < n_images; i++)
        items[i] = (metrics_item){tok[i * per], (const char *const *)&tok[i * per + 1], n_refs};
    metrics_result *r = metrics_compute(items, n_images, &err);
    double t2 = seconds();
    if (!r) {
        fprintf(stderr, "bench_metrics: %s\n", err.msg);
        return 1;
    }
    printf("scoring %zu images x %zu references (%zu captions), one thread, CPU seconds:\n", n_images, n_refs, n_texts);
    printf("  PTB tokenisation  %.3f s\n  metrics           %.3f s\n  total             %.3f s\n", t1 - t0, t2 - t1,
           t2 - t0);
    printf("  corpus BLEU-4 %.4f, CIDEr-D %.4f, ROUGE-L %.4f\n", r->corpus.bleu[3], r->corpus.cider, r->corpus.rouge_l);
    printf("{\"metrics_images\": %zu, \"metrics_refs\": %zu, \"metrics_tokenize_s\": %.4f, \"metrics_score_s\": %.4f, "
           "\"metrics_total_s\": %.4f}\n", n_images, n_refs, t1 - t0, t2 - t1, t2 - t0);
    metrics_free(r);
    for (size_t k = 0; k < n_texts; k++) {
        free(raw[k]);
        free(tok[k]);
    }
    free(raw);
    free(tok);
    free(items);
    return 0;
}
