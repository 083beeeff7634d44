#!/usr/bin/python3
"""Checks that PyTorch loads a checkpoint written by someone else (radcap's C
writer) exactly as it loads the card's own roco_best_model.bin.

    check_torch_load.py CHECKPOINT CONFIG.json

torch.load()s CHECKPOINT on the CPU with weights_only=True (the pickle may
use only the globals a state dict needs), then load_state_dict(strict=True)s
it into the reference captioner built for CONFIG.json. Beyond what strict
loading checks (key set, shapes), it also requires the same dtypes as the
model's own state dict (float32, and int64 for num_batches_tracked), finite
values, and the same key order as model.state_dict() (the order torch.save
writes).

Prints "ok N tensors" and exits 0, or prints the reason and exits 1.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import captioner  # noqa: E402


def check(checkpoint_path, config_path):
    """Returns (True, "ok N tensors") or (False, reason)."""
    try:
        cfg = captioner.load_config(config_path)
    except (OSError, ValueError) as e:
        return False, f"bad configuration {config_path}: {e}"
    model = captioner.build_model(cfg)
    expected = model.state_dict()
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        return False, f"torch.load failed: {type(e).__name__}: {e}"
    if not isinstance(state, dict):
        return False, f"the checkpoint holds a {type(state).__name__}, not a state dict"

    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(map(str, unexpected)))
    for key, want in expected.items():
        got = state.get(key)
        if got is None:
            continue
        if not isinstance(got, torch.Tensor):
            problems.append(f"{key}: a {type(got).__name__}, not a tensor")
        elif got.dtype != want.dtype or got.shape != want.shape:
            problems.append(f"{key}: {got.dtype} {tuple(got.shape)}, expected {want.dtype} "
                            f"{tuple(want.shape)}")
        elif got.is_floating_point() and not torch.isfinite(got).all():
            problems.append(f"{key}: non-finite values")
    if problems:
        return False, "; ".join(problems)

    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:
        return False, f"load_state_dict(strict=True) failed: {e}"

    for i, (got, want) in enumerate(zip(state.keys(), expected.keys())):
        if got != want:
            return False, f"key order differs from model.state_dict() at index {i}: {got} (expected {want})"
    return True, f"ok {len(state)} tensors"


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) == 2 and argv[1] in ("-h", "--help") else 2
    ok, message = check(argv[1], argv[2])
    print(message if ok else f"{argv[1]}: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
