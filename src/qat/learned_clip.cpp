// Learned-clip fake quantization and the kurtosis penalty as fused autograd functions.
#include "outq/qat/learned_clip.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "outq/core/error.h"

namespace outq {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Round half to even for 0 <= u < 2^22: adding and subtracting 1.5 * 2^23 leaves the float
// addition's own rounding (to nearest, ties to even) to do it. Unlike std::nearbyint this
// vectorizes on baseline x86-64 (no SSE4.1 round instruction needed).
inline float round_even_small(float u) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (u + kMagic) - kMagic;
}

class LearnedClipQuant : public torch::autograd::Function<LearnedClipQuant> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& alpha,
                               const torch::Tensor& beta, int64_t bits) {
    const auto x = x_in.contiguous();
    const float a = alpha.item<float>(), b = beta.item<float>();
    OUTQ_CHECK(a > b, "learned clip: expected alpha > beta, found alpha ", a, " and beta ", b);
    const float levels = static_cast<float>((1 << bits) - 1);
    const float delta = (a - b) / levels;
    auto out = torch::empty_like(x);
    const float* px = x.data_ptr<float>();
    float* po = out.data_ptr<float>();
    at::parallel_for(0, x.numel(), 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float xc = std::min(std::max(px[i], b), a);
        po[i] = b + round_even_small((xc - b) / delta) * delta;
      }
    });
    ctx->save_for_backward({x, alpha, beta});
    ctx->saved_data["bits"] = bits;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const float a = saved[1].item<float>(), b = saved[2].item<float>();
    const int64_t bits = ctx->saved_data["bits"].toInt();
    const float levels = static_cast<float>((1 << bits) - 1);
    const float delta = (a - b) / levels;
    const auto g = grad_out[0].contiguous();
    auto gx = torch::empty_like(x);
    const float* px = x.data_ptr<float>();
    const float* pg = g.data_ptr<float>();
    float* pgx = gx.data_ptr<float>();
    const int64_t n = x.numel();
    const int threads = at::get_num_threads();
    std::vector<double> ga(static_cast<size_t>(threads) + 1, 0.0), gb(static_cast<size_t>(threads) + 1, 0.0);
    const float inv_levels = 1.0f / levels;
    at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
      // Branch-free so it vectorizes: 16 float lanes per block of 1024 elements, blocks summed in double.
      constexpr int kLanes = 16;
      constexpr int64_t kBlock = 1024;
      double sa = 0, sb = 0;
      for (int64_t start = begin; start < end; start += kBlock) {
        const int64_t stop = std::min(end, start + kBlock);
        float la[kLanes] = {}, lb[kLanes] = {};
        auto element = [&](int64_t i, int j) {
          const float xi = px[i], gi = pg[i];
          const bool above = xi >= a, below = xi <= b, inside = !above && !below;
          const float u = (xi - b) / delta;
          const float err = (round_even_small(u) - u) * inv_levels;  // (round(u) - u) / N
          pgx[i] = inside ? gi : 0.0f;
          la[j] += above ? gi : (inside ? gi * err : 0.0f);
          lb[j] += below ? gi : (inside ? -gi * err : 0.0f);
        };
        int64_t i = start;
        for (; i + kLanes <= stop; i += kLanes)
          for (int j = 0; j < kLanes; ++j) element(i + j, j);
        for (int j = 0; i < stop; ++i, ++j) element(i, j);
        for (int j = 0; j < kLanes; ++j) sa += la[j], sb += lb[j];
      }
      const size_t slot = static_cast<size_t>(at::get_thread_num());
      ga[slot] += sa;
      gb[slot] += sb;
    });
    double sa = 0, sb = 0;
    for (size_t t = 0; t < ga.size(); ++t) sa += ga[t], sb += gb[t];
    return {gx, torch::full({}, sa, saved[1].options()).reshape(saved[1].sizes()),
            torch::full({}, sb, saved[2].options()).reshape(saved[2].sizes()), torch::Tensor()};
  }
};

