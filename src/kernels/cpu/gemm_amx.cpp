// AMX int8 GEMM: 16-row tiles of int8 activations times 16-channel tiles of uint8 weights
// (tdpbsud), four int32 accumulator tiles per 32 x 32 output tile, the same group epilogue as the
// other paths in AVX-512 float FMAs (see gemm.h), so the results equal them bit for bit. The
// packed weight layout already is the tile layout (per quad of input columns, 16 channels x 4
// bytes), so weight tiles load straight from it; int4 weights are unpacked once per call.
// Used when the groups are whole 64-column chunks and there are at least 16 rows; otherwise the
// AVX-512 VNNI path runs. Compiled with -mamx-tile/-mamx-int8 only for this file.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../gemm_internal.h"

namespace outq::kernels::detail {
namespace {

constexpr int kTileRows = 16;                         // rows of an activation tile
constexpr int64_t kChunk = 64;                        // input columns per tile step (16 quads)
constexpr int64_t kActivationBlockBytes = 512 << 10;  // activation rows kept in L2 per pass

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// tmm0..3: int32 accumulators (row tile r, column block j) at 2 r + j; tmm4, 5: activation tiles;
// tmm6, 7: weight tiles. All 16 rows x 64 bytes.
void configure_tiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.colsb[t] = 64, c.rows[t] = 16;
  _tile_loadconfig(&c);
}

// Integer dot products of RT row tiles and NB column blocks over quads [q0, q1), stored to
// d[RT * 16][32] (int32). Activation tiles are packed like the weights: per 64-column chunk,
// 16 rows x 64 bytes contiguous, so quad q of a tile starts at a + 64 q.
template <int RT, int NB>
void dot_tiles(const int8_t* const* a, const uint8_t* const* w, int64_t q0, int64_t q1, int32_t* d) {
  _tile_zero(0);
  if (NB > 1) _tile_zero(1);
  if (RT > 1) _tile_zero(2);
  if (RT > 1 && NB > 1) _tile_zero(3);
  for (int64_t q = q0; q < q1; q += kChunk / 4) {
    _tile_loadd(4, a[0] + 64 * q, 64);
    if (RT > 1) _tile_loadd(5, a[1] + 64 * q, 64);
    _tile_loadd(6, w[0] + 64 * q, 64);
    if (NB > 1) _tile_loadd(7, w[1] + 64 * q, 64);
    _tile_dpbsud(0, 4, 6);
    if (NB > 1) _tile_dpbsud(1, 4, 7);
    if (RT > 1) _tile_dpbsud(2, 5, 6);
    if (RT > 1 && NB > 1) _tile_dpbsud(3, 5, 7);
  }
  constexpr int64_t ld = 32 * sizeof(int32_t);
  _tile_stored(0, d, ld);
  if (NB > 1) _tile_stored(1, d + 16, ld);
  if (RT > 1) _tile_stored(2, d + 16 * 32, ld);
  if (RT > 1 && NB > 1) _tile_stored(3, d + 16 * 32 + 16, ld);
}

// Rows [m0, m0 + rows) (at most 32; the packed activation tiles a[0], a[1] hold them, zero rows
// beyond) for column blocks b .. b + NB - 1.
template <int RT, int NB>
void tile(const GemmArguments& args, int64_t m0, int64_t rows, const int8_t* const* a, int64_t b,
          const uint8_t* const* w) {
  const QuantizedActivations& qa = *args.a;
  const PackedWeights& pw = *args.w;
  const int64_t groups = pw.groups();
  alignas(64) int32_t d[32 * 32];
  __m512 facc[32][NB];
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < NB; ++j) facc[r][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    int64_t q0, q1;
    group_quads(pw, g, &q0, &q1);
    dot_tiles<RT, NB>(a, w, q0, q1, d);
    for (int j = 0; j < NB; ++j) {
      const int64_t i = pw.at((b + j) * PackedWeights::kBlock, g);
      const __m512 sw = _mm512_loadu_ps(pw.scale.data() + i);
      const __m512i zw = _mm512_loadu_si512(pw.zero.data() + i);
      const __m512 wc = _mm512_cvtepi32_ps(_mm512_loadu_si512(pw.sum.data() + i));
      for (int64_t r = 0; r < rows; ++r) {
        const __m512i acc = _mm512_load_si512(d + r * 32 + 16 * j);
        const __m512i corr =
            _mm512_sub_epi32(acc, _mm512_mullo_epi32(zw, _mm512_set1_epi32(qa.group_sum[(m0 + r) * groups + g])));
        const __m512 t = _mm512_fmadd_ps(_mm512_set1_ps(-qa.zero[m0 + r]), wc, _mm512_cvtepi32_ps(corr));
        facc[r][j] = _mm512_fmadd_ps(sw, t, facc[r][j]);
      }
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int64_t n0 = (b + j) * PackedWeights::kBlock;
    const int64_t count = std::min<int64_t>(PackedWeights::kBlock, pw.n - n0);
    const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
    const __m512 bias = args.bias ? _mm512_maskz_loadu_ps(mask, args.bias + n0) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(qa.scale[m0 + r]), facc[r][j], bias);
      _mm512_mask_storeu_ps(args.y + (m0 + r) * args.ldy + n0, mask, y);
    }
  }
}

