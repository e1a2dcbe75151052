#!/usr/bin/env bash
# Writes a variant of a recipe with outlier methods (default settings): the same recipe with
# `methods = [...]` in pipeline order (rotate first, then qfep, smoothquant, qfem) and the name and
# description extended, e.g. w4a4-tensor-gptq + "smoothquant qfem qfep" -> w4a4-tensor-gptq-sq-qfem-qfep.
# Usage: scripts/method_recipe.sh BASE.toml OUT.toml "METHOD..."
set -euo pipefail
base="$1" out="$2" methods="$3"
stem="$(basename "$base" .toml)"
grep -q '^methods = \[\]' "$base" || { echo "method_recipe: $base has no 'methods = []' line to replace" >&2; exit 1; }
list="" suffix="" words=""
for m in rotate qfep smoothquant qfem; do  # pipeline order: rotation, the prefix, QFeM last (it measures what is left)
  case " $methods " in *" $m "*) ;; *) continue ;; esac
  list+="${list:+, }\"$m\""
  case $m in rotate) words+=" + rotation";; qfep) words+=" + QFeP";; smoothquant) words+=" + SmoothQuant";; qfem) words+=" + QFeM";; esac
done
for m in rotate smoothquant qfem qfep; do  # name suffixes in a fixed order
  case " $methods " in *" $m "*) ;; *) continue ;; esac
  case $m in rotate) suffix+="-rot";; smoothquant) suffix+="-sq";; *) suffix+="-$m";; esac
done
for m in $methods; do
  case $m in rotate|qfep|smoothquant|qfem) ;; *) echo "method_recipe: unknown method '$m' (rotate, qfep, smoothquant, qfem)" >&2; exit 1;; esac
done
tmp="$out.tmp.$$"
sed -e "s/^name = \"$stem\"/name = \"$stem$suffix\"/" \
    -e "1s/^\(# .*\)$/\1$words/" \
    -e "s/^description = \"\(.*\)\"$/description = \"\1$words\"/" \
    -e "s/^methods = \[\]$/methods = [$list]/" "$base" > "$tmp"
mv "$tmp" "$out"
