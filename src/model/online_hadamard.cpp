// OnlineHadamard: the fast float32 transform through the kernels, a dense product otherwise.
#include "outq/model/online_hadamard.h"

#include <cmath>

#include "outq/core/error.h"

namespace outq {

torch::Tensor hadamard_matrix(const kernels::HadamardPlan& plan) {
  auto small = torch::empty({plan.k, plan.k}, torch::kFloat64);
  auto s = small.accessor<double, 2>();
  for (int64_t a = 0; a < plan.k; ++a)
    for (int64_t c = 0; c < plan.k; ++c) s[a][c] = plan.small[static_cast<size_t>(a * plan.k + c)];
  auto sylvester = torch::empty({plan.m, plan.m}, torch::kFloat64);
  auto h = sylvester.accessor<double, 2>();
  for (int64_t i = 0; i < plan.m; ++i)
    for (int64_t j = 0; j < plan.m; ++j) h[i][j] = __builtin_popcountll(static_cast<unsigned long long>(i & j)) % 2 ? -1.0 : 1.0;
  return torch::kron(small, sylvester) / std::sqrt(static_cast<double>(plan.n));
}

OnlineHadamard::OnlineHadamard(int64_t n, const std::string& what) : plan_(kernels::hadamard_plan(n, what)) {}

const torch::Tensor& OnlineHadamard::matrix() const {
  std::call_once(matrix_once_, [this] { matrix_ = hadamard_matrix(plan_); });
  return matrix_;
}

torch::Tensor OnlineHadamard::forward(const torch::Tensor& x) const {
  OUTQ_CHECK(x.size(-1) == plan_.n, "Hadamard transform: expected a last dimension of ", plan_.n, ", found ", x.sizes());
  if (x.scalar_type() != torch::kFloat32 || (x.requires_grad() && torch::GradMode::is_enabled())) {
    return torch::matmul(x, matrix().t().to(x.scalar_type()));
  }
  auto y = x.clone(at::MemoryFormat::Contiguous);  // one copy, contiguous
  kernels::hadamard_transform(plan_, y.data_ptr<float>(), y.numel() / plan_.n, plan_.n);
  return y;
}

}  // namespace outq
