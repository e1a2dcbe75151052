#!/usr/bin/env bash
# Installs missing packages (scripts/setup.sh), then configures and builds outq with CMake.
# Usage: scripts/build.sh [release|asan] [TARGET...]   (default release, everything; see
# CMakePresets.json). scripts/study.sh builds only the `outq` target.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
bash scripts/setup.sh
cmake --preset "$preset" >/dev/null
if [ "$#" -gt 0 ]; then
  cmake --build --preset "$preset" --target "$@"
else
  cmake --build --preset "$preset"
fi
