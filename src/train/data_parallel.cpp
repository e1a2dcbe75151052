// Data-parallel helpers of the training loop (see data_parallel.h).
#include "data_parallel.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

#include "outq/core/error.h"
#include "outq/core/hash.h"

namespace outq::train_detail {

DataSummary prepare_data_once(const DataConfig& config, const std::string& config_json, ProcessGroup* group) {
  if (!group) return data_prepare(config, config_json, false);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::string ready = fmt::format("outq/data-ready/{}", host), failed = fmt::format("outq/data-failed/{}", host);
  if (group->info().local_rank == 0) {
    try {
      DataSummary s = data_prepare(config, config_json, false);
      group->store_set(ready, s.dir);
      return s;
    } catch (const std::exception& e) {
      group->store_set(failed, e.what());
      throw;
    }
  }
  // Data preparation can take far longer than a collective: wait up to a day for it.
  const size_t got = group->store_wait_any({ready, failed}, std::chrono::hours(24), "the data preparation of local rank 0");
  OUTQ_CHECK(got == 0, "distributed training: local rank 0 could not prepare the data: ", group->store_get(failed));
  return data_prepare(config, config_json, false);  // reuses what local rank 0 made
}

PerplexityResult evaluate_across_ranks(Llama& model, const TokenShard& shard, const PerplexityOptions& options,
                                       ProcessGroup* group) {
  if (!group || group->size() == 1) return evaluate_perplexity(model, shard, options);
  const uint64_t total = options.max_tokens > 0 ? std::min<uint64_t>(shard.size(), options.max_tokens) : shard.size();
  const auto W = static_cast<uint64_t>(effective_window(model, options));
  const uint64_t windows = (total + W - 1) / W;
  const auto share = [&](int r) { return windows * static_cast<uint64_t>(r) / static_cast<uint64_t>(group->size()); };
  const uint64_t begin = std::min(total, share(group->rank()) * W), end = std::min(total, share(group->rank() + 1) * W);
  PerplexityResult r;
  if (end > begin) {
    PerplexityOptions o = options;
    o.max_tokens = 0;
    r = evaluate_perplexity(model, [&](uint64_t start, uint64_t n, int32_t* out) { shard.copy(begin + start, n, out); },
                            end - begin, o);
  }
  auto sums = torch::tensor({r.nll_sum, static_cast<double>(r.tokens), static_cast<double>(r.windows)}, torch::kFloat64);
  group->all_reduce(sums, ProcessGroup::Op::kSum, "the validation sums");
  auto slowest = torch::tensor({r.seconds}, torch::kFloat64);
  group->all_reduce(slowest, ProcessGroup::Op::kMax, "the validation time");
  r.nll_sum = sums[0].item<double>();
  r.tokens = static_cast<int64_t>(sums[1].item<double>());
  r.windows = static_cast<int64_t>(sums[2].item<double>());
  r.window = static_cast<int64_t>(W);
  r.seconds = slowest.item<double>();
  return r;
}

void check_ranks_agree(ProcessGroup* group, const std::string& settings, const std::vector<torch::Tensor>& params) {
  if (!group) return;
  group->check_same(fnv1a64(settings), "their settings (model, train, qat sections and tokenizer)");
  uint64_t h = fnv1a64("");
  for (const auto& p : params) {
    const torch::Tensor c = p.detach().contiguous().cpu();
    h = fnv1a64(std::string_view(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size()), h);
  }
  group->check_same(h, "their starting weights (the checkpoint or --init-from model each rank read)");
}

}  // namespace outq::train_detail
