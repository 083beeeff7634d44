#!/bin/sh
# bench.sh: the engine against PyTorch, for `make bench` (issue #7).
#
# Writes a random-weights checkpoint of the full model (radcap init-model) to
# a temporary folder, then runs on it, one after the other:
#   1. tests/bench/bench_engine (the engine: encoder, decoder, end to end,
#      latency, peak RSS, load time, GFLOP/s against the FMA peak);
#   2. tests/bench/torch_bench.py (the PyTorch reference, the same figures on
#      the same images), when $PYTHON can import torch: twice, OpenBLAS's
#      threads as they come and OPENBLAS_NUM_THREADS=1, each figure's better;
#   3. `radcap run` on a small synthetic archive: 1 process x $THREADS threads,
#      then mpirun with $THREADS workers x 1 thread (and the master);
# and prints the side-by-side table (tests/bench/bench_report.py), also
# written to $BUILD/bench.json.
#
# Environment: BUILD (build folder, default build), RADCAP_BIN (default
# ./radcap), PYTHON (default /usr/bin/python3), SHARED_DIR (default
# ../shared, for the vocabulary), THREADS (default 2), SECONDS_PER_FIGURE
# (default 1.5), RUN_IMAGES (default 64).
#
# Figures on a shared machine are noisy: each is the median of several runs
# (the best run is in the JSON as *_best).
set -eu

BUILD=${BUILD:-build}
RADCAP_BIN=${RADCAP_BIN:-./radcap}
PYTHON=${PYTHON:-/usr/bin/python3}
SHARED_DIR=${SHARED_DIR:-../shared}
THREADS=${THREADS:-2}
SECONDS_PER_FIGURE=${SECONDS_PER_FIGURE:-1.5}
RUN_IMAGES=${RUN_IMAGES:-64}
VOCAB=$SHARED_DIR/vocab/bert-base-uncased-vocab.txt

work=$(mktemp -d "${TMPDIR:-/tmp}/radcap-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# Other processes on the cores make every figure lower and noisier (the
# engine's OpenMP fork/joins suffer most): the load is recorded with them.
load=$(cut -d' ' -f1 /proc/loadavg)
echo "== load average $load on $(nproc) cores before the run"
echo "{\"loadavg_before\": $load, \"cores\": $(nproc)}" >"$work/meta.json"

echo "== writing a random-weights checkpoint of the full model"
"$RADCAP_BIN" init-model --seed 1 --out "$work/model.bin"

echo "== engine ($THREADS threads)"
"$BUILD/bench/bench_engine" --checkpoint "$work/model.bin" --threads "$THREADS" --seconds "$SECONDS_PER_FIGURE" \
    --images-out "$work/images.f32" --json "$work/engine.json"

echo "== engine, bf16 decoder weights (--precision bf16)"
"$BUILD/bench/bench_engine" --checkpoint "$work/model.bin" --threads "$THREADS" --seconds "$SECONDS_PER_FIGURE" \
    --precision bf16 --only e2e,latency,decoder --json "$work/engine_bf16.json"

# VDPBF16PS (AVX512_BF16) runs bf16 products at twice the multiply-adds
# per instruction, rounding x too: measured where the CPU has it, with the
# encoder in bf16 too (--precision bf16-all), where most of the time goes.
if grep -qw avx512_bf16 /proc/cpuinfo; then
    echo "== engine, all weights bf16 on the dot-product kernel (--precision bf16-all --gemm avx512bf16)"
    RADCAP_GEMM=avx512bf16 "$BUILD/bench/bench_engine" --checkpoint "$work/model.bin" --threads "$THREADS" \
        --seconds "$SECONDS_PER_FIGURE" --precision bf16-all --json "$work/engine_bf16_dot.json"
else
    echo "== engine on the dot-product kernel: skipped (this CPU has no AVX512_BF16)"
fi

# PyTorch twice: OpenBLAS's own threads as they come, then one OpenBLAS
# thread (no fight with OpenMP's); each figure keeps the better run.
if "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "== PyTorch ($THREADS threads, OpenBLAS threads as they come)"
    OMP_NUM_THREADS=$THREADS "$PYTHON" tests/bench/torch_bench.py "$work/model.bin" --images "$work/images.f32" \
        --threads "$THREADS" --seconds "$SECONDS_PER_FIGURE" --json "$work/torch_openblas.json"
    echo "== PyTorch ($THREADS threads, OPENBLAS_NUM_THREADS=1)"
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=$THREADS "$PYTHON" tests/bench/torch_bench.py "$work/model.bin" \
        --images "$work/images.f32" --threads "$THREADS" --seconds "$SECONDS_PER_FIGURE" \
        --json "$work/torch_openblas1.json"
    "$PYTHON" tests/bench/torch_bench.py --merge "$work/torch.json" "$work/torch_openblas.json" \
        "$work/torch_openblas1.json" >/dev/null
else
    echo "== PyTorch: skipped ($PYTHON cannot import torch; apt-get install python3-torch)"
fi

# radcap run, wall time from start to exit (model load and image decoding
# included), 1 process against MPI ranks of 1 thread each.
now() { date +%s.%N; }
run_json="$work/run.json"
echo "{}" >"$run_json"
if [ -f "$VOCAB" ] && command -v mpirun >/dev/null 2>&1; then
    echo "== radcap run on $RUN_IMAGES synthetic images"
    "$RADCAP_BIN" synth --out "$work/archive" --count "$RUN_IMAGES" >/dev/null
    set -- --manifest "$work/archive/valid_captions.csv" --checkpoint "$work/model.bin" --vocab "$VOCAB" \
        --batch 16 --no-score --quiet
    t0=$(now)
    "$RADCAP_BIN" run "$@" --db "$work/one.db" --threads "$THREADS"
    t1=$(now)
    root_flag=
    [ "$(id -u)" = 0 ] && root_flag=--allow-run-as-root
    mpirun -np $((THREADS + 1)) --oversubscribe $root_flag "$RADCAP_BIN" run "$@" --db "$work/mpi.db" --threads 1
    t2=$(now)
    awk -v n="$RUN_IMAGES" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v th="$THREADS" 'BEGIN {
        printf "{\"run_images\": %d, \"run_1proc_threads\": %d, \"run_1proc_s\": %.3f, \"run_1proc_img_per_s\": %.3f, ", n, th, t1 - t0, n / (t1 - t0);
        printf "\"run_mpi_workers\": %d, \"run_mpi_s\": %.3f, \"run_mpi_img_per_s\": %.3f}\n", th, t2 - t1, n / (t2 - t1) }' >"$run_json"
else
    echo "== radcap run: skipped (no vocabulary at $VOCAB or no mpirun)"
fi

echo "{\"loadavg_after\": $(cut -d' ' -f1 /proc/loadavg)}" >"$work/meta_after.json"
"$PYTHON" tests/bench/bench_report.py --out "$BUILD/bench.json" "$work/meta.json" "$work/engine.json" \
    "$work/torch.json" "$run_json" "$work/meta_after.json" "bf16_:$work/engine_bf16.json" \
    "bf16_dot_:$work/engine_bf16_dot.json"
