#!/usr/bin/env python3
"""bench_report.py: the side-by-side table of `make bench` (scripts/bench.sh).

Merges the JSON objects of bench_engine (engine figures), torch_bench.py
(torch_ keys) and the `radcap run` timings (run_ keys) into one object
written to --out (build/bench.json), and prints each figure next to
PyTorch's with the speed-up: engine/torch for rates, torch/engine for
seconds and megabytes, so that above 1 always means the engine is better.
Files that do not exist (PyTorch absent, run skipped) are left out.

usage: bench_report.py --out FILE JSON...
"""
import argparse
import json
import os

# (label, key, unit, higher is better)
ROWS = [
    ("encoder, batch 1", "encoder_img_per_s_b1", "images/s", True),
    ("encoder, batch 8", "encoder_img_per_s_b8", "images/s", True),
    ("encoder, batch 32", "encoder_img_per_s_b32", "images/s", True),
    ("decoder, batch 1 (40 forced tokens)", "decoder_tok_per_s_b1", "tokens/s", True),
    ("decoder, batch 32 (40 forced tokens)", "decoder_tok_per_s_b32", "tokens/s", True),
    ("decoder, batch 128 (40 forced tokens)", "decoder_tok_per_s_b128", "tokens/s", True),
    ("end to end, batch 32, 40 tokens", "e2e_img_per_s", "images/s", True),
    ("end to end, batch 32, natural stopping", "e2e_natural_img_per_s", "images/s", True),
    ("latency, 1 image, 40 tokens", "latency_s_b1", "s", False),
    ("peak RSS, batch 32", "peak_rss_mb", "MB", False),
    ("model load", "load_s", "s", False),
]


def fmt(value, unit):
    if value is None or value < 0:
        return "-"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    merged = {}
    for arg in args.files:
        # PREFIX:path puts the file's keys under PREFIX (e.g. bf16_)
        prefix, path = arg.split(":", 1) if ":" in arg and not os.path.exists(arg) else ("", arg)
        if os.path.exists(path):
            with open(path) as f:
                merged.update({prefix + k: v for k, v in json.load(f).items()})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(merged, f, indent=1, sort_keys=True)
        f.write("\n")

    print()
    print(f"{'figure':<42} {'radcap':>9} {'PyTorch':>9} {'ratio':>7}  unit")
    for label, key, unit, higher in ROWS:
        ours, theirs = merged.get(key), merged.get("torch_" + key)
        ratio = "-"
        if ours and theirs and ours > 0 and theirs > 0:
            ratio = f"{(ours / theirs if higher else theirs / ours):.2f}x"
        print(f"{label:<42} {fmt(ours, unit):>9} {fmt(theirs, unit):>9} {ratio:>7}  {unit}")
    if "torch_best_of" in merged:
        print(f"PyTorch {merged.get('torch_version', '?')}: each figure the better of {merged['torch_best_of']} runs "
              "(OpenBLAS's threads as they come, OPENBLAS_NUM_THREADS=1)")
    if "peak_gflops" in merged:
        print(f"\nFMA peak measured: {merged['peak_gflops']:.1f} GFLOP/s on {merged['threads']} thread(s) "
              f"({merged['peak_gflops_per_thread']:.1f} per thread, backend {merged['backend']})")
        for label, key in (("encoder, batch 8", "encoder_gflops_b8"), ("decoder, batch 32", "decoder_gflops_b32"),
                           ("end to end, batch 32, 40 tokens", "e2e_gflops")):
            if key in merged:
                print(f"  {label:<40} {merged[key]:6.1f} GFLOP/s = {100 * merged[key] / merged['peak_gflops']:3.0f}% "
                      "of peak")
    for batch in (32, 128):  # where a decoding step's time goes (bench_engine's dec_profile run)
        prefix = f"decoder_b{batch}_"
        parts = {key[len(prefix):-len("_ms")]: value for key, value in merged.items()
                 if key.startswith(prefix) and key.endswith("_ms")}
        if parts:
            total = sum(parts.values())
            shares = ", ".join(f"{name} {100 * ms / total:.0f}%" for name, ms in sorted(parts.items(),
                                                                                       key=lambda p: -p[1]))
            print(f"  a decoding step at batch {batch}, {total:.1f} ms: {shares}")
    for prefix, what in (("bf16_", "--precision bf16 (decoder weights in bfloat16)"),
                         ("bf16_dot_", "--precision bf16-all --gemm avx512bf16 (VDPBF16PS: encoder and decoder, "
                                       "x in bfloat16 too)")):
        if prefix + "e2e_img_per_s" not in merged:
            continue
        print(f"\n{what} against fp32:")
        for label, key, unit, higher in ROWS:
            ours, bf16 = merged.get(key), merged.get(prefix + key)
            if ours and bf16 and key != "peak_rss_mb":
                ratio = bf16 / ours if higher else ours / bf16
                print(f"  {label:<40} {fmt(bf16, unit):>9} {ratio:6.2f}x fp32  {unit}")
    if "run_1proc_img_per_s" in merged:
        print(f"\nradcap run, {merged['run_images']} synthetic images (wall time, load and JPEG decoding included):")
        print(f"  1 process x {merged['run_1proc_threads']} threads      {merged['run_1proc_img_per_s']:6.2f} images/s")
        print(f"  mpirun, {merged['run_mpi_workers']} workers x 1 thread   {merged['run_mpi_img_per_s']:6.2f} images/s")
    if "loadavg_before" in merged:
        print(f"\nload average before the run {merged['loadavg_before']} on {merged['cores']} cores: other "
              "processes competing for the cores (clean figures need about 0)")
    print(f"\nall figures: {args.out} (medians of repeated runs; *_best: the fastest run). "
          "On a shared machine they vary from run to run.")


if __name__ == "__main__":
    main()
