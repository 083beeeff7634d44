#!/usr/bin/env python3
"""torch_bench.py: the PyTorch reference's speed, the same figures as
bench_engine.c, for `make bench` to print side by side.

The model is tests/reference/captioner.py's (the card's architecture, HF
ResNet reimplementation) with the weights of CHECKPOINT, in eval mode under
torch.inference_mode, on --threads threads (2 by default: the cores the
engine gets). Decoding uses LeanDecoder below, an incremental decoder with
a key/value cache written for speed in torch.nn.functional (checked against
captioner.py's _decode_newest at start): the card's own generate_caption
loop re-runs every position at every step and is 10-100 times slower.
Figures (median of runs after a warm-up run, best in the *_best keys):

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

Debian's PyTorch does its linear layers with OpenBLAS, whose own busy-
waiting threads fight OpenMP's for the cores; OPENBLAS_NUM_THREADS=1 avoids
that but leaves those products on one core. Which is faster differs by
figure (and by the minute), so scripts/bench.sh runs this script both ways
and keeps each figure's better value (--merge): PyTorch at its best.

usage: torch_bench.py CHECKPOINT --images FILE [--threads N] [--seconds S] [--json FILE]
       torch_bench.py --merge OUT A.json B.json   (each figure's better value)
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import captioner  # noqa: E402

FORCED_TOKENS = 40
E2E_BATCH = 32


def time_runs(fn, seconds):
    """(median, best) seconds of fn() as bench_engine.c times it: one
    untimed warm-up run, then runs until `seconds` have passed and at least
    3 (at most 200, and 2 when they take over 4 times `seconds`)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 200 and (len(times) < 3 or time.perf_counter() - start < seconds) \
            and not (len(times) >= 2 and time.perf_counter() - start > 4 * seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


class LeanDecoder:
    """PyTorch's fastest form of the card's decoder we know, for the speed
    figures (captioner.py stays the numerical reference; this has its
    ReferenceDecoder's interface, for captioner.greedy_batch): the post-norm
    nn.TransformerDecoderLayer at the newest position only, calling
    torch.nn.functional directly. Each in-projection is one product (self-
    attention's q, k, v together; cross-attention's q alone, its keys and
    values of memory once per image), keys and values go into buffers
    allocated once (no torch.cat per step), attention is broadcast
    products, sums and a softmax. main() checks its logits against
    captioner._decode_newest before timing anything (lean_difference)."""

    def __init__(self, model, max_steps):
        self.model, self.max_steps = model, max_steps
        first = model.decoder.layers[0].self_attn
        self.dim, self.heads = first.embed_dim, first.num_heads
        self.head_dim = self.dim // self.heads

    def cache(self, memory):
        """Per layer: self-attention key and value buffers (B,H,max_steps,hd),
        memory's cross-attention keys and values (B,H,L,hd)."""
        B, L, D = memory.shape
        out = []
        for layer in self.model.decoder.layers:
            attn = layer.multihead_attn
            kv = F.linear(memory, attn.in_proj_weight[D:], attn.in_proj_bias[D:])
            kv = kv.view(B, L, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            empty = memory.new_empty(B, self.heads, self.max_steps, self.head_dim)
            out.append([empty, torch.empty_like(empty), kv[0].contiguous(), kv[1].contiguous()])
        return out

    def _attend(self, q, keys, values):
        """q (B,D) against keys, values (B,H,S,hd): (B,D). Scaled as torch's
        multi_head_attention_forward scales (q first). Broadcast products
        and sums, not matmul: for B*H one-row matrices torch's bmm loops
        over them one by one (455,000 aten::select calls in 40 steps at
        batch 32) and took a third of the step."""
        B = q.shape[0]
        q = q.view(B, self.heads, 1, self.head_dim) / math.sqrt(self.head_dim)
        weights = torch.softmax((q * keys).sum(-1), dim=-1)
        return (weights.unsqueeze(-1) * values).sum(-2).view(B, self.dim)

    def step(self, cache, newest_ids, t):
        """Logits (B, vocab) of the prefixes whose first t positions are in
        cache, extended by newest_ids (B,); stores position t's keys and values."""
        m, D = self.model, self.dim
        x = m.embedding(newest_ids) + m.pos_encoder[0, t]
        for layer, kept in zip(m.decoder.layers, cache):
            sa, ca = layer.self_attn, layer.multihead_attn
            q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).split(D, dim=1)
            kept[0][:, :, t] = k.view(-1, self.heads, self.head_dim)
            kept[1][:, :, t] = v.view(-1, self.heads, self.head_dim)
            a = self._attend(q, kept[0][:, :, :t + 1], kept[1][:, :, :t + 1])
            x = layer.norm1(x + F.linear(a, sa.out_proj.weight, sa.out_proj.bias))
            q = F.linear(x, ca.in_proj_weight[:D], ca.in_proj_bias[:D])
            a = self._attend(q, kept[2], kept[3])
            x = layer.norm2(x + F.linear(a, ca.out_proj.weight, ca.out_proj.bias))
            x = layer.norm3(x + layer.linear2(F.relu(layer.linear1(x))))
        return m.fc_out(x)


def lean_difference(lean, model, memory, first, steps):
    """The largest |lean - reference| of the logits over `steps` steps from
    tokens `first` (B,), each step fed the reference's argmax, relative to
    the largest |reference logit| of its step (captioner._decode_newest is
    the reference)."""
    cache, ref_cache = lean.cache(memory), captioner._decoder_cache(model, memory)
    newest, worst = first, 0.0
    for t in range(steps):
        ours, ref = lean.step(cache, newest, t), captioner._decode_newest(model, ref_cache, newest)
        worst = max(worst, float((ours - ref).abs().max()) / float(ref.abs().max()))
        newest = ref.argmax(dim=1)
    return worst


def forced_decode(lean, cache, forced, argmax):
    """40 decoding steps from `cache` (lean.cache of B images' memory; its
    key/value buffers are overwritten): fed `forced` (40, B) ids, or with
    argmax the previous step's argmax after forced[0]."""
    newest = forced[0]
    for step in range(FORCED_TOKENS):
        logits = lean.step(cache, newest, step)
        if step + 1 < FORCED_TOKENS:
            newest = logits.argmax(dim=1) if argmax else forced[step + 1]


def merge(out_path, paths):
    """Writes to out_path the JSON of `paths` (torch_bench outputs) with each
    figure's better value: the highest rate, the lowest time or memory."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    merged = dict(runs[0])
    for key in merged:
        values = [r.get(key) for r in runs]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        if "_per_s" in key:  # images/s, tokens/s
            merged[key] = max(values)
        elif "latency_s" in key or key.endswith(("_load_s", "_rss_mb")):
            merged[key] = min(values)
    merged["torch_best_of"] = len(runs)
    with open(out_path, "w") as f:
        f.write(json.dumps(merged) + "\n")
    print(json.dumps(merged))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--merge":
        if len(sys.argv) < 5:
            sys.exit("usage: torch_bench.py --merge OUT A.json B.json ...")
        merge(sys.argv[2], sys.argv[3:])
        return
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
        lean = LeanDecoder(model, max(FORCED_TOKENS, cfg["max_len"]))
        difference = lean_difference(lean, model, captioner.encode(model, images[:2])[2], bos[:2], 6)
        if not difference <= 1e-4:
            sys.exit(f"torch_bench.py: the lean decoder's logits differ from the reference's by {difference:.3g} "
                     "of their scale")

        def e2e_forced(batch):
            memory = captioner.encode(model, images[:batch])[2]
            forced_decode(lean, lean.cache(memory), torch.cat([bos[:batch][None], forced[1:, :batch]]), argmax=True)

        med, best = time_runs(lambda: e2e_forced(E2E_BATCH), args.seconds)
        out["torch_e2e_img_per_s"], out["torch_e2e_img_per_s_best"] = E2E_BATCH / med, E2E_BATCH / best
        line("end to end, batch 32, 40 tokens", E2E_BATCH / med, "images/s", E2E_BATCH / best)

        lengths = []

        def e2e_natural():
            memory = captioner.encode(model, images)[2]
            ids = captioner.greedy_batch(model, memory, cfg, decoder=lean)
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
            cache = lean.cache(memory)
            med, best = time_runs(lambda: forced_decode(lean, cache, forced[:, :batch], argmax=False),
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
