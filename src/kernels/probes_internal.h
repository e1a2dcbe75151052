// Register-only probe loops per ISA (each in a file compiled with that ISA's flags; see
// machine_limits.cpp). Each returns a value derived from its accumulators so the work cannot be
// elided; `iterations` rounds of 12 independent accumulators (the AVX2 multi-instruction steps:
// kStepAccumulators; AMX: 4 tiles).
#pragma once

#include <cstdint>

namespace outq::kernels::detail {

constexpr int kStepAccumulators = 8;              // the multi-instruction AVX2 steps' independent sums
int64_t probe_int8dot_avx2(int64_t iterations);   // 8 x (vpmaddubsw, vpmaddwd, vpaddd), 32 multiply-adds each
int64_t probe_int8sign_avx2(int64_t iterations);  // 8 x (vpsignb, vpmaddubsw, vpmaddwd, vpaddd), 32 each
int64_t probe_maddubs_avx2(int64_t iterations);   // 12 x vpmaddubsw, 32 each
int64_t probe_maddwd_avx2(int64_t iterations);    // 8 x (vpmaddwd, vpaddd), 16 each
float probe_fma_ymm(int64_t iterations);          // 12 x vfmadd ymm, 8 each
int64_t probe_read_ymm(const uint8_t* data, int64_t bytes);
int64_t probe_vnni_ymm(int64_t iterations);       // 12 x 256-bit vpdpbusd, 32 each
int64_t probe_vnni_zmm(int64_t iterations);       // 12 x 512-bit vpdpbusd, 64 each
float probe_fma_zmm(int64_t iterations);          // 12 x vfmadd zmm, 16 each
int64_t probe_amx(int64_t iterations);            // 4 x tdpbsud, 16 x 16 x 64 each

}  // namespace outq::kernels::detail
