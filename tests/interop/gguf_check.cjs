// Reads a GGUF file with @huggingface/gguf (an independent parser) and prints what it found as
// JSON: each metadata key's GGUF value type (and array element type), the tensors and the data
// offset. Usage: node gguf_check.cjs FILE.gguf NODE_MODULES_PARENT
const path = require("path");
const { createRequire } = require("module");
const load = createRequire(path.join(process.argv[3], "package.json"));
const { gguf } = load("@huggingface/gguf");

gguf(process.argv[2], { allowLocalFile: true, typedMetadata: true }).then(({ typedMetadata, tensorInfos, tensorDataOffset }) => {
  const types = {};
  for (const [key, entry] of Object.entries(typedMetadata)) {
    if (key === "version" || key === "tensor_count" || key === "kv_count") continue;
    types[key] = entry.subType === undefined ? [entry.type] : [entry.type, entry.subType];
  }
  const tensors = tensorInfos.map((t) => ({ name: t.name, shape: t.shape.map(String), dtype: t.dtype, offset: String(t.offset) }));
  const count = typedMetadata["tokenizer.ggml.tokens"] ? typedMetadata["tokenizer.ggml.tokens"].value.length : 0;
  console.log(JSON.stringify({ types, tensors, tensorDataOffset: String(tensorDataOffset), tokens: count }));
}).catch((e) => {
  console.error(String(e));
  process.exit(1);
});
