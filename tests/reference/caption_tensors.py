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

import torch

import captioner


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    cfg, model = captioner.load_model(argv[1], argv[2])
    for path in argv[3:]:
        try:
            image = captioner.load_input_tensor(path, cfg)
        except ValueError as e:
            print(e, file=sys.stderr)
            return 1
        with torch.no_grad():
            ids = captioner.greedy(model, image, cfg)
        print(json.dumps([int(i) for i in ids]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
