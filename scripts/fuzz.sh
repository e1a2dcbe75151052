#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) with clang, libFuzzer, AddressSanitizer and UBSan in build-fuzz/
# and runs each for MINUTES, JOBS at a time, from the committed corpus plus fresh seeds
# (fuzz/make_seeds.py). Afterwards the inputs that found new coverage are merged into
# fuzz/corpus/<target> (commit them: CTest replays them), findings are left in
# build-fuzz/artifacts/<target>/, and a table and build-fuzz/fuzz-summary.json give each target's
# executions, coverage and findings. Exit 1 if anything was found.
# Usage: scripts/fuzz.sh [--minutes M] [--jobs J] [TARGET...]   (default 10 minutes, 2 jobs, all)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=10 jobs=2 targets=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (expected --minutes M, --jobs J, target names)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(safetensors token_shard config_toml recipe_toml clips_json model_config_json quant_config)
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (expected one of: ${all[*]})" >&2; exit 2; }
done

bash scripts/setup.sh clang libclang-rt-14-dev
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target "${targets[@]/%/_fuzz}"

work=build-fuzz/run
rm -rf "$work" build-fuzz/artifacts
mkdir -p "$work/seeds" build-fuzz/artifacts
export OUTQ_LOG=quiet
# The quantized-directory target writes its genuine configs as seeds; then the other seeds and
# every target's dictionary.
OUTQ_FUZZ_SEED_DIR="$work/seeds/quant_config" build-fuzz/fuzz/quant_config_fuzz -runs=0 >/dev/null 2>&1
python3 fuzz/make_seeds.py "$work/seeds"

run_one() {
  local t="$1" minutes="$2" work="$3"
  mkdir -p "$work/corpus/$t" "build-fuzz/artifacts/$t" "fuzz/corpus/$t"
  local start=$SECONDS
  # detect_leaks=0: LibTorch keeps per-thread caches that LeakSanitizer would report on every input.
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "build-fuzz/fuzz/${t}_fuzz" -max_total_time=$((minutes * 60)) -timeout=20 -rss_limit_mb=4096 \
    -malloc_limit_mb=2048 -max_len=65536 -print_final_stats=1 -dict="$work/seeds/$t.dict" \
    -artifact_prefix="build-fuzz/artifacts/$t/" "$work/corpus/$t" "fuzz/corpus/$t" "$work/seeds/$t" \
    $( [ -d "fuzz/crashers/$t" ] && echo "fuzz/crashers/$t" ) >"$work/$t.log" 2>&1 || true
  echo $((SECONDS - start)) >"$work/$t.seconds"
  # Keep the inputs that add coverage to the committed corpus.
  ASAN_OPTIONS=detect_leaks=0 "build-fuzz/fuzz/${t}_fuzz" -merge=1 -artifact_prefix="build-fuzz/artifacts/$t/merge-" \
    "fuzz/corpus/$t" "$work/corpus/$t" "$work/seeds/$t" \
    >"$work/$t.merge.log" 2>&1 || true
  echo "fuzz.sh: $t done"
}
export -f run_one
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {} "$minutes" "$work"

python3 - "$work" "$minutes" "${targets[@]}" <<'PY'
import json, os, re, sys
work, minutes, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = []
for t in targets:
    log = open(os.path.join(work, t + ".log"), errors="replace").read()
    stat = dict(re.findall(r"^stat::(\w+):\s+(\d+)", log, re.M))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    findings = sorted(os.listdir(os.path.join("build-fuzz/artifacts", t)))
    seconds = int(open(os.path.join(work, t + ".seconds")).read())
    rows.append({"target": t, "seconds": seconds, "executions": int(stat.get("number_of_executed_units", 0)),
                 "execs_per_sec": int(stat.get("average_exec_per_sec", 0)),
                 "edges": int(cov[-1][0]) if cov else 0, "features": int(cov[-1][1]) if cov else 0,
                 "corpus": len(os.listdir(os.path.join("fuzz/corpus", t))), "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
                 "findings": findings})
with open("build-fuzz/fuzz-summary.json", "w") as f:
    json.dump(rows, f, indent=2)
print("%-18s %7s %12s %9s %7s %9s %7s %s" % ("target", "seconds", "executions", "exec/s", "edges", "features", "corpus", "findings"))
for r in rows:
    print("%-18s %7d %12d %9d %7d %9d %7d %s" % (r["target"], r["seconds"], r["executions"], r["execs_per_sec"], r["edges"],
                                               r["features"], r["corpus"], ", ".join(r["findings"]) or "none"))
sys.exit(1 if any(r["findings"] for r in rows) else 0)
PY
