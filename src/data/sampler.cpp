// Counter-based window sampler (splitmix64 of seed and index) and sequential window offsets.
#include "outq/data/sampler.h"

#include "outq/core/error.h"

namespace outq {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

WindowSampler::WindowSampler(uint64_t num_tokens, int64_t seq_len, uint64_t seed)
    : seq_len_(seq_len), state_{seed, 0} {
  OUTQ_CHECK(seq_len >= 1, "sampler: seq_len: expected >= 1, found ", seq_len);
  OUTQ_CHECK(num_tokens >= static_cast<uint64_t>(seq_len) + 1, "sampler: expected a shard of at least seq_len + 1 = ",
             seq_len + 1, " tokens, found ", num_tokens);
  num_starts_ = num_tokens - static_cast<uint64_t>(seq_len);
}

uint64_t WindowSampler::next() {
  const uint64_t r = splitmix64(state_.seed ^ splitmix64(state_.drawn++));
  // Multiply-shift maps r uniformly onto [0, num_starts) without a division.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * num_starts_) >> 64);
}

void WindowSampler::next_batch(const TokenShard& shard, int64_t batch, int32_t* out) {
  OUTQ_ASSERT(shard.size() == num_starts_ + static_cast<uint64_t>(seq_len_), "sampler built for another shard");
  const uint64_t window = static_cast<uint64_t>(seq_len_) + 1;
  for (int64_t b = 0; b < batch; ++b) shard.copy(next(), window, out + b * window);
}

void WindowSampler::restore(const SamplerState& state) {
  OUTQ_CHECK(state.seed == state_.seed, "sampler state: seed: expected ", state_.seed, ", found ",
             state.seed, " (the checkpoint was made with another seed)");
  state_ = state;
}

std::vector<uint64_t> sequential_windows(uint64_t num_tokens, int64_t seq_len, int64_t stride) {
  OUTQ_CHECK(seq_len >= 1 && stride >= 1, "sequential windows: expected seq_len >= 1 and stride >= 1");
  std::vector<uint64_t> starts;
  for (uint64_t s = 0; s + static_cast<uint64_t>(seq_len) + 1 <= num_tokens; s += static_cast<uint64_t>(stride)) {
    starts.push_back(s);
  }
  return starts;
}

}  // namespace outq
