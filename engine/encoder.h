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

/* Runs the encoder on `batch` images (batch, num_channels, image_size,
 * image_size), normalised, channel-major (NCHW) as PyTorch takes them.
 * Works through the batch in groups to bound scratch memory; parallel with
 * OpenMP inside. Fails only when scratch memory cannot be allocated. */
int enc_forward(const captioner *m, int batch, const float *images, const enc_outputs *out, rc_error *err);

#endif
