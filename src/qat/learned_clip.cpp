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
        po[i] = b + std::nearbyint((xc - b) / delta) * delta;
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
    at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
      double sa = 0, sb = 0;
      for (int64_t i = begin; i < end; ++i) {
        const float xi = px[i], gi = pg[i];
        if (xi >= a) {
          pgx[i] = 0;
          sa += gi;
        } else if (xi <= b) {
          pgx[i] = 0;
          sb += gi;
        } else {
          pgx[i] = gi;
          const float u = (xi - b) / delta;
          const double err = (static_cast<double>(std::nearbyint(u)) - u) / levels;  // round(u) - u, over N
          sa += gi * err;
          sb -= gi * err;
        }
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

class KurtosisPenalty : public torch::autograd::Function<KurtosisPenalty> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& y_in, double eps) {
    const auto y = y_in.contiguous();
    const int64_t d = y.size(-1), tokens = y.numel() / d;
    // Per token: mean, m2, m3, m4 (m3 is needed by the backward pass).
    auto moments = torch::empty({tokens, 4}, torch::kFloat64);
    const float* py = y.data_ptr<float>();
    double* pm = moments.data_ptr<double>();
    std::vector<double> partial(static_cast<size_t>(at::get_num_threads()) + 1, 0.0);
    at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
      double sum_k = 0;
      for (int64_t t = begin; t < end; ++t) {
        const float* v = py + t * d;
        double mu = 0;
        for (int64_t i = 0; i < d; ++i) mu += v[i];
        mu /= static_cast<double>(d);
        double m2 = 0, m3 = 0, m4 = 0;
        for (int64_t i = 0; i < d; ++i) {
          const double c = v[i] - mu, c2 = c * c;
          m2 += c2, m3 += c2 * c, m4 += c2 * c2;
        }
        m2 /= static_cast<double>(d), m3 /= static_cast<double>(d), m4 /= static_cast<double>(d);
        double* m = pm + t * 4;
        m[0] = mu, m[1] = m2, m[2] = m3, m[3] = m4;
        sum_k += m4 / (m2 * m2 + eps);
      }
      partial[static_cast<size_t>(at::get_thread_num())] += sum_k;
    });
    double total = 0;
    for (double p : partial) total += p;
    ctx->save_for_backward({y, moments});
    ctx->saved_data["eps"] = eps;
    return torch::full({}, total, y.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto& y = saved[0];
    const auto& moments = saved[1];
    const double eps = ctx->saved_data["eps"].toDouble();
    const double g = grad_out[0].item<double>();
    const int64_t d = y.size(-1), tokens = y.numel() / d;
    auto gy = torch::empty_like(y);
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
        const float* v = py + t * d;
        float* o = pgy + t * d;
        for (int64_t i = 0; i < d; ++i) {
          const double c = v[i] - m[0];
          o[i] = static_cast<float>(g * (a * (c * c * c - m[2]) - b * c));
        }
      }
    });
    return {gy, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor learned_clip_quant(const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& beta,
                                 int bits) {
  OUTQ_CHECK(bits >= 2 && bits <= 8, "learned clip: bits: expected 2..8, found ", bits);
  OUTQ_CHECK(x.scalar_type() == torch::kFloat32 && x.device().is_cpu(), "learned clip: expected a float32 CPU tensor");
  OUTQ_CHECK(alpha.numel() == 1 && beta.numel() == 1, "learned clip: expected scalar alpha and beta");
  return LearnedClipQuant::apply(x, alpha, beta, bits);
}

torch::Tensor kurtosis_penalty(const torch::Tensor& y, double eps) {
  OUTQ_CHECK(y.scalar_type() == torch::kFloat32 && y.device().is_cpu() && y.dim() >= 1,
             "kurtosis penalty: expected a float32 CPU tensor with a feature dimension");
  return KurtosisPenalty::apply(y, eps);
}

}  // namespace outq
