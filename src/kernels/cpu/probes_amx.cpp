// The AMX int8 probe loop: tdpbsud on four independent accumulator tiles from tiles loaded once
// (register-only, like the VNNI probes). Compiled with AMX flags for this file only;
// machine_limits.cpp checks that the CPU and the kernel allow AMX before calling it.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "../probes_internal.h"

namespace outq::kernels::detail {

int64_t probe_amx(int64_t iterations) {
  struct alignas(64) {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
  } config;
  for (int t = 0; t < 8; ++t) config.colsb[t] = 64, config.rows[t] = 16;
  _tile_loadconfig(&config);
  alignas(64) int8_t src[16 * 64];
  std::memset(src, 1, sizeof(src));
  _tile_loadd(4, src, 64);
  _tile_loadd(5, src, 64);
  _tile_loadd(6, src, 64);
  _tile_loadd(7, src, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t it = 0; it < iterations; ++it) {
    _tile_dpbsud(0, 4, 6);
    _tile_dpbsud(1, 4, 7);
    _tile_dpbsud(2, 5, 6);
    _tile_dpbsud(3, 5, 7);
  }
  alignas(64) int32_t out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}

}  // namespace outq::kernels::detail
