// Export to GGUF for llama.cpp (architecture "llama", SentencePiece vocabulary): a float model's
// weights as F32 or F16; a quantized model's linear weights with their codes carried over exactly
// where a GGUF block type holds them, and every other weight as float:
//   symmetric int8            -> Q8_0  d = fp16(s), q unchanged
//   symmetric int4 (-8..7)    -> Q4_0  d = fp16(s), u = q + 8
//   asymmetric int4 (0..15)   -> Q4_1  d = fp16(s), m = fp16(-s z), u = q
// per channel, per tensor, or in groups of a multiple of 32 input columns (the scale repeated in
// each 32-block). Other weight formats (3 bits, asymmetric int8, groups not a multiple of 32) are
// refused with the reason, as are models whose function GGUF cannot carry (q/k/v biases, an online
// Hadamard transform, a float prefix, post-norm blocks, llama3 RoPE scaling). Activation
// quantization is not part of a GGUF: llama.cpp quantizes activations its own way.
// The rows of q_proj and k_proj are permuted per head (new row 2i = old row i, 2i + 1 = old row
// i + D/2) because llama.cpp rotates adjacent pairs where outq (like Hugging Face) rotates halves.
#pragma once

#include <string>
#include <vector>

namespace outq {

struct GgufExportOptions {
  std::string float_type = "f16";  ///< float tensors (2-D): "f16" or "f32"; norms are always F32
  std::string name;                ///< general.name ("" = the model directory's name)
};

struct GgufExportSummary {
  std::string file_type;  ///< "F16", "Q4_0", ...
  int tensors = 0;
  std::vector<std::string> notes;  ///< what the export left out (activation quantization, ...)
  int64_t bytes = 0;
};

/// Writes `model_dir` (a float or quantized outq model directory) to `out_path` atomically.
GgufExportSummary gguf_export(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& options);

/// The row order of llama.cpp's RoPE pairing for one projection of `heads` heads of `head_dim`
/// rows: new row h D + 2 i is old row h D + i, new row h D + 2 i + 1 is old row h D + i + D / 2.
std::vector<int64_t> gguf_rope_row_order(int64_t heads, int64_t head_dim);

}  // namespace outq
