/* config.h: the captioner's architecture hyper-parameters.
 *
 * Defaults are the model card's values (ResNet-50 encoder, 512-wide 4-layer
 * decoder, BERT uncased vocabulary). A JSON file (read with cJSON) may
 * override any field, so tests can build a tiny model of the same
 * architecture. Key names follow Hugging Face's ResNetConfig where one exists.
 */
#ifndef RC_CONFIG_H
#define RC_CONFIG_H

#include "err.h"

#define CFG_MAX_STAGES 8

typedef struct cfg_model {
    /* encoder: Hugging Face ResNetModel, bottleneck layers */
    int image_size;                   /* input height = width (224) */
    int num_channels;                 /* input channels (3) */
    int embedding_size;               /* stem output channels (64) */
    int n_stages;                     /* number of stages (4) */
    int hidden_sizes[CFG_MAX_STAGES]; /* stage output channels (256,512,1024,2048) */
    int depths[CFG_MAX_STAGES];       /* bottleneck layers per stage (3,4,6,3) */
    int bottleneck_reduction;         /* bottleneck width = out / reduction (4) */
    double batch_norm_eps;            /* 1e-5 */
    /* graph propagation over the visual tokens */
    int graph_window;                 /* rolled neighbours averaged (3) */
    int graph_steps;                  /* propagation steps (3) */
    /* decoder: nn.TransformerDecoder, post-norm, ReLU */
    int embed_dim;                    /* d_model (512) */
    int num_heads;                    /* attention heads (8) */
    int ffn_dim;                      /* dim_feedforward (1024) */
    int num_layers;                   /* decoder layers (4) */
    int vocab_size;                   /* output classes (30522) */
    int max_positions;                /* rows of pos_encoder (2000) */
    double layer_norm_eps;            /* 1e-5 */
    /* greedy decoding */
    int max_len;                      /* generated tokens at most (80) */
    int bos_token_id;                 /* [CLS] (101) */
    int eos_token_id;                 /* [SEP] (102) */
    /* preprocessing */
    float image_mean[3];              /* ImageNet mean */
    float image_std[3];               /* ImageNet std */
} cfg_model;

/* Fills cfg with the model card's values. */
void cfg_default(cfg_model *cfg);

/* Parses a JSON object (text of length len) over the defaults: present keys
 * override, unknown keys and wrong types are errors naming the key. `source`
 * names the text in messages (a file name). */
int cfg_parse(cfg_model *cfg, const char *text, size_t len, const char *source, rc_error *err);

/* Reads a JSON file over the defaults (cfg_default then cfg_parse). */
int cfg_load(cfg_model *cfg, const char *path, rc_error *err);

/* Checks that the values are mutually consistent and in range. */
int cfg_validate(const cfg_model *cfg, rc_error *err);

/* Side of the encoder's output feature map for cfg->image_size (7 for 224),
 * and the number of visual tokens (side * side). */
int cfg_feature_side(const cfg_model *cfg);
int cfg_memory_tokens(const cfg_model *cfg);

/* Writes the configuration as a JSON object (all keys) to a malloc'd string. */
char *cfg_to_json(const cfg_model *cfg);

#endif
