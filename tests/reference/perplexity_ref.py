#!/usr/bin/env python3
"""Teacher-forced cross-entropy by the PyTorch reference, for `radcap eval --perplexity`.

usage: perplexity_ref.py CONFIG.json CHECKPOINT < pairs.jsonl

Each input line is {"tensor": PATH, "ids": [CLS, ..., SEP]} where PATH is a
`radcap preprocess` output. For each, runs the card's forward pass
model(image, ids[:-1]) (all positions, causal mask) and adds the
cross-entropy of ids[1:]. Prints {"tokens": N, "cross_entropy": mean} with the
mean over all target tokens.
"""
import json
import sys

import torch
import torch.nn.functional as F

import captioner


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    cfg, model = captioner.load_model(argv[1], argv[2])
    total, tokens = 0.0, 0
    with torch.no_grad():
        for line in sys.stdin:
            item = json.loads(line)
            image = captioner.load_input_tensor(item["tensor"], cfg)
            ids = torch.tensor([item["ids"]])
            logits = model(image, ids[:, :-1])
            total += float(F.cross_entropy(logits[0].double(), ids[0, 1:], reduction="sum"))
            tokens += ids.shape[1] - 1
    print(json.dumps({"tokens": tokens, "cross_entropy": total / tokens}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
