#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test not labelled `slow`
# (labels unit and integration; see tests/CMakeLists.txt), then the sanitizer lane: the unit tests
# that do not load LibTorch (core, data, kernels: the readers of outside bytes and the integer
# kernels) and the fuzz corpora of the readers that do not need it (safetensors, token shards)
# built with AddressSanitizer + UndefinedBehaviorSanitizer, any report failing the run.
# Usage: scripts/test.sh [release|asan]   (asan: every `unit` test under the sanitizers instead).
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
bash scripts/build.sh "$preset"
ctest --preset "$preset"
if [ "$preset" = release ]; then
  sanitized=(core_test data_test kernels_test)
  replayed=(safetensors token_shard)
  bash scripts/build.sh asan "${sanitized[@]}" "${replayed[@]/%/_fuzz}"
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=abort_on_error=1
  for t in "${sanitized[@]}"; do
    echo "sanitizer lane: $t"
    "build-asan/tests/$t" --gtest_brief=1
  done
  for t in "${replayed[@]}"; do
    echo "sanitizer lane: fuzz corpus of $t"
    inputs=("fuzz/corpus/$t")
    [ -d "fuzz/crashers/$t" ] && inputs+=("fuzz/crashers/$t")
    "build-asan/fuzz/${t}_fuzz" "${inputs[@]}"
  done
fi
