/* image.h: decode an image file and turn it into the model's input tensor.
 *
 * This reproduces the model card's preprocessing,
 *
 *     Image.open(path).convert('RGB')
 *     transforms.Resize((S, S))             # PIL bilinear, antialiased
 *     transforms.ToTensor()                 # uint8 / 255
 *     transforms.Normalize(mean, std)
 *
 * with libvips doing only the decoding. The conversion to RGB and the resize
 * are our own code written to PIL 9.4's rules (Convert.c, Resample.c), so
 * that the result is bit-identical to PIL wherever both decoders agree on
 * the pixels:
 *
 *   - grey, grey+alpha: the grey value is copied to R, G and B; alpha is
 *     dropped. RGBA: alpha is dropped, not composited. Palette images are
 *     looked up (libvips expands them while decoding).
 *   - CMYK (Adobe JPEG, separated TIFF): R = round((255-C)(255-K)/255), and
 *     likewise G from M and B from Y; embedded ICC profiles are ignored, as
 *     convert('RGB') ignores them.
 *   - 16-bit samples become 8-bit by keeping the high byte, v >> 8, i.e.
 *     floor(v / 256): the whole 0..65535 range maps onto 0..255. This is
 *     what PIL itself does for 16-bit RGB(A) and LA PNG and 16-bit RGB TIFF.
 *     It is a deliberate difference for 16-bit greyscale, which PIL opens in
 *     mode I/I;16 and then *clips* to 255 in convert('RGB') (most of a
 *     16-bit radiograph would turn white).
 *   - Resize: PIL's two-pass convolution with the triangle filter whose
 *     support is scaled by the reduction factor (antialiasing), horizontal
 *     pass first, 22-bit fixed-point weights and 8-bit rounding after each
 *     pass; a pass whose size does not change is skipped, as in PIL.
 *   - ToTensor/Normalize: float32 ((v / 255) - mean) / std, channel-major.
 *
 * Orientation follows PIL too: JPEG, PNG and WebP are used as stored (the
 * EXIF tag is ignored unless apply_exif_orientation asks for it); a TIFF is
 * turned upright by its orientation tag, because PIL 9.4's TIFF loader does
 * that on open. (PIL's exif_transpose then applies the tag a second time to
 * a TIFF; the option here turns every image upright exactly once.)
 *
 * The image is streamed from libvips a strip of rows at a time, so memory
 * stays near size * size * 3 * 8 bytes plus the coefficient tables, however
 * large the image (rotation is the exception: it needs the whole decoded
 * image in memory).
 *
 * Supported loaders (everything else is refused before decoding): JPEG, PNG,
 * TIFF (first page), WebP and GIF (first frame). Samples must be 8 or 16-bit
 * unsigned integers with 1 to 5 bands.
 *
 * Known difference from PIL: the fully transparent pixels of a GIF. libvips'
 * GIF decoder returns them as black with alpha 0, while PIL keeps the
 * palette colour of the transparency index; we get black there.
 *
 * Thread safety: once img_system_init has run, img_preprocess_file and
 * img_preprocess_buffer may run at the same time on different images from
 * any number of threads. Each call decodes in its calling thread only (no
 * libvips worker threads): the caller parallelises over images.
 */
#ifndef RC_IMAGE_H
#define RC_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

enum { IMG_MAX_SIZE = 4096 }; /* largest output side accepted */

typedef struct img_options {
    int size;                   /* output side in pixels, 1..IMG_MAX_SIZE: the tensor
                                   is (3, size, size) */
    float mean[3], std[3];      /* per-channel normalisation in R, G, B order */
    int64_t max_pixels;         /* refuse images whose width * height exceeds this,
                                   checked from the header before any pixel is decoded */
    int apply_exif_orientation; /* 1: rotate/flip by the EXIF orientation first, as
                                   PIL's ImageOps.exif_transpose; 0 (default): ignore it,
                                   as Image.open does and as the model was trained.
                                   TIFF is turned upright either way: PIL 9.4 applies
                                   the TIFF orientation tag when it opens the file */
    int fast;                   /* 1: let the JPEG decoder shrink by 2, 4 or 8 while
                                   decoding large images (see img_options_default);
                                   0 (default): decode at full size, PIL-exact */
} img_options;

/* What the decoder found, for logs. Filled as far as the header was read,
 * even when the call fails later; all zero/empty if the header was not read. */
typedef struct img_info {
    int width, height; /* of the first page as stored, before orientation or resize */
    int bands;         /* 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA or CMYK, 5 CMYK+alpha */
    int bits;          /* bits per decoded sample: 8 or 16 (0 if unsupported) */
    int cmyk;          /* 1 when the bands are CMYK (+ alpha) */
    int orientation;   /* EXIF/TIFF orientation tag 1..8 (1 when absent) */
    int shrink;        /* decoder shrink factor used by fast mode (1 otherwise) */
    char loader[32];   /* libvips loader, e.g. "jpegload_source" */
} img_info;

/* Starts libvips once for the process (call it from main, before any
 * thread uses this module): disables the libvips operation cache (every
 * image is loaded once, so caching would only hold memory and file
 * handles), sets libvips' own worker threads to 1, and silences libvips'
 * warnings on stderr (failures come back through rc_error instead).
 * Calling it again is harmless. argv0 is main's argv[0]. Returns 0, or -1
 * with err filled. */
int img_system_init(const char *argv0, rc_error *err);

/* Shuts libvips down at the end of the process; no image call may follow. */
void img_system_shutdown(void);

/* The model card's settings: size 224, ImageNet mean (0.485, 0.456, 0.406)
 * and std (0.229, 0.224, 0.225), max_pixels 100,000,000, EXIF orientation
 * ignored, fast mode off. In fast mode a JPEG is decoded at 1/2, 1/4 or
 * 1/8 scale (the largest that keeps both sides at least 6 * size), which
 * cuts decoding time several-fold on large photographs at the cost of
 * small differences from PIL (see the parity test's figures). */
void img_options_default(img_options *opts);

/* Decodes the image file at path and writes its model input to out, a
 * caller-owned array of 3 * opts->size * opts->size floats laid out as
 * (channel R,G,B; row; column). info may be NULL. Returns 0, or -1 with
 * err naming the path and the reason (missing or empty file, format not
 * recognised or not supported, pixel limit exceeded, zero dimension,
 * unsupported sample format, or libvips' own decoding error such as a
 * truncated file); out is then unspecified. */
int img_preprocess_file(const char *path, const img_options *opts, float *out, img_info *info,
                        rc_error *err);

/* Same as img_preprocess_file for an image held in memory (size bytes at
 * data). name labels error messages (e.g. the archive member or "fuzz
 * input"); NULL means "memory buffer". */
int img_preprocess_buffer(const void *data, size_t size, const char *name, const img_options *opts,
                          float *out, img_info *info, rc_error *err);

/* After a batch was preprocessed into pixels (n images of image_floats
 * each) with ok[i] telling which succeeded: moves the successful images to
 * the front, in order, so the engine gets one dense batch, and writes the
 * original index of the j-th kept image to order[j]. Returns how many were
 * kept. */
int img_pack_batch(float *pixels, size_t image_floats, const int *ok, int n, int *order);

/* 1 when path ends in an extension of a supported format (.jpg .jpeg .jpe
 * .png .tif .tiff .webp .gif, any case), else 0. For walking folders and
 * finding an image by ID; the decoder itself goes by content, not name. */
int img_has_supported_extension(const char *path);

#endif