// Mean and central moments m2, m3, m4 of one token's vector v[0..d). Sums go into 16 float lanes
// that the compiler vectorizes (a single double accumulator would serialise every add), combined
// in double. One pass collects the raw moments; when the mean is not small against the RMS
// (mean^2 > r2 / 64) the central moments would cancel badly, and a second pass recomputes them
// about the mean.
void token_moments(const float* v, int64_t d, double* m) {
  constexpr int kLanes = 16;
  const double n = static_cast<double>(d);
  float s1[kLanes] = {}, s2[kLanes] = {}, s3[kLanes] = {}, s4[kLanes] = {};
  double r1 = 0, r2 = 0, r3 = 0, r4 = 0;
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float x = v[i + j], x2 = x * x;
      s1[j] += x, s2[j] += x2, s3[j] += x2 * x, s4[j] += x2 * x2;
    }
  for (; i < d; ++i) {
    const double x = v[i], x2 = x * x;
    r1 += x, r2 += x2, r3 += x2 * x, r4 += x2 * x2;
  }
  for (int j = 0; j < kLanes; ++j) r1 += s1[j], r2 += s2[j], r3 += s3[j], r4 += s4[j];
  const double mu = r1 / n;
  r2 /= n, r3 /= n, r4 /= n;
  if (mu * mu <= r2 / 64) {
    const double mu2 = mu * mu;
    m[0] = mu;
    m[1] = r2 - mu2;
    m[2] = r3 - 3 * mu * r2 + 2 * mu2 * mu;
    m[3] = r4 - 4 * mu * r3 + 6 * mu2 * r2 - 3 * mu2 * mu2;
    return;
  }
  const float muf = static_cast<float>(mu);
  float c2s[kLanes] = {}, c3s[kLanes] = {}, c4s[kLanes] = {};
  for (i = 0; i + kLanes <= d; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float c = v[i + j] - muf, c2 = c * c;
      c2s[j] += c2, c3s[j] += c2 * c, c4s[j] += c2 * c2;
    }
  double m2 = 0, m3 = 0, m4 = 0;
  for (; i < d; ++i) {
    const double c = v[i] - muf, c2 = c * c;
    m2 += c2, m3 += c2 * c, m4 += c2 * c2;
  }
  for (int j = 0; j < kLanes; ++j) m2 += c2s[j], m3 += c3s[j], m4 += c4s[j];
  m[0] = muf, m[1] = m2 / n, m[2] = m3 / n, m[3] = m4 / n;
}

class KurtosisPenalty : public torch::autograd::Function<KurtosisPenalty> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& y_in, double eps) {
    // Token rows with a row stride: q/k/v and gate/up outputs are column slices of one GEMM's
    // output and are read in place (no copy).
    const int64_t d = y_in.size(-1), tokens = y_in.numel() / d;
    auto y = y_in.reshape({tokens, d});
    if (y.stride(1) != 1) y = y.contiguous();
    const int64_t ld = y.stride(0);
    // Per token: mean, m2, m3, m4 (m3 is needed by the backward pass).
    auto moments = torch::empty({tokens, 4}, torch::kFloat64);
    const float* py = y.data_ptr<float>();
    double* pm = moments.data_ptr<double>();
    std::vector<double> partial(static_cast<size_t>(at::get_num_threads()) + 1, 0.0);
    at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
      double sum_k = 0;
      for (int64_t t = begin; t < end; ++t) {
        double* m = pm + t * 4;
        token_moments(py + t * ld, d, m);
        sum_k += m[3] / (m[1] * m[1] + eps);
      }
      partial[static_cast<size_t>(at::get_thread_num())] += sum_k;
    });
    double total = 0;
    for (double p : partial) total += p;
    ctx->save_for_backward({y, moments});
    ctx->saved_data["shape"] = y_in.sizes();
    ctx->saved_data["eps"] = eps;
    return torch::full({}, total, y.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto& y = saved[0];
    const auto& moments = saved[1];
    const double eps = ctx->saved_data["eps"].toDouble();
    const double g = grad_out[0].item<double>();
    const int64_t d = y.size(1), tokens = y.size(0), ld = y.stride(0);
    auto gy = torch::empty({tokens, d}, y.options());
    const float* py = y.data_ptr<float>();
    const double* pm = moments.data_ptr<double>();
    float* pgy = gy.data_ptr<float>();
    // K = m4 / (m2^2 + eps);  dm4/dy_i = 4/d (c_i^3 - m3);  dm2/dy_i = 2/d c_i.
    at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const double* m = pm + t * 4;
        const double den = m[1] * m[1] + eps;
        const double a = 4.0 / static_cast<double>(d) / den;
        const double b = m[3] * 2.0 * m[1] * 2.0 / static_cast<double>(d) / (den * den);
        const float* v = py + t * ld;
        float* o = pgy + t * d;
        // In float: the terms are O(1) per element and the loop vectorizes.
        const float mu = static_cast<float>(m[0]), m3 = static_cast<float>(m[2]);
        const float ga = static_cast<float>(g * a), gb = static_cast<float>(g * b);
        for (int64_t i = 0; i < d; ++i) {
          const float c = v[i] - mu;
          o[i] = ga * (c * c * c - m3) - gb * c;
        }
      }
    });
    return {gy.view(ctx->saved_data["shape"].toIntVector()), torch::Tensor()};
  }
};

