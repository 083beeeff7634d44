#!/usr/bin/env python3
"""Greedy caption ids of preprocessed input tensors, by the PyTorch reference.

usage: caption_tensors.py CONFIG.json CHECKPOINT TENSOR...

Each TENSOR is a file written by `radcap preprocess` (float32, little-endian,
(3, S, S), no header). Prints one JSON list of generated ids (without [CLS]
and [SEP]) per tensor, in order: the card's generate_caption loop on the
card's model (captioner.greedy), so the C program's `radcap caption` can be
checked end to end on the same inputs.
"""
import json
import sys

import numpy as np
import torch

import captioner


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    cfg = captioner.load_config(argv[1])
    model = captioner.build_model(cfg)
    model.load_state_dict(torch.load(argv[2], map_location="cpu"), strict=True)
    model.eval()
    size = cfg["image_size"]
    for path in argv[3:]:
        pixels = np.fromfile(path, dtype="<f4")
        if pixels.size != 3 * size * size:
            print(f"{path}: {pixels.size} floats, expected {3 * size * size}", file=sys.stderr)
            return 1
        image = torch.from_numpy(pixels.reshape(1, 3, size, size).copy())
        with torch.no_grad():
            ids = captioner.greedy(model, image, cfg)
        print(json.dumps([int(i) for i in ids]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
