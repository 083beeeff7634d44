#!/usr/bin/env python3
"""torch_bench.py: the PyTorch reference's speed, the same figures as
bench_engine.c, for `make bench` to print side by side.

The model is tests/reference/captioner.py's (the card's architecture, HF
ResNet reimplementation) with the weights of CHECKPOINT, in eval mode under
torch.inference_mode, on --threads threads (2 by default: the cores the
engine gets). Decoding uses captioner.py's incremental decoder with a
key/value cache (_decoder_cache, _decode_newest), PyTorch's best: the card's
own generate_caption loop re-runs every position at every step and is
10-100 times slower. Figures (median of runs, best in the *_best keys):

  encoder_img_per_s_b{1,8,32}   encode(): ResNet, vis_proj, graph layer
  decoder_tok_per_s_b{1,32,128} 40 forced-token steps after the cache is set
  e2e_img_per_s                 batch 32: encode + cache + 40 greedy steps
  e2e_natural_img_per_s         batch 32: encode + greedy_batch (eos/max_len)
  latency_s_b1                  one image, 40 tokens
  peak_rss_mb                   ru_maxrss after the batch-32 runs
  load_s                        build the model + torch.load + load_state_dict

Images are read from --images (float32 (32, 3, S, S), as bench_engine
--images-out writes them) so that both sides caption the same inputs.
Prints a table and one JSON line whose keys all start with "torch_".

usage: torch_bench.py CHECKPOINT --images FILE [--threads N] [--seconds S] [--json FILE]
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import captioner  # noqa: E402

FORCED_TOKENS = 40
E2E_BATCH = 32


def time_runs(fn, seconds):
    """(median, best) seconds of fn() as bench_engine.c times it: runs until
    `seconds` have passed and at least 3 (at most 200, and 2 when they take
    over 4 times `seconds`); the first (warm-up) run is left out when 3
    others follow."""
    times = []
    start = time.perf_counter()
    while len(times) < 200 and (len(times) < 3 or time.perf_counter() - start < seconds) \
            and not (len(times) >= 2 and time.perf_counter() - start > 4 * seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    kept = times[1:] if len(times) >= 4 else times
    return statistics.median(kept), min(kept)


def forced_decode(model, cache, forced, argmax):
    """40 decoding steps from `cache` (captioner._decoder_cache of B images'
    memory, left unchanged): fed `forced` (40, B) ids, or with argmax the
    previous step's argmax after forced[0]."""
    cache = [list(kept) for kept in cache]  # _decode_newest replaces, never mutates, the tensors
    newest = forced[0]
    for step in range(FORCED_TOKENS):
        logits = captioner._decode_newest(model, cache, newest)
        if step + 1 < FORCED_TOKENS:
            newest = logits.argmax(dim=1) if argmax else forced[step + 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--images", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"torch_version": torch.__version__, "torch_threads": args.threads}

    t0 = time.perf_counter()
    cfg, model = captioner.load_model(None, args.checkpoint)
    out["torch_load_s"] = time.perf_counter() - t0
    S = cfg["image_size"]
    pixels = np.fromfile(args.images, dtype="<f4")
    if pixels.size != E2E_BATCH * 3 * S * S:
        sys.exit(f"torch_bench.py: {args.images}: {pixels.size} floats, expected {E2E_BATCH * 3 * S * S}")
    images = torch.from_numpy(pixels.reshape(E2E_BATCH, 3, S, S).copy())
    gen = torch.Generator().manual_seed(99)
    forced = torch.randint(1000, cfg["vocab_size"], (FORCED_TOKENS, 128), generator=gen)
    bos = torch.full((E2E_BATCH,), cfg["bos_token_id"], dtype=torch.long)

    def line(label, value, unit, best):
        print(f"{label:<44} {value:9.2f} {unit}  [{best:.2f}]", flush=True)

    with torch.inference_mode():
        def e2e_forced(batch):
            memory = captioner.encode(model, images[:batch])[2]
            cache = captioner._decoder_cache(model, memory)
            forced_decode(model, cache, torch.cat([bos[:batch][None], forced[1:, :batch]]), argmax=True)

        med, best = time_runs(lambda: e2e_forced(E2E_BATCH), args.seconds)
        out["torch_e2e_img_per_s"], out["torch_e2e_img_per_s_best"] = E2E_BATCH / med, E2E_BATCH / best
        line("end to end, batch 32, 40 tokens", E2E_BATCH / med, "images/s", E2E_BATCH / best)

        lengths = []

        def e2e_natural():
            memory = captioner.encode(model, images)[2]
            ids = captioner.greedy_batch(model, memory, cfg)
            lengths[:] = [len(i) + (len(i) < cfg["max_len"]) for i in ids]

        med, best = time_runs(e2e_natural, args.seconds)
        out["torch_e2e_natural_img_per_s"] = E2E_BATCH / med
        out["torch_e2e_natural_img_per_s_best"] = E2E_BATCH / best
        out["torch_e2e_natural_tokens_per_image"] = sum(lengths) / E2E_BATCH
        print(f"{'end to end, batch 32, natural stopping':<44} {E2E_BATCH / med:9.2f} images/s  "
              f"[{E2E_BATCH / best:.2f}]  {sum(lengths) / E2E_BATCH:.1f} tokens per caption", flush=True)
        out["torch_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(f"{'peak RSS, batch 32':<44} {out['torch_peak_rss_mb']:9.0f} MB", flush=True)

        med, best = time_runs(lambda: e2e_forced(1), args.seconds)
        out["torch_latency_s_b1"], out["torch_latency_s_b1_best"] = med, best
        print(f"{'latency, 1 image, 40 tokens':<44} {med:9.3f} s  [{best:.3f}]", flush=True)

        for batch in (1, 8, 32):
            med, best = time_runs(lambda: captioner.encode(model, images[:batch]), args.seconds)
            out[f"torch_encoder_img_per_s_b{batch}"] = batch / med
            out[f"torch_encoder_img_per_s_b{batch}_best"] = batch / best
            line(f"encoder, batch {batch}", batch / med, "images/s", batch / best)

        memory32 = captioner.encode(model, images)[2]
        for batch in (1, 32, 128):
            memory = memory32.repeat(batch // E2E_BATCH, 1, 1) if batch > E2E_BATCH else memory32[:batch]
            cache = captioner._decoder_cache(model, memory)
            med, best = time_runs(lambda: forced_decode(model, cache, forced[:, :batch], argmax=False),
                                  args.seconds)
            tokens = batch * FORCED_TOKENS
            out[f"torch_decoder_tok_per_s_b{batch}"] = tokens / med
            out[f"torch_decoder_tok_per_s_b{batch}_best"] = tokens / best
            line(f"decoder, batch {batch}, 40 forced tokens", tokens / med, "tokens/s", tokens / best)
    print(f"{'model load':<44} {out['torch_load_s']:9.3f} s", flush=True)
    text = json.dumps(out)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
