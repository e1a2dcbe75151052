// Results of GPTQ runs kept in memory, so that recipes which differ only in what GPTQ does not
// read (activation specs, mixed-precision activation overrides, methods that leave the weights
// and the forward alone) reuse one run instead of repeating it: `outq study` evaluates many such
// recipes on one model. A run is identified by everything it reads: the model's configuration,
// module structure, parameters and buffers as the methods left them, each linear's weight spec,
// the GPTQ options, the calibration windows and batch size, and the prefix with its cache.
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <utility>
#include <vector>

#include "outq/model/llama.h"
#include "outq/ptq/gptq.h"
#include "outq/ptq/method.h"
#include "outq/quant/quantized_model.h"
#include "outq/quant/recipe.h"

namespace outq {

class GptqCache {
 public:
  struct Entry {
    std::vector<std::pair<std::string, QuantizedWeight>> weights;  ///< by module, the quantized linears only
    double seconds = 0;  ///< how long the run took
  };

  /// Keeps at most `max_bytes` of results, dropping the least recently used first.
  explicit GptqCache(int64_t max_bytes = int64_t{1} << 30) : max_bytes_(max_bytes) {}

  /// The run's key (see the file comment).
  static uint64_t key(Llama& model, const Recipe& recipe, const std::vector<QuantizedLinear>& linears,
                      const CalibrationData& data);
  /// The stored result of `key` (valid until the next put), or nullptr if none.
  const Entry* find(uint64_t key);
  void put(uint64_t key, Entry entry);

  int64_t hits() const { return hits_; }
  int64_t bytes() const { return bytes_; }
  size_t size() const { return entries_.size(); }

 private:
  struct Slot {
    uint64_t key;
    Entry entry;
    int64_t bytes;
  };
  std::list<Slot> entries_;  ///< most recently used first
  int64_t max_bytes_, bytes_ = 0, hits_ = 0;
};

}  // namespace outq
