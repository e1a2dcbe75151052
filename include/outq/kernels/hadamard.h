// Hadamard transforms for rotations (online R4 on the down-projection input, and the matrices the
// offline rotations are built from), without LibTorch. A transform of length n = k * m, m a power
// of two, applies
//   M = (H_k (x) H_m) / sqrt(n),   y = M x  (index i = a * m + b, a < k, b < m)
// with H_m the Sylvester matrix (entry (i, j) = (-1)^popcount(i & j)) and H_k a small +-1 matrix
// (k = 1, or a Paley construction: k = q + 1 for a prime q = 3 mod 4, k = 2(q + 1) for a prime
// q = 1 mod 4). Each row: the fast Walsh-Hadamard butterflies on every length-m segment, then the
// k x k mix across segments (adds and subtracts in increasing a'), then one multiply by 1/sqrt(n).
// Every ISA performs the same float operations in the same order, so all paths agree bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "outq/kernels/isa.h"

namespace outq::kernels {

struct HadamardPlan {
  int64_t n = 0;  ///< transform length
  int64_t k = 1;  ///< order of the small factor H_k
  int64_t m = 0;  ///< n / k, a power of two
  std::vector<int8_t> small;  ///< H_k, k x k row-major, entries +-1 (k = 1: {1})
  float scale = 0;            ///< 1 / sqrt(n) in float32
};

/// The +-1 Hadamard matrix of order k from the Paley constructions (k = 1, 2 included), k x k
/// row-major; empty when outq has no construction for k.
std::vector<int8_t> small_hadamard(int64_t k);

/// The plan for length n with the smallest k that works; throws outq::Error naming n (and its
/// odd part) when no k * 2^j construction exists.
HadamardPlan hadamard_plan(int64_t n, const std::string& what = "Hadamard transform");

/// y = M x in place for `rows` rows of x (row stride ld >= n), float32, over the OpenMP team.
void hadamard_transform(const HadamardPlan& plan, float* x, int64_t rows, int64_t ld, Isa isa = isa_active());

}  // namespace outq::kernels
