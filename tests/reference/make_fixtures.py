#!/usr/bin/python3
"""Writes the parity fixtures of the C engine from the PyTorch reference.

    make_fixtures.py [--config CONFIG.json] --seed N [--n-inputs 20] --out DIR
                     [--archive-name NAME] [--min-rel-gap 5e-4]

Builds the captioner of captioner.py for CONFIG (default: the model card's
configuration), gives it random weights from seed N (captioner.randomize) and
writes to DIR:

  model.bin             torch.save(model.state_dict()): the card's checkpoint
                        format (a zip whose entries are under NAME/; torch
                        names it after the file, "model", by default)
  config.json           the configuration (a copy of CONFIG, or the defaults)
  reference.safetensors the recorded tensors, all float32 eval / no_grad:
    input       F32 (N,3,S,S)     the preprocessed model inputs
    encoder_out F32 (N,C,h,w)     ResNetModel last_hidden_state
    vis_tokens  F32 (N,h*w,D)     vis_proj output
    memory      F32 (N,h*w,D)     graph propagation output
    greedy_ids  I64 (N,max_len)   greedy ids (no bos/eos), padded with -1
    greedy_len  I64 (N,)          number of generated ids
    logit_steps I64 (K,)          the steps of `logits`: those of
                                  0,1,2,5,10,20,40,79 below max_len
    logits      F32 (N,K,V)       fc_out at the last position for the prefix
                                  [bos] + the first k generated ids; NaN where
                                  the caption ended before step k

Inputs are random smooth images (captioner.random_images) drawn from seed
N+1, greedy-decoded together (captioner.greedy_batch). An input whose greedy
decoding meets a near-tie (best - second logit below --min-rel-gap times the
step's largest |logit|) is replaced by a new draw: the parity test allows
logit errors of 1e-4 times the largest |logit|, and an error of half the gap
may flip the argmax, so at such a step a correct port could legitimately
pick another token. 5e-4 leaves a margin.

The run fails (exit 1) unless the fixtures are a useful test: distinct
captions for at least half of the inputs, captions both ending early and
running to max_len, activations of standard deviation 0.1..10, and a well
conditioned graph layer: max |vis_tokens| <= 5 and at most 25% of `memory`
clamped at +-1 by its Hardtanh. The parity test compares each tensor within
1e-4 of its max |value|; `memory`'s is 1 whatever vis_tokens' scale, and the
float32 rounding differences of two correct implementations, ~1e-5 relative,
are ~1e-5 x max |vis_tokens| absolute in the unclamped part of memory.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import zipfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import captioner  # noqa: E402

#: Decoding steps at which the logits are recorded (those below max_len).
LOGIT_STEPS = [0, 1, 2, 5, 10, 20, 40, 79]

#: Conditioning limits (see the module doc): largest |vis_tokens| and share
#: of `memory` clamped at +-1 by the graph layer's Hardtanh.
MAX_VIS = 5.0
MAX_SATURATION = 0.25

_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64"}


def write_safetensors(path, tensors, metadata=None):
    """Writes `tensors`, a list of (name, numpy array of float32 or int64), to
    `path` in the safetensors format: u64 little-endian header length, a JSON
    header {name: {dtype, shape, data_offsets: [begin, end]}} padded with
    spaces to a multiple of 8 bytes, then the little-endian C-contiguous data
    in the order given. `metadata` (str -> str) becomes "__metadata__"."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, array in tensors:
        array = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
        if array.dtype not in _DTYPES:
            raise TypeError(f"{name}: unsupported dtype {array.dtype}")
        data = array.tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def read_safetensors(path):
    """Reads a safetensors file of F32/I64 tensors: returns (dict name ->
    numpy array, metadata dict), checking that the data exactly fills the
    file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    inverse = {v: k for k, v in _DTYPES.items()}
    tensors, end = {}, 0
    for name, info in header.items():
        begin, stop = info["data_offsets"]
        dtype = inverse[info["dtype"]]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if stop - begin != count * dtype.itemsize or stop > len(data):
            raise ValueError(f"{path}: {name}: bad data_offsets")
        tensors[name] = np.frombuffer(data[begin:stop], dtype=dtype).reshape(info["shape"])
        end = max(end, stop)
    if end != len(data):
        raise ValueError(f"{path}: {len(data) - end} bytes after the last tensor")
    return tensors, metadata


def save_checkpoint(model, path, archive_name=None):
    """torch.save(model.state_dict()) to `path`. torch names the zip's top
    folder after the file name without extension; `archive_name` picks
    another by saving under that name first."""
    if archive_name is None:
        torch.save(model.state_dict(), path)
    else:
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as tmp:
            tmp_path = os.path.join(tmp, archive_name + ".bin")
            torch.save(model.state_dict(), tmp_path)
            os.replace(tmp_path, path)
        names = zipfile.ZipFile(path).namelist()
        if not all(n.startswith(archive_name + "/") for n in names):
            raise RuntimeError(f"torch did not name the archive {archive_name!r}: {names[:3]}")


def rel_gaps(logits):
    """(best - second best logit) / max |logit| of each row of (B,V) logits."""
    top2 = logits.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / logits.abs().max(dim=1).values


def decode_all(model, memory, cfg, steps, min_gap):
    """Greedy-decodes every image of `memory` together (captioner.greedy_batch),
    dropping an image at its first near-tie (a rel_gaps below min_gap).
    Returns (id lists, logits (B,K,V) at `steps`, NaN past the end of each
    caption, smallest rel_gaps of each image over its steps (B,), which is
    below min_gap for the dropped images)."""
    n = memory.shape[0]
    logits = torch.full((n, len(steps), cfg["vocab_size"]), math.nan)
    smallest_gap = torch.full((n,), math.inf)

    def record(step, rows, step_logits):
        if step in steps:
            logits[rows, steps.index(step)] = step_logits
        smallest_gap[rows] = torch.minimum(smallest_gap[rows], rel_gaps(step_logits))
        return smallest_gap[rows] >= min_gap

    ids = captioner.greedy_batch(model, memory, cfg, on_step=record)
    return ids, logits, smallest_gap


def encode_all(model, inputs, chunk=4):
    """encoder_out, vis_tokens and memory of all inputs (in chunks, to bound
    memory), plus the output std of each encoder stage (a list per stage,
    one value per chunk)."""
    stage_std = {}
    hooks = [stage.register_forward_hook(
        lambda mod, inp, out, i=i: stage_std.setdefault(i, []).append(float(out.std())))
        for i, stage in enumerate(model.encoder.encoder.stages)]
    parts = []
    try:
        with torch.no_grad():
            for begin in range(0, len(inputs), chunk):
                parts.append(captioner.encode(model, inputs[begin:begin + chunk]))
    finally:
        for h in hooks:
            h.remove()
    encoder_out, vis_tokens, memory = (torch.cat(t) for t in zip(*parts))
    return encoder_out, vis_tokens, memory, [stage_std[i] for i in sorted(stage_std)]


def draw_inputs(model, cfg, seed, n_inputs, min_gap, steps):
    """Draws n_inputs images whose greedy decoding has no near-tie. The
    inputs are the first n_inputs acceptable draws, as drawing one by one
    would give, but the draws are encoded and decoded in rounds of many
    images: a decoding step for 20 images costs about twice one for a
    single image (reading the decoder's 113 MB of weights dominates), so
    each round draws the missing number of images divided by the acceptance
    rate seen so far (starting from a prior of 4 in 5), plus 25%, and at
    least 4.
    Returns (dict of the inputs' tensors: input, encoder_out, vis_tokens,
    memory, logits at `steps` and smallest_gap (see decode_all); their id
    lists; the number of draws rejected before the last input; each encoder
    stage's mean output std)."""
    gen = torch.Generator().manual_seed(seed + 1)
    kept, ids, rejected, tried, stage_std = [], [], 0, 0, {}
    while len(ids) < n_inputs:
        if rejected > 4 * n_inputs + 10:
            raise RuntimeError("too many inputs with near-ties; try another --seed")
        acceptance = (len(ids) + 4) / (tried + 5)
        count = max(4, math.ceil(1.25 * (n_inputs - len(ids)) / acceptance))
        images = captioner.random_images(count, cfg, gen)
        tried += len(images)
        encoder_out, vis_tokens, memory, stds = encode_all(model, images)
        for i, values in enumerate(stds):
            stage_std.setdefault(i, []).extend(values)
        round_ids, logits, smallest_gap = decode_all(model, memory, cfg, steps, min_gap)
        # In draw order: the acceptable ones until enough, the rejected before.
        use = torch.zeros(len(images), dtype=torch.bool)
        for i, gap in enumerate(smallest_gap.tolist()):
            if len(ids) == n_inputs:
                break
            if gap >= min_gap:
                use[i] = True
                ids.append(round_ids[i])
            else:
                rejected += 1
        kept.append((images[use], encoder_out[use], vis_tokens[use], memory[use], logits[use],
                     smallest_gap[use]))
    names = ("input", "encoder_out", "vis_tokens", "memory", "logits", "smallest_gap")
    tensors = {name: torch.cat(parts) for name, parts in zip(names, zip(*kept))}
    return tensors, ids, rejected, [float(np.mean(stage_std[i])) for i in sorted(stage_std)]


def saturation(memory):
    """Share of `memory` clamped at +-1 by the graph layer's Hardtanh."""
    return float((memory.abs() >= 1).float().mean())


def check_useful(cfg, ids, encoder_out, vis_tokens, memory):
    """Raises if the fixtures would make a weak test (see module doc)."""
    n, max_len = len(ids), cfg["max_len"]
    lengths = [len(x) for x in ids]
    problems = []
    distinct = len({tuple(x) for x in ids})
    if distinct < math.ceil(n / 2):
        problems.append(f"only {distinct} distinct captions for {n} inputs")
    if n >= 8 and not (min(lengths) < max_len and max(lengths) == max_len):
        problems.append(f"caption lengths {lengths} do not both stop early and reach max_len")
    for name, t in (("encoder_out", encoder_out), ("memory", memory)):
        if not 0.1 <= float(t.std()) <= 10:
            problems.append(f"{name} std {float(t.std()):.3g} outside 0.1..10")
    max_vis = float(vis_tokens.abs().max())
    if max_vis > MAX_VIS:
        problems.append(f"max |vis_tokens| {max_vis:.3g} > {MAX_VIS:g}")
    if saturation(memory) > MAX_SATURATION:
        problems.append(f"the graph layer's Hardtanh clamps {saturation(memory):.0%} of memory "
                        f"(> {MAX_SATURATION:.0%})")
    if problems:
        raise RuntimeError("; ".join(problems) + ": try another --seed or adjust captioner.randomize")


def main(argv=None):
    paragraphs = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(description=paragraphs[0], epilog="\n\n".join(paragraphs[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="model configuration JSON (default: the card's values)")
    parser.add_argument("--seed", type=int, required=True, help="seed of the random weights")
    parser.add_argument("--n-inputs", type=int, default=20, help="number of inputs (default 20)")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--archive-name", help="top folder inside model.bin's zip (default: torch's, \"model\")")
    parser.add_argument("--min-rel-gap", type=float, default=5e-4,
                        help="reject inputs with a greedy near-tie below this (default 5e-4)")
    args = parser.parse_args(argv)
    if args.n_inputs < 1:
        parser.error("--n-inputs must be positive")

    start = time.time()
    torch.set_grad_enabled(False)
    cfg = captioner.load_config(args.config)
    os.makedirs(args.out, exist_ok=True)

    model = captioner.build_model(cfg)
    captioner.randomize(model, args.seed, cfg)
    t_model = time.time() - start
    save_checkpoint(model, os.path.join(args.out, "model.bin"), args.archive_name)
    config_out = os.path.join(args.out, "config.json")
    if args.config is None:
        with open(config_out, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
    elif not (os.path.exists(config_out) and os.path.samefile(args.config, config_out)):
        shutil.copyfile(args.config, config_out)

    t0 = time.time()
    steps = [k for k in LOGIT_STEPS if k < cfg["max_len"]]
    fixture, ids, rejected, stage_std = draw_inputs(model, cfg, args.seed, args.n_inputs,
                                                    args.min_rel_gap, steps)
    t_inputs = time.time() - t0
    encoder_out, vis_tokens, memory = (fixture[k] for k in ("encoder_out", "vis_tokens", "memory"))

    n, max_len = len(ids), cfg["max_len"]
    greedy_ids = np.full((n, max_len), -1, dtype=np.int64)
    for i, x in enumerate(ids):
        greedy_ids[i, :len(x)] = x
    tensors = [
        ("input", fixture["input"].numpy()),
        ("encoder_out", encoder_out.numpy()),
        ("vis_tokens", vis_tokens.numpy()),
        ("memory", memory.numpy()),
        ("greedy_ids", greedy_ids),
        ("greedy_len", np.array([len(x) for x in ids], dtype=np.int64)),
        ("logit_steps", np.array(steps, dtype=np.int64)),
        ("logits", fixture["logits"].numpy()),
    ]
    write_safetensors(os.path.join(args.out, "reference.safetensors"), tensors, {
        "generator": "tests/reference/make_fixtures.py", "seed": args.seed,
        "n_inputs": n, "torch": torch.__version__})

    lengths = [len(x) for x in ids]
    print(f"config: {args.config or '(model card defaults)'}; seed {args.seed}; "
          f"{len(model.state_dict())} state-dict tensors, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    print(f"caption lengths: {lengths}")
    print(f"distinct captions: {len({tuple(x) for x in ids})} of {n}; "
          f"inputs rejected for near-ties: {rejected}")
    print("std: encoder stages " + " ".join(f"{s:.3f}" for s in stage_std)
          + f"; encoder_out {float(encoder_out.std()):.3f}, vis_tokens {float(vis_tokens.std()):.3f}, "
          f"memory {float(memory.std()):.3f}")
    print(f"conditioning: max |vis_tokens| {float(vis_tokens.abs().max()):.2f} "
          f"(limit {MAX_VIS:g}), |memory| = 1 for {saturation(memory):.1%} (limit {MAX_SATURATION:.0%})")
    print(f"smallest greedy gap / max|logit|: {float(fixture['smallest_gap'].min()):.2e}; "
          f"eos bias {float(model.fc_out.bias[cfg['eos_token_id']]):.3f}")
    for name in ("model.bin", "config.json", "reference.safetensors"):
        print(f"{os.path.join(args.out, name)}: {os.path.getsize(os.path.join(args.out, name))} bytes")
    print(f"time: {time.time() - start:.1f} s (model {t_model:.1f} s, "
          f"inputs: encoding and greedy decoding {t_inputs:.1f} s)")
    try:
        check_useful(cfg, ids, encoder_out, vis_tokens, memory)
    except RuntimeError as e:
        print(f"make_fixtures.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
