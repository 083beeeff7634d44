#!/usr/bin/env bash
# The README's first command (via `make demo`): makes a random-weights model
# of the card's full size and a small synthetic archive in ROCOv2's layout
# (images + valid_captions.csv), runs `radcap run` over it (under mpirun when
# Open MPI is installed), and shows the run's summary, scores and captions.
# Everything lands in $RADCAP_DEMO_DIR (default: demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${RADCAP_DEMO_DIR:-demo}
vocab=${RADCAP_VOCAB:-../shared/vocab/bert-base-uncased-vocab.txt}
count=${RADCAP_DEMO_IMAGES:-24}
mkdir -p "$dir"
if [ ! -f "$vocab" ]; then
  vocab=$dir/bert-base-uncased-vocab.txt
  [ -f "$vocab" ] || scripts/fetch-vocab.sh "$vocab"
fi
if [ ! -f "$dir/model.bin" ]; then
  echo "== writing a random-weights model of the card's architecture: $dir/model.bin"
  ./radcap init-model --seed 1 --out "$dir/model.bin"
fi
echo "== writing a synthetic archive in ROCOv2's layout: $dir/archive/valid_captions.csv + valid/"
./radcap synth --out "$dir/archive" --count "$count" --seed 1 --force
rm -f "$dir/results.db" "$dir/results.db-wal" "$dir/results.db-shm"

# the job file jobs/demo.json holds the run's settings; its paths come from
# these two variables (absolute, as a job file's relative paths are its own
# folder's)
export RADCAP_DEMO_DIR RADCAP_VOCAB
RADCAP_DEMO_DIR=$(realpath "$dir")
RADCAP_VOCAB=$(realpath "$vocab")
run=(./radcap run --job jobs/demo.json)
if command -v mpirun >/dev/null 2>&1; then
  # rank 0 only hands out work, so 2 cores are used best by 2 captioning ranks
  # of 1 thread each, plus the (nearly idle) master
  launcher=(mpirun -np 3 --oversubscribe)
  [ "$(id -u)" -ne 0 ] || launcher+=(--allow-run-as-root)
  echo "== ${launcher[*]} ${run[*]} (random weights: the captions are word salad, the pipeline is real)"
  "${launcher[@]}" "${run[@]}" --threads 1
else
  echo "== ${run[*]} (random weights: the captions are word salad, the pipeline is real)"
  "${run[@]}"
fi
echo "== the first captions, from the database (radcap export):"
./radcap export --db "$dir/results.db" --format csv | cut -c1-150 | head -6
echo "== results database: $dir/results.db (sqlite3 $dir/results.db; README: 'Results database')"
