/* libFuzzer target: ckpt_parse over arbitrary bytes (PyTorch zip or
 * safetensors), with and without CRC checks (without, the zip and pickle
 * layers see damaged bytes raw). Every tensor a successful parse returns is
 * read in full and converted, so ASan catches data pointing outside the
 * input. Seeds: tests/fuzz/corpus/checkpoint/. */
#include <stdint.h>
#include <stdlib.h>

#include "engine/checkpoint.h"

static void use_tensors(const ckpt_file *f)
{
    uint8_t sum = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const ckpt_tensor *t = &f->tensors[i];
        if (ckpt_find(f, t->name) != t)
            abort();
        size_t bytes = (size_t)t->numel * ckpt_dtype_size(t->dtype);
        for (size_t k = 0; k < bytes; k++)
            sum ^= ((const uint8_t *)t->data)[k];
        if (t->numel <= (1 << 20)) {
            float *out = malloc((size_t)t->numel * sizeof *out + 1);
            rc_error err;
            ckpt_to_f32(t, out, &err);
            free(out);
        }
    }
    volatile uint8_t sink = sum;
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned flags[2] = {CKPT_NO_CRC, 0};
    for (int k = 0; k < 2; k++) {
        ckpt_file f;
        rc_error err;
        if (ckpt_parse_flags(&f, data, size, "fuzz.pt", flags[k], &err) == 0)
            use_tensors(&f);
        else if (err.msg[0] == '\0')
            abort(); /* a failure must say why */
        ckpt_close(&f);
    }
    return 0;
}
