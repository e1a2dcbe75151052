#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs `outq study` (train a float baseline
# and a QAT model, analyse, quantize with every recipe, evaluate, run the integer kernels, write
# runs/study/report/report.md). Extra arguments go to `outq study`, e.g. --config configs/study-long.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release outq
exec ./build/apps/outq/outq study "$@"
