#!/usr/bin/env python3
"""Table of scripts/qat_finetune_results.sh: one row per trained model (its token budget, training
time), perplexity on the test split per column, relative to the float model's W16A16.
Usage: qat_finetune_table.py ROOT NAME...   writes ROOT/finetune.json and ROOT/finetune.md."""
import json
import os
import sys

root, names = sys.argv[1], sys.argv[2:]
COLS = [  # label, recipe for models with learned ranges, recipe for the others
    ("W16A16", "float", "float"),
    ("native", "w16a4-learned", "float"),
    ("W4A4 static GPTQ", "w4a4-learned-gptq", "w4a4-tensor-gptq"),
    ("W4A4 learned weights", "w4a4-learned-lw", None),
    ("W8A8 static GPTQ", "w8a8-tensor-gptq", "w8a8-tensor-gptq"),
    ("W3A4 static GPTQ", "w3a4-learned-gptq", "w3a4-tensor-gptq"),
]


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


rows = []
for name in names:
    d = os.path.join(root, name)
    with open(os.path.join(d, "eval.json")) as f:
        ev = {r["name"]: r for r in json.load(f)}
    learned = os.path.exists(os.path.join(d, "model", "clips.json"))
    weights = os.path.exists(os.path.join(d, "model", "weight_steps.safetensors"))
    with open(os.path.join(d + ".train.json")) as f:
        tr = json.load(f)
    config = json.load(open(os.path.join(d, "config.json")))
    row = {"name": name, "mode": config["qat"]["mode"], "weight_bits": config["qat"]["weight_bits"],
           "run_tokens": tr["tokens"], "base_tokens": tr["base_tokens"], "train_seconds": tr["seconds"],
           "tokens_per_second": tr["tokens_per_second"], "ppl": {}, "recipe": {}}
    for label, with_ranges, without in COLS:
        recipe = with_ranges if learned else without
        if label == "native" and weights:
            recipe = "w4a4-learned-lw"
        if recipe is None or (recipe == "w4a4-learned-lw" and not weights) or recipe not in ev:
            continue
        row["ppl"][label] = ev[recipe]["perplexity"]
        row["recipe"][label] = recipe
    rows.append(row)

base = next(r["ppl"]["W16A16"] for r in rows if r["name"] == "float")
float_tokens = next(r["run_tokens"] for r in rows if r["name"] == "float")
with open(os.path.join(root, "finetune.json.tmp"), "w") as f:
    json.dump({"rows": rows, "float_w16a16": base, "float_tokens": float_tokens}, f, indent=2)
os.replace(os.path.join(root, "finetune.json.tmp"), os.path.join(root, "finetune.json"))

labels = [c[0] for c in COLS]
out = [f"Perplexity on the test split (vs the float model's W16A16, {base:.2f}); tokens = this run's training "
       f"tokens (+ the float model's {float_tokens / 1e6:.2f}M for fine-tuning).", "",
       "| model | mode | weight QAT | tokens | train time | " + " | ".join(labels) + " |",
       "|---|---|---|---|---|" + "---|" * len(labels)]
for r in rows:
    cells = []
    for label in labels:
        p = r["ppl"].get(label)
        cells.append("-" if p is None else f"{p:.2f} ({100 * (p / base - 1):+.1f}%)")
    tokens = f'{r["run_tokens"] / 1e6:.2f}M'
    if r["base_tokens"]:
        tokens = f'+{r["run_tokens"] / 1e6:.2f}M ({100 * r["run_tokens"] / r["base_tokens"]:.0f}%)'
    wq = f'W{r["weight_bits"]}' if r["weight_bits"] else "-"
    out.append(f'| {r["name"]} | {r["mode"]} | {wq} | {tokens} | {r["train_seconds"]:.0f} s | ' + " | ".join(cells) + " |")
text = "\n".join(out) + "\n"
with open(os.path.join(root, "finetune.md.tmp"), "w") as f:
    f.write(text)
os.replace(os.path.join(root, "finetune.md.tmp"), os.path.join(root, "finetune.md"))
print(text, end="")
