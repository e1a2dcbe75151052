// Hadamard plans (Sylvester x Paley constructions), the transform driver (argument checks, rows
// over the OpenMP team) and the scalar reference every vector path must match bit for bit.
#include "outq/kernels/hadamard.h"

#include <omp.h>

#include <cmath>
#include <vector>

#include "hadamard_internal.h"
#include "outq/core/error.h"

namespace outq::kernels {
namespace {

bool is_prime(int64_t q) {
  if (q < 2) return false;
  for (int64_t d = 2; d * d <= q; ++d)
    if (q % d == 0) return false;
  return true;
}

bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// Legendre symbol of x modulo the odd prime q: 0, 1 (a nonzero square) or -1.
int legendre(int64_t x, int64_t q) {
  x = ((x % q) + q) % q;
  if (x == 0) return 0;
  int64_t r = 1, base = x, e = (q - 1) / 2;
  while (e > 0) {  // x^((q-1)/2) mod q is 1 or q - 1
    if (e & 1) r = r * base % q;
    base = base * base % q;
    e >>= 1;
  }
  return r == 1 ? 1 : -1;
}

// Paley I, order q + 1 (q prime, q = 3 mod 4): H = I + S, S = [[0, 1^T], [-1, Q]], Q[i][j] = chi(j - i)
// skew-symmetric.
std::vector<int8_t> paley1(int64_t q) {
  const int64_t k = q + 1;
  std::vector<int8_t> h(static_cast<size_t>(k * k));
  auto at = [&](int64_t i, int64_t j) -> int8_t& { return h[static_cast<size_t>(i * k + j)]; };
  for (int64_t j = 0; j < k; ++j) at(0, j) = 1;
  for (int64_t i = 1; i < k; ++i) {
    at(i, 0) = -1;
    for (int64_t j = 1; j < k; ++j) at(i, j) = static_cast<int8_t>(i == j ? 1 : legendre(j - i, q));
  }
  return h;
}

// Paley II, order 2(q + 1) (q prime, q = 1 mod 4): the symmetric conference matrix
// C = [[0, 1^T], [1, Q]] with each 0 replaced by [[1, -1], [-1, -1]] and each +-1 by +-[[1, 1], [1, -1]].
std::vector<int8_t> paley2(int64_t q) {
  const int64_t c = q + 1, k = 2 * c;
  std::vector<int8_t> h(static_cast<size_t>(k * k));
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) {
      const int e = i == j ? 0 : (i == 0 || j == 0) ? 1 : legendre(j - i, q);
      const int block[2][2] = {{e == 0 ? 1 : e, e == 0 ? -1 : e}, {e == 0 ? -1 : e, e == 0 ? -1 : -e}};
      for (int di = 0; di < 2; ++di)
        for (int dj = 0; dj < 2; ++dj) h[static_cast<size_t>((2 * i + di) * k + 2 * j + dj)] = static_cast<int8_t>(block[di][dj]);
    }
  return h;
}

}  // namespace

std::vector<int8_t> small_hadamard(int64_t k) {
  if (k == 1) return {1};
  if (k == 2) return {1, 1, 1, -1};
  if (k % 4 != 0) return {};
  if (is_prime(k - 1) && (k - 1) % 4 == 3) return paley1(k - 1);
  if (k % 2 == 0 && is_prime(k / 2 - 1) && (k / 2 - 1) % 4 == 1) return paley2(k / 2 - 1);
  return {};
}

HadamardPlan hadamard_plan(int64_t n, const std::string& what) {
  OUTQ_CHECK(n > 0, what, ": expected a positive length, found ", n);
  int64_t odd = n, twos = 0;
  while (odd % 2 == 0) odd /= 2, ++twos;
  for (int64_t k = odd; n % k == 0; k *= 2) {
    std::vector<int8_t> small = small_hadamard(k);
    if (small.empty()) continue;
    HadamardPlan p;
    p.n = n;
    p.k = k;
    p.m = n / k;
    p.small = std::move(small);
    p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
    return p;
  }
  throw Error(::outq::detail::concat(what, ": no Hadamard matrix of order ", n, " = ", odd, " x 2^", twos,
                      " (outq builds 2^j, and k x 2^j with k = q + 1 for a prime q = 3 mod 4 or k = 2(q + 1) for a prime "
                      "q = 1 mod 4, e.g. 12, 20, 28, 36, 44, 60, 76); expected a width with such a factorisation"));
}

namespace detail {

void fwht_ref(float* x, int64_t m) {
  for (int64_t h = 1; h < m; h *= 2)
    for (int64_t i = 0; i < m; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

void hadamard_rows_ref(const HadamardPlan& p, float* x, int64_t r0, int64_t r1, int64_t ld) {
  thread_local std::vector<float> z;
  z.resize(static_cast<size_t>(p.n));
  for (int64_t r = r0; r < r1; ++r) {
    float* row = x + r * ld;
    for (int64_t a = 0; a < p.k; ++a) fwht_ref(row + a * p.m, p.m);
    if (p.k == 1) {
      for (int64_t i = 0; i < p.n; ++i) row[i] *= p.scale;
      continue;
    }
    std::copy(row, row + p.n, z.begin());
    for (int64_t a = 0; a < p.k; ++a) {
      const int8_t* s = p.small.data() + a * p.k;
      for (int64_t b = 0; b < p.m; ++b) {
        float acc = s[0] > 0 ? z[static_cast<size_t>(b)] : -z[static_cast<size_t>(b)];
        for (int64_t c = 1; c < p.k; ++c) {
          const float v = z[static_cast<size_t>(c * p.m + b)];
          acc = s[c] > 0 ? acc + v : acc - v;
        }
        row[a * p.m + b] = acc * p.scale;
      }
    }
  }
}

}  // namespace detail

void hadamard_transform(const HadamardPlan& plan, float* x, int64_t rows, int64_t ld, Isa isa) {
  OUTQ_CHECK(plan.n > 0 && plan.k * plan.m == plan.n && static_cast<int64_t>(plan.small.size()) == plan.k * plan.k &&
                 is_power_of_two(plan.m),
             "Hadamard transform: inconsistent plan (n = ", plan.n, ", k = ", plan.k, ", m = ", plan.m,
             "); expected one from hadamard_plan()");
  OUTQ_CHECK(rows >= 0 && ld >= plan.n && (rows == 0 || x != nullptr), "Hadamard transform: expected rows >= 0 and a row "
             "stride of at least n = ", plan.n, ", found rows = ", rows, ", stride ", ld);
  OUTQ_CHECK(isa_supported(isa), "Hadamard transform: this CPU cannot run the ", isa_name(isa), " kernels");
  if (rows == 0) return;
  auto* fn = isa == Isa::kAmxInt8 || isa == Isa::kAvx512Vnni ? detail::hadamard_rows_avx512
             : isa == Isa::kAvx2 || isa == Isa::kAvxVnni   ? detail::hadamard_rows_avx2
                                                             : detail::hadamard_rows_ref;
  const bool parallel = rows > 1 && rows * plan.n >= (int64_t{1} << 16);
#pragma omp parallel if (parallel)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    if (r0 < r1) fn(plan, x, r0, r1, ld);
  }
}

}  // namespace outq::kernels
