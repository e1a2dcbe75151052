#!/usr/bin/env bash
# Installs missing packages (scripts/setup.sh), then configures and builds outq with CMake.
# Usage: scripts/build.sh [release|asan]   (default release; see CMakePresets.json)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
bash scripts/setup.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
