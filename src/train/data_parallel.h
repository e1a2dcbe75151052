// The parts of training that change with data-parallel ranks (ProcessGroup): data prepared once
// per machine, validation windows split across ranks, and a check that every rank starts from
// the same settings and weights. Every function also works without a group (one process).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "outq/data/prepare.h"
#include "outq/eval/perplexity.h"
#include "outq/train/process_group.h"

namespace outq::train_detail {

/// data_prepare, run by one rank per machine (LOCAL_RANK 0) while the others on that machine wait
/// and then open what it made.
DataSummary prepare_data_once(const DataConfig& config, const std::string& config_json, ProcessGroup* group);

/// evaluate_perplexity of the first options.max_tokens tokens of `shard`, each rank scoring a
/// contiguous share of the windows; the sums are reduced, so every rank returns the totals.
PerplexityResult evaluate_across_ranks(Llama& model, const TokenShard& shard, const PerplexityOptions& options,
                                       ProcessGroup* group);

/// Throws unless every rank has the same `settings` text and the same parameter bytes.
void check_ranks_agree(ProcessGroup* group, const std::string& settings, const std::vector<torch::Tensor>& params);

}  // namespace outq::train_detail
