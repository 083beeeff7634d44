#!/usr/bin/env bash
# The README's first command (via `make demo`): makes a random-weights model
# of the card's full size and a small synthetic archive in ROCOv2's layout,
# then captions it. Everything lands in $RADCAP_DEMO_DIR (default: demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${RADCAP_DEMO_DIR:-demo}
vocab=${RADCAP_VOCAB:-../shared/vocab/bert-base-uncased-vocab.txt}
mkdir -p "$dir"
if [ ! -f "$vocab" ]; then
  vocab=$dir/bert-base-uncased-vocab.txt
  [ -f "$vocab" ] || scripts/fetch-vocab.sh "$vocab"
fi
if [ ! -f "$dir/model.bin" ]; then
  echo "== writing a random-weights model of the card's architecture: $dir/model.bin"
  ./radcap init-model --seed 1 --out "$dir/model.bin"
fi
echo "== writing a synthetic archive (ROCOv2 layout): $dir/archive"
./radcap synth --out "$dir/archive" --count 12 --seed 1 --force
echo "== captioning it (random weights: the captions are word salad, the pipeline is real)"
./radcap caption --checkpoint "$dir/model.bin" --vocab "$vocab" --batch 6 --json "$dir"/archive/valid/* \
  | tee "$dir/captions.jsonl"
echo "== captions written to $dir/captions.jsonl; ground truth in $dir/archive/valid_captions.csv"
