/* encoder.h: images to memory tokens.
 *
 * ResNet-50 (HF ResNetModel, BatchNorms folded) -> feature map flattened in
 * row-major spatial order -> vis_proj -> graph propagation. Feature maps are
 * channels-last, so the flattened map is the card's
 * last_hidden_state.permute(0, 2, 3, 1).reshape(B, H*W, C) without a copy.
 */
#ifndef RC_ENCODER_H
#define RC_ENCODER_H

#include "err.h"
#include "model.h"

/* Where enc_forward writes; any pointer may be NULL when not wanted. */
typedef struct enc_outputs {
    float *features;   /* (batch, memory_tokens, hidden_sizes[last]): ResNet output, channels-last */
    float *vis_tokens; /* (batch, memory_tokens, embed_dim): vis_proj output */
    float *memory;     /* (batch, memory_tokens, embed_dim): graph layer output */
} enc_outputs;

/* The encoder's scratch memory for one group of images (the encoder works
 * through a batch a group at a time): made once by a caller that encodes
 * batch after batch, so that each call does not fault in and hand back
 * about 20 MB per image of fresh pages. */
typedef struct enc_workspace {
    int group;          /* images per group: min(batch asked for, 8) */
    float *buffers[6];  /* activations: 5 x (group, largest activation), then the padded
                         * convolution input (group, largest padded input) */
    float *vis_tokens;  /* (group, memory_tokens, embed_dim) */
    float *memory;      /* (group, memory_tokens, embed_dim) */
    float *graph;       /* (2, group, memory_tokens, embed_dim): neighbourhood means, messages */
} enc_workspace;

/* Allocates a workspace for m and batches of up to max_batch images (more
 * are fine, they only run in more groups). -1 when memory runs out. */
int enc_workspace_build(enc_workspace *ws, const captioner *m, int max_batch, rc_error *err);

/* Frees what enc_workspace_build allocated (safe on a zeroed workspace). */
void enc_workspace_free(enc_workspace *ws);

/* Runs the encoder on `batch` images (batch, num_channels, image_size,
 * image_size), normalised, channel-major (NCHW) as PyTorch takes them, in
 * groups of ws->group images; parallel with OpenMP inside. ws must have
 * been built for m. Cannot fail. */
void enc_forward_with(const captioner *m, enc_workspace *ws, int batch, const float *images, const enc_outputs *out);

/* enc_forward_with on a workspace made for the call. Fails only when it
 * cannot be allocated. */
int enc_forward(const captioner *m, int batch, const float *images, const enc_outputs *out, rc_error *err);

#endif
