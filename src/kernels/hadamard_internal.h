// Shared by the Hadamard transform implementations: the per-ISA entry points and the scalar
// pieces the vector paths fall back on (segments shorter than a vector).
#pragma once

#include <cstdint>

#include "outq/kernels/hadamard.h"

namespace outq::kernels::detail {

/// In-place Walsh-Hadamard butterflies (no scaling) on x[0, m), m a power of two.
void fwht_ref(float* x, int64_t m);
/// y = M x for rows [r0, r1) of x (stride ld), in place.
void hadamard_rows_ref(const HadamardPlan& plan, float* x, int64_t r0, int64_t r1, int64_t ld);
void hadamard_rows_avx2(const HadamardPlan& plan, float* x, int64_t r0, int64_t r1, int64_t ld);
void hadamard_rows_avx512(const HadamardPlan& plan, float* x, int64_t r0, int64_t r1, int64_t ld);

}  // namespace outq::kernels::detail
