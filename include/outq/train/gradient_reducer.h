// Data-parallel gradient averaging: the trained tensors' gradients are packed into buckets of
// about train.dist_bucket_mb, each bucket summed over the ranks with one all-reduce, then divided
// by the number of ranks, so every rank steps with the gradient of the whole global batch.
// With overlap, a bucket starts reducing from a gradient hook as soon as its last gradient is
// ready in the backward pass (buckets hold the parameters in reverse order, the order backward
// produces them, and start strictly in bucket order so every rank issues the same sequence).
// A tensor without a gradient on this step (unused) keeps none: the ranks agree on that because
// they run the same graph.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "outq/train/process_group.h"

namespace outq {

class GradientReducer {
 public:
  GradientReducer(std::vector<torch::Tensor> params, ProcessGroup& group, int64_t bucket_bytes, bool overlap);
  ~GradientReducer();  ///< removes the gradient hooks
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Before the backward pass of a step's last micro-batch: with overlap, buckets start from there.
  void arm();
  /// After that backward pass: reduces what has not started, waits, and writes the mean gradient
  /// into every tensor's .grad(). Returns the seconds spent here (the communication not hidden
  /// behind the backward pass).
  double finish();

  size_t buckets() const { return buckets_.size(); }
  int64_t bytes_per_step() const;  ///< gradient bytes each rank contributes per step

 private:
  struct Bucket {
    torch::Tensor flat;
    std::vector<size_t> members;  ///< indices into params_
    size_t remaining = 0;         ///< members whose gradient has not arrived (overlap)
  };
  void on_gradient(size_t param, const torch::Tensor& grad);
  void launch_ready();  ///< starts every complete bucket after the last one started, in order
  void reset();         ///< no gradient arrived, no bucket started

  std::vector<torch::Tensor> params_;
  std::vector<size_t> bucket_of_, offset_of_;
  std::vector<char> arrived_;
  std::vector<Bucket> buckets_;
  std::vector<PendingCollective> pending_;
  std::vector<unsigned> hooks_;
  ProcessGroup& group_;
  bool overlap_ = false, armed_ = false;
  size_t next_launch_ = 0;
};

}  // namespace outq
