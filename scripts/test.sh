#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test not labelled `slow`
# (labels unit and integration; see tests/CMakeLists.txt), then the sanitizer lane: the unit tests
# that do not load LibTorch (core, data, kernels: the readers of outside bytes and the integer
# kernels) built with AddressSanitizer + UndefinedBehaviorSanitizer, any report failing the run.
# Usage: scripts/test.sh [release|asan]   (asan: every `unit` test under the sanitizers instead).
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
bash scripts/build.sh "$preset"
ctest --preset "$preset"
if [ "$preset" = release ]; then
  sanitized=(core_test data_test kernels_test)
  bash scripts/build.sh asan "${sanitized[@]}"
  for t in "${sanitized[@]}"; do
    echo "sanitizer lane: $t"
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=abort_on_error=1 "build-asan/tests/$t" --gtest_brief=1
  done
fi
