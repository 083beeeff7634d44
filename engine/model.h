/* model.h: the ResNet-50 Graph Radiology Captioner's weights.
 *
 * model_load maps a checkpoint (checkpoint.h), checks it against the
 * configuration (every expected tensor present with its dtype and shape, no
 * unexpected ones: all problems reported by name at once), folds each
 * BatchNorm into its convolution and lays convolution weights out for
 * channels-last windows (gemm_conv2d). Every matrix product's weights are then packed for
 * gemm.h; the folded convolution weights are not kept, and the mapping's
 * pages are handed back once packed, so the resident model is the packed
 * weights plus what is read from the file as it is (embeddings, biases,
 * norms, which point straight into the mapping when float32).
 *
 * The forward passes live in encoder.h (image -> memory tokens) and
 * decoder.h (one token step with a key/value cache); generate.h decodes.
 */
#ifndef RC_MODEL_H
#define RC_MODEL_H

#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "err.h"
#include "gemm.h"

/* A convolution with its BatchNorm folded in: y = conv(x, w) + bias. */
typedef struct conv_layer {
    int c_in, c_out;     /* channels */
    int kernel;          /* square kernel side */
    int stride, pad;
    gemm_weights gemm;   /* packed W: (c_out, kernel, kernel, c_in), bias: (c_out);
                          * w is NULL (the unpacked folded copy is dropped at load) */
} conv_layer;

/* One ResNet bottleneck layer: relu(expand(spatial(reduce(x))) + shortcut(x)). */
typedef struct bottleneck {
    conv_layer reduce;   /* 1x1, c_in -> width, ReLU */
    conv_layer spatial;  /* 3x3, stride s, width -> width, ReLU */
    conv_layer expand;   /* 1x1, width -> c_out, no ReLU before the add */
    conv_layer shortcut; /* 1x1, stride s, c_in -> c_out; valid if has_shortcut */
    int has_shortcut;    /* 0: the input itself is added */
} bottleneck;

/* One nn.TransformerDecoderLayer (post-norm, ReLU). */
typedef struct decoder_layer {
    gemm_weights self_qkv;   /* self_attn.in_proj: (3*dim, dim), rows q, k, v */
    gemm_weights self_out;   /* self_attn.out_proj: (dim, dim) */
    gemm_weights cross_q;    /* multihead_attn.in_proj rows 0..dim: (dim, dim) */
    gemm_weights cross_kv;   /* multihead_attn.in_proj rows dim..3*dim: (2*dim, dim) */
    gemm_weights cross_out;  /* multihead_attn.out_proj: (dim, dim) */
    gemm_weights ffn_up;     /* linear1: (ffn_dim, dim), ReLU */
    gemm_weights ffn_down;   /* linear2: (dim, ffn_dim) */
    const float *norm_w[3];  /* norm1..3 weight: (dim) each */
    const float *norm_b[3];  /* norm1..3 bias: (dim) each */
} decoder_layer;

typedef struct captioner {
    cfg_model cfg;                 /* architecture */
    /* encoder */
    conv_layer stem;               /* 7x7 stride 2, num_channels -> embedding_size */
    bottleneck *blocks;            /* (n_blocks) all stages' layers in order */
    int n_blocks;                  /* sum of depths */
    gemm_weights vis_proj;         /* (dim, hidden_sizes[last]) */
    gemm_weights graph_msg;        /* graph_layer.msg_linear: (dim, dim) */
    /* decoder */
    const float *token_embedding;  /* (vocab_size, dim) */
    const float *pos_encoder;      /* (max_positions, dim) */
    decoder_layer *layers;         /* (num_layers) */
    gemm_weights fc_out;           /* (vocab_size, dim) */
    gemm_precision encoder_precision; /* how the encoder's gemm_weights are packed (model_options) */
    gemm_precision decoder_precision; /* how the decoder's and fc_out's are (model_options) */
    /* storage */
    ckpt_file ckpt;                /* the mapped checkpoint the pointers may point into */
    float *folded;                 /* convolution biases after BN folding (the folded
                                    * weights live only in the packed panels) */
    float **converted;             /* (n_converted) float32 copies of non-f32 tensors */
    int n_converted;
} captioner;

/* Choices made when a model is built; zeroed options are the defaults.
 * GEMM_BF16 rounds a part's matrix-product weights to bfloat16 when they are
 * packed: half their memory and the bandwidth decoding streams them with;
 * embeddings, biases and norms stay float. In the encoder, products are
 * compute-bound: bf16 weights bring it speed only with bfloat16 arithmetic
 * (the avx512bf16 backend, gemm.h), and its 50 layers amplify the rounding
 * (tests/test_bf16_model.c). */
typedef struct model_options {
    gemm_precision encoder_precision; /* convolutions, vis_proj, graph layer: GEMM_FP32 (default) or GEMM_BF16 */
    gemm_precision decoder_precision; /* decoder layers and fc_out: GEMM_FP32 (default) or GEMM_BF16 */
} model_options;

/* What `radcap --precision` names: which parts' weights are bfloat16. */
typedef enum model_precision {
    MODEL_FP32 = 0,     /* "fp32": none (the default) */
    MODEL_BF16 = 1,     /* "bf16": the decoder's */
    MODEL_BF16_ALL = 2, /* "bf16-all": the encoder's too */
} model_precision;

/* Parses "fp32", "bf16" or "bf16-all" into *precision; -1 naming the text
 * otherwise (*precision untouched). */
int model_precision_parse(const char *name, model_precision *precision, rc_error *err);

/* The name model_precision_parse takes ("?" outside the enum). */
const char *model_precision_name(model_precision precision);

/* The model_options `precision` stands for (fp32 for a value outside the
 * enum). */
model_options model_precision_options(model_precision precision);

/* Loads a checkpoint file for configuration cfg. On failure *m is left
 * safe to model_free. */
int model_load(captioner *m, const cfg_model *cfg, const char *path, rc_error *err);

/* model_load and model_build with options (NULL: the defaults, which is
 * what model_load and model_build use). */
int model_load_with(captioner *m, const cfg_model *cfg, const char *path, const model_options *options,
                    rc_error *err);
int model_build_with(captioner *m, const cfg_model *cfg, ckpt_file *ckpt, const model_options *options,
                     rc_error *err);

/* Builds the model from an opened checkpoint, which it takes over (*ckpt is
 * emptied, and closed with the model, also on failure). model_load is
 * ckpt_open + model_build. */
int model_build(captioner *m, const cfg_model *cfg, ckpt_file *ckpt, rc_error *err);

/* Releases the model and its mapping. */
void model_free(captioner *m);

/* One tensor the model expects in a state dict, in PyTorch's order. */
typedef struct model_tensor_spec {
    char name[128];        /* state-dict key */
    int ndim;              /* 0 for num_batches_tracked */
    int64_t shape[4];      /* (ndim) */
    int is_counter;        /* 1: BatchNorm num_batches_tracked (int64 scalar) */
} model_tensor_spec;

/* Lists the state dict of cfg's model exactly as PyTorch's state_dict()
 * orders it (398 tensors for the card's model). *specs is malloc'd. */
int model_tensor_specs(const cfg_model *cfg, model_tensor_spec **specs, int *n, rc_error *err);

#endif
