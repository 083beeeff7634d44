#!/usr/bin/env bash
# Installs every Debian package radcap needs to build, test and benchmark.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail
pkgs=(
  build-essential pkg-config clang libomp-dev
  libvips-dev libsqlite3-dev sqlite3 libcjson-dev libcmocka-dev
  libopenblas-dev openmpi-bin libopenmpi-dev
  python3-torch python3-numpy python3-pil
)
# Optional: a real single-node Slurm for tests/slurm/run.sh. When they cannot
# be installed, the install still succeeds and the Slurm tests skip.
optional=(slurm-wlm munge)
absent() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(absent "${pkgs[@]}")
mapfile -t missing_optional < <(absent "${optional[@]}")
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
updated=0
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq && updated=1
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ${#missing_optional[@]} -gt 0 ]; then
  echo "install-deps: installing the optional ${missing_optional[*]} (for the Slurm tests)"
  if ! { [ $updated = 1 ] || $SUDO apt-get update -qq; } ||
     ! $SUDO apt-get install -y -qq --no-install-recommends "${missing_optional[@]}"; then
    echo "install-deps: could not install ${missing_optional[*]}; the Slurm tests will be skipped"
  fi
fi
