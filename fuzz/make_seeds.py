#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (docs/testing.md) into DIR/<target>/: small valid
files of each format, plus the repository's own configs and recipes. scripts/fuzz.sh runs it;
the quant_config seeds come from the target itself (OUTQ_FUZZ_SEED_DIR)."""
import json
import pathlib
import shutil
import struct
import sys

out = pathlib.Path(sys.argv[1])
root = pathlib.Path(__file__).resolve().parent.parent


def put(target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    header, buf = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buf), len(buf) + len(raw)]}
        buf += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + buf


put("safetensors", "f32_2x3", safetensors({"w": ("F32", [2, 3], struct.pack("<6f", *range(6)))}))
put("safetensors", "mixed", safetensors({
    "a": ("F16", [3], b"\x00\x3c" * 3), "b": ("BF16", [1, 2], b"\x80\x3f" * 2), "c": ("I8", [4], b"\x01\xff\x02\xfe"),
    "d": ("U8", [2, 2], b"\x10\x20\x30\x40"), "e": ("I32", [], struct.pack("<i", 7)), "f": ("F64", [0], b""),
    "g": ("I64", [1], struct.pack("<q", -1)), "h": ("BOOL", [2], b"\x00\x01"), "i": ("I16", [1], b"\x02\x00")},
    {"format": "outq", "version": "2"}))
put("safetensors", "empty", safetensors({}))


def shard(tokens, dtype="u16", vocab=50, **meta):
    m = {"split": "train", "dtype": dtype, "num_tokens": len(tokens), "num_documents": 1, "vocab_size": vocab,
         "tokenizer_checksum": "abc"}
    m.update(meta)
    j = json.dumps(m).encode()
    head = b"OQSHARD\0" + struct.pack("<II", 1, len(j)) + j
    head += b"\0" * (-len(head) % 64)
    width = 2 if dtype == "u16" else 4
    return head + b"".join(t.to_bytes(width, "little") for t in tokens)


put("token_shard", "u16", shard([1, 5, 9, 2, 0, 49]))
put("token_shard", "u32", shard([70000, 3, 1], dtype="u32", vocab=70001))
put("token_shard", "empty", shard([]))

put("clips_json", "learned", json.dumps({
    "model.layers.0.mlp.down_proj": {"alpha": 3.5, "beta": -2.25, "bits": 4},
    "model.layers.0.self_attn.q_proj": {"alpha": 1.0, "beta": -1.0}}))
put("clips_json", "clamp", json.dumps({"model.layers.1.mlp.up_proj": {"alpha": 8, "beta": -8, "bits": 8, "kind": "clamp"}}))

put("model_config_json", "llama", json.dumps({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "initializer_range": 0.02, "torch_dtype": "float32"}))

for src, target in (("configs", "config_toml"), ("recipes", "recipe_toml")):
    for f in sorted((root / src).glob("*.toml")):
        (out / target).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, out / target / f.name)

# A dictionary per target (libFuzzer -dict): the words of its seeds (keys, string values,
# identifiers) and the format's punctuation, so mutations reach past the parser into validation.
import re

for d in sorted(p for p in out.iterdir() if p.is_dir()):
    words = set()
    for f in d.iterdir():
        text = f.read_bytes().decode("latin-1")
        words.update(re.findall(r'"[^"\\\n]{1,40}"', text))
        words.update('"%s"' % w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_.*]{1,40}", text))
    words.update(['"{"', '"}"', '"["', '"]"', '":"', '","', '"="', '"\\n["', '"true"', '"false"', '"null"',
                  '"-1"', '"1e308"', '"nan"', '"inf"', '"4294967300"', '"9223372036854775807"'])
    lines = ["w%d=%s" % (i, json.dumps(json.loads(w)) if w.startswith('"') else w) for i, w in
             enumerate(sorted(words)) if "\\" not in w]
    (out / (d.name + ".dict")).write_text("\n".join(lines) + "\n")
