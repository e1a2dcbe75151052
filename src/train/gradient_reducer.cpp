// Bucketed all-reduce of gradients, optionally overlapped with the backward pass (see gradient_reducer.h).
#include "outq/train/gradient_reducer.h"

#include <chrono>

#include "outq/core/error.h"

namespace outq {

GradientReducer::GradientReducer(std::vector<torch::Tensor> params, ProcessGroup& group, int64_t bucket_bytes, bool overlap)
    : params_(std::move(params)), group_(group), overlap_(overlap) {
  OUTQ_CHECK(bucket_bytes > 0, "train.dist_bucket_mb: expected a positive size, found ", bucket_bytes, " bytes");
  bucket_of_.resize(params_.size());
  offset_of_.resize(params_.size());
  arrived_.assign(params_.size(), 0);
  // Reverse order: the backward pass produces the last layers' gradients first.
  std::vector<int64_t> sizes;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    OUTQ_ASSERT(p.is_floating_point() && p.requires_grad(), "gradient reducer: parameter ", k, " is not a trained float tensor");
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fits = !buckets_.empty() && sizes.back() + bytes <= bucket_bytes &&
                      params_[buckets_.back().members.front()].scalar_type() == p.scalar_type();
    if (!fits) {
      buckets_.emplace_back();
      sizes.push_back(0);
    }
    bucket_of_[k] = buckets_.size() - 1;
    offset_of_[k] = static_cast<size_t>(sizes.back() / static_cast<int64_t>(p.element_size()));
    buckets_.back().members.push_back(k);
    sizes.back() += bytes;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const auto& first = params_[buckets_[b].members.front()];
    buckets_[b].flat = torch::zeros({sizes[b] / static_cast<int64_t>(first.element_size())}, first.options().requires_grad(false));
  }
  reset();
  if (overlap_) {
    for (size_t k = 0; k < params_.size(); ++k) {
      hooks_.push_back(params_[k].register_hook([this, k](torch::Tensor g) { on_gradient(k, g); }));
    }
  }
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < hooks_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

int64_t GradientReducer::bytes_per_step() const {
  int64_t n = 0;
  for (const auto& b : buckets_) n += b.flat.numel() * static_cast<int64_t>(b.flat.element_size());
  return n;
}

void GradientReducer::arm() { armed_ = overlap_; }

void GradientReducer::reset() {
  next_launch_ = 0;
  std::fill(arrived_.begin(), arrived_.end(), 0);
  for (auto& b : buckets_) b.remaining = b.members.size();
}

void GradientReducer::on_gradient(size_t k, const torch::Tensor& grad) {
  if (!armed_ || arrived_[k]) return;
  torch::NoGradGuard no_grad;
  // The hook sees this backward's contribution before it is added to .grad(): the step's gradient
  // is their sum when earlier micro-batches left one there.
  const torch::Tensor& held = params_[k].grad();
  auto slice = buckets_[bucket_of_[k]].flat.narrow(0, static_cast<int64_t>(offset_of_[k]), params_[k].numel());
  if (held.defined()) {
    torch::add_out(slice, held.reshape(-1), grad.reshape(-1));
  } else {
    slice.copy_(grad.reshape(-1));
  }
  arrived_[k] = 1;
  --buckets_[bucket_of_[k]].remaining;
  launch_ready();
}

void GradientReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].remaining == 0) {
    pending_.push_back(group_.all_reduce_async(buckets_[next_launch_].flat, "the gradient all-reduce"));
    ++next_launch_;
  }
}

double GradientReducer::finish() {
  const auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  armed_ = false;
  for (size_t k = 0; k < params_.size(); ++k) {
    if (arrived_[k]) continue;
    auto slice = buckets_[bucket_of_[k]].flat.narrow(0, static_cast<int64_t>(offset_of_[k]), params_[k].numel());
    const torch::Tensor& g = params_[k].grad();
    if (g.defined()) {
      slice.copy_(g.reshape(-1));
    } else {
      slice.zero_();  // unused on this step (and so on every rank)
    }
    arrived_[k] = 1;
    --buckets_[bucket_of_[k]].remaining;
  }
  launch_ready();
  OUTQ_ASSERT(next_launch_ == buckets_.size(), "gradient reducer: a bucket was not started");
  for (auto& p : pending_) p.wait();
  pending_.clear();
  reset();  // for the next step
  const double inv = 1.0 / group_.size();
  for (auto& b : buckets_) b.flat.mul_(inv);
  for (size_t k = 0; k < params_.size(); ++k) {
    torch::Tensor g = params_[k].mutable_grad();
    if (!g.defined()) continue;
    g.copy_(buckets_[bucket_of_[k]].flat.narrow(0, static_cast<int64_t>(offset_of_[k]), params_[k].numel()).view_as(g));
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace outq
