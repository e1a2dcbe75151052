// The reference encoder of the tokenizer tests: @huggingface/tokenizers (installed from npm) encodes
// each line of a JSON-lines file of strings with a tokenizer.json, without special tokens added,
// and prints one JSON array of ids per line. Usage:
//   node bpe_oracle.cjs TOKENIZER.json STRINGS.jsonl NODE_MODULES_PARENT
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");
const load = createRequire(path.join(process.argv[4], "package.json"));
const { Tokenizer } = load("@huggingface/tokenizers");

const tokenizer = new Tokenizer(JSON.parse(fs.readFileSync(process.argv[2], "utf8")), {});
const lines = fs.readFileSync(process.argv[3], "utf8").split("\n").filter((l) => l.length > 0);
const out = lines.map((l) => JSON.stringify(tokenizer.encode(JSON.parse(l), { add_special_tokens: false }).ids));
process.stdout.write(out.join("\n") + "\n");