template <int NB>
void tile_rows(const GemmArguments& args, int64_t m0, int64_t rows, const int8_t* const* a, int64_t b,
               const uint8_t* const* w) {
  if (rows > kTileRows)
    tile<2, NB>(args, m0, rows, a, b, w);
  else
    tile<1, NB>(args, m0, rows, a, b, w);
}

// Packs rows [r0, r1) into 16-row tiles (rows past r1 are zero): tile t, chunk c at
// out + (t * chunks + c) * 1024, 16 rows x 64 bytes.
void pack_tiles(const QuantizedActivations& qa, int64_t r0, int64_t r1, int8_t* out) {
  const int64_t kp = qa.k_padded, chunks = kp / kChunk;
  const int64_t tiles = (r1 - r0 + kTileRows - 1) / kTileRows;
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t c = 0; c < chunks; ++c) {
      int8_t* dst = out + (t * chunks + c) * kTileRows * kChunk;
      for (int64_t r = 0; r < kTileRows; ++r) {
        const int64_t row = r0 + t * kTileRows + r;
        if (row < r1)
          std::memcpy(dst + r * kChunk, qa.codes.data() + row * kp + c * kChunk, kChunk);
        else
          std::memset(dst + r * kChunk, 0, kChunk);
      }
    }
}

void unpack_w4(const uint8_t* src, int64_t octets, uint8_t* dst) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  for (int64_t o = 0; o < octets; ++o) {
    const __m512i v = _mm512_loadu_si512(src + 64 * o);
    _mm512_storeu_si512(dst + 128 * o, _mm512_and_si512(v, mask));
    _mm512_storeu_si512(dst + 128 * o + 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
  }
}

}  // namespace

bool amx_applies(const GemmArguments& args) {
  const PackedWeights& pw = *args.w;
  return args.a->m >= kTileRows && pw.k_padded % kChunk == 0 && (pw.groups() == 1 || pw.group_size % kChunk == 0);
}

void gemm_blocks_amx(const GemmArguments& args, int64_t b0, int64_t b1) {
  if (!amx_applies(args)) return gemm_blocks_avx512(args, b0, b1);
  const QuantizedActivations& qa = *args.a;
  const PackedWeights& pw = *args.w;
  const int64_t m = qa.m, kp = pw.k_padded;
  const int64_t block_elems = PackedWeights::kBlock * kp;
  thread_local std::vector<uint8_t> unpacked;
  // This thread's weight blocks in one 64-byte aligned buffer (int4 unpacked to the int8 layout):
  // tile loads from aligned rows are faster, and the copy is small next to the product.
  unpacked.resize((b1 - b0) * block_elems + 64);
  uint8_t* wbuf = unpacked.data() + (64 - reinterpret_cast<uintptr_t>(unpacked.data()) % 64) % 64;
  for (int64_t b = b0; b < b1; ++b) {
    if (pw.bits == 4)
      unpack_w4(pw.data.data() + b * pw.block_bytes(), kp / 8, wbuf + (b - b0) * block_elems);
    else
      std::memcpy(wbuf + (b - b0) * block_elems, pw.data.data() + b * pw.block_bytes(), block_elems);
  }
  auto weights = [&](int64_t b) { return wbuf + (b - b0) * block_elems; };
  configure_tiles();
  thread_local std::vector<int8_t> apack;
  const int64_t tile_bytes = kTileRows * kp;
  const int64_t row_block = std::max<int64_t>(32, (kActivationBlockBytes / kp) / 32 * 32);
  for (int64_t r0 = 0; r0 < m; r0 += row_block) {
    const int64_t r1 = std::min(m, r0 + row_block);
    const int64_t tiles = (r1 - r0 + kTileRows - 1) / kTileRows;
    apack.resize((tiles + 1) * tile_bytes + 64);  // + one zero tile: the partner of an odd last tile
    int8_t* abuf = apack.data() + (64 - reinterpret_cast<uintptr_t>(apack.data()) % 64) % 64;
    pack_tiles(qa, r0, r1, abuf);
    std::memset(abuf + tiles * tile_bytes, 0, tile_bytes);
    for (int64_t b = b0; b < b1; b += 2) {
      const int nb = b + 1 < b1 ? 2 : 1;
      const uint8_t* w[2] = {weights(b), nb == 2 ? weights(b + 1) : nullptr};
      for (int64_t t0 = r0; t0 < r1; t0 += 32) {
        const int64_t rows = std::min<int64_t>(32, r1 - t0);
        const int8_t* a[2] = {abuf + (t0 - r0) / kTileRows * tile_bytes, abuf + ((t0 - r0) / kTileRows + 1) * tile_bytes};
        if (nb == 2)
          tile_rows<2>(args, t0, rows, a, b, w);
        else
          tile_rows<1>(args, t0, rows, a, b, w);
      }
    }
  }
  _tile_release();
}

}  // namespace outq::kernels::detail
