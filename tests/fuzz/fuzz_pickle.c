/* libFuzzer target: the pickle virtual machine alone (pk_load), then a
 * bounded walk over the value tree it built (which may contain cycles
 * through the memo), describing every value. Seeds:
 * tests/fuzz/corpus/pickle/. */
#include <stdint.h>
#include <stdlib.h>

#include "engine/pickle.h"

typedef struct walk {
    size_t visited, budget;
} walk;

static void visit(walk *w, const pk_value *v, int depth)
{
    if (!v || depth > 40 || w->visited >= w->budget)
        return;
    w->visited++;
    char text[96];
    pk_describe(v, text, sizeof text);
    if (v->kind == PK_STR || v->kind == PK_BYTES) {
        volatile char c = v->len ? v->str[v->len - 1] : 0;
        (void)c;
    }
    for (size_t i = 0; i < v->items.n; i++)
        visit(w, v->items.v[i], depth + 1);
    for (size_t i = 0; i < v->entries.n; i++)
        visit(w, v->entries.v[i], depth + 1);
    visit(w, v->callable, depth + 1);
    visit(w, v->args, depth + 1);
    visit(w, v->kwargs, depth + 1);
    visit(w, v->state, depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pk_doc doc;
    rc_error err;
    pk_limits limits;
    pk_default_limits(&limits);
    limits.max_values = 1 << 16; /* keep each run fast; the defaults are tested in unit tests */
    if (pk_load(&doc, data, size, &limits, "fuzz.pkl", &err) == 0) {
        walk w = {0, 100000};
        visit(&w, doc.root, 0);
    } else if (err.msg[0] == '\0') {
        abort();
    }
    pk_free(&doc);
    return 0;
}
