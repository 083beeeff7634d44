#!/usr/bin/python3
"""The model card's image preprocessing, with PIL and numpy only.

    transforms.Compose([transforms.Resize((S, S)), transforms.ToTensor(),
                        transforms.Normalize(mean, std)])(Image.open(p).convert('RGB'))

torchvision is not installed here, so its three steps are written out:
Resize((S, S)) on a PIL image is img.resize((S, S), Image.BILINEAR);
ToTensor is uint8 -> float32 / 255 in (C, H, W) order; Normalize is
(x - mean) / std in float32.

One documented departure from plain PIL, shared with radcap: 16-bit
greyscale (PIL modes I;16* and I from a 16-bit PNG) is scaled to 8 bits by
keeping the high byte (v >> 8) instead of convert('RGB')'s clipping to 255,
the same mapping PIL itself applies to 16-bit RGB, RGBA and LA files.

Orientation: PIL 9.4 already turns a TIFF upright by its orientation tag
when it loads it (TiffImagePlugin.load_end), and exif_transpose would then
apply the still-present tag a second time. With --exif-orientation this
script therefore transposes every format except TIFF, so that each image is
turned upright exactly once, which is what radcap's option promises.

usage: pil_preprocess.py [--size N] [--exif-orientation] IMAGE OUT [IMAGE OUT ...]
Each OUT receives float32 little-endian (3, N, N), no header.
"""
import sys

import numpy as np
from PIL import Image, ImageOps

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_rgb(img):
    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
        high = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(high, "L").convert("RGB")
    if img.mode in ("I", "F"):
        raise SystemExit(f"pil_preprocess.py: mode {img.mode} is outside the supported set")
    return img.convert("RGB")


def preprocess(path, size, exif):
    img = Image.open(path)
    if exif and img.format != "TIFF":
        img = ImageOps.exif_transpose(img)
    img = to_rgb(img).resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype="<f4")


def main(argv):
    size, exif, rest = 224, False, []
    i = 0
    while i < len(argv):
        if argv[i] == "--size":
            size = int(argv[i + 1])
            i += 2
        elif argv[i] == "--exif-orientation":
            exif = True
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    if not rest or len(rest) % 2:
        raise SystemExit(__doc__)
    for image, out in zip(rest[0::2], rest[1::2]):
        preprocess(image, size, exif).tofile(out)


if __name__ == "__main__":
    main(sys.argv[1:])
