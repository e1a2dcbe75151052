#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test not labelled `slow`
# (labels unit and integration; see tests/CMakeLists.txt). Usage: scripts/test.sh [release|asan]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
bash scripts/build.sh "$preset"
ctest --preset "$preset"