// The learned-clip quantizer from tensor operations (any device): forward and the same
// straight-through backward as LearnedClipQuant.
class LearnedClipQuantOps : public torch::autograd::Function<LearnedClipQuantOps> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& alpha,
                               const torch::Tensor& beta, int64_t bits) {
    const double a = alpha.item<double>(), b = beta.item<double>();
    OUTQ_CHECK(a > b, "learned clip: expected alpha > beta, found alpha ", a, " and beta ", b);
    const double delta = (a - b) / static_cast<double>((1 << bits) - 1);
    ctx->save_for_backward({x, alpha, beta});
    ctx->saved_data["bits"] = bits;
    return torch::round((x.clamp(b, a) - b) / delta) * delta + b;  // torch::round: half to even
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const double a = saved[1].item<double>(), b = saved[2].item<double>();
    const double levels = static_cast<double>((1 << ctx->saved_data["bits"].toInt()) - 1);
    const double delta = (a - b) / levels;
    const auto& g = grad_out[0];
    const auto above = x >= a, below = x <= b, inside = ~(above | below);
    const auto u = (x - b) / delta;
    const auto err = (torch::round(u) - u) / levels;
    const auto gx = torch::where(inside, g, torch::zeros_like(g));
    const auto ga = (torch::where(above, g, torch::zeros_like(g)) + gx * err).sum(torch::kFloat64);
    const auto gb = (torch::where(below, g, torch::zeros_like(g)) - gx * err).sum(torch::kFloat64);
    return {gx, ga.to(saved[1].options()).reshape(saved[1].sizes()), gb.to(saved[2].options()).reshape(saved[2].sizes()),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor learned_clip_quant_tensor_ops(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& beta,
                                            int bits) {
  OUTQ_CHECK(bits >= 2 && bits <= 8, "learned clip: bits: expected 2..8, found ", bits);
  OUTQ_CHECK(alpha.numel() == 1 && beta.numel() == 1, "learned clip: expected scalar alpha and beta");
  return LearnedClipQuantOps::apply(x, alpha, beta, bits);
}

torch::Tensor kurtosis_penalty_tensor_ops(const torch::Tensor& y, double eps) {
  OUTQ_CHECK(y.dim() >= 1, "kurtosis penalty: expected a tensor with a feature dimension");
  const auto c = y - y.mean(-1, true);
  const auto c2 = c * c;
  const auto m2 = c2.mean(-1), m4 = (c2 * c2).mean(-1);
  return (m4 / (m2 * m2 + eps)).sum();
}

torch::Tensor learned_clip_quant(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& beta,
                                 int bits) {
  OUTQ_CHECK(bits >= 2 && bits <= 8, "learned clip: bits: expected 2..8, found ", bits);
  if (!x.device().is_cpu()) return learned_clip_quant_tensor_ops(x, alpha, beta, bits);
  OUTQ_CHECK(x.scalar_type() == torch::kFloat32, "learned clip: expected a float32 tensor");
  OUTQ_CHECK(alpha.numel() == 1 && beta.numel() == 1, "learned clip: expected scalar alpha and beta");
  return LearnedClipQuant::apply(x, alpha, beta, bits);
}

torch::Tensor kurtosis_penalty(const torch::Tensor& y, double eps) {
  if (!y.device().is_cpu()) return kurtosis_penalty_tensor_ops(y, eps);
  OUTQ_CHECK(y.scalar_type() == torch::kFloat32 && y.dim() >= 1,
             "kurtosis penalty: expected a float32 tensor with a feature dimension");
  return KurtosisPenalty::apply(y, eps);
}

}  // namespace outq
