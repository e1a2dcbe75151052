// AMX int8 GEMM: 16-row tiles of int8 activations times 16-channel tiles of uint8 weights
// (tdpbsud), four int32 accumulator tiles per 32 x 32 output tile, the same group epilogue as the
// other paths in AVX-512 float FMAs (see gemm.h), so the results equal them bit for bit. The
// packed weight layout already is the tile layout (per quad of input columns, 16 channels x 4
// bytes, 64-byte aligned), so int8 weight tiles load in place; int4 weights are unpacked per K
// step into an L1 buffer (reading half the bytes of int8 from memory). Threads split the rows.
// Loop order: row block (activations in L2, packed tile by tile) -> column pair -> group
// -> K step of 512 columns (the column pair's weights stay in L1) -> row tile pairs, with the
// int32 sums parked in memory between K steps. Each row pair's epilogue runs right after its last
// K step, behind the next pair's tile products, so the vector work overlaps the tile unit's.
// Used when the groups are whole 64-column chunks and there are at least 16 rows; otherwise the
// AVX-512 VNNI path runs. Compiled with -mamx-tile/-mamx-int8 only for this file.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../gemm_internal.h"
#include "avx512_common.h"

namespace outq::kernels::detail {
namespace {

constexpr int kTileRows = 16;                         // rows of an activation tile
constexpr int64_t kChunk = 64;                        // input columns per tile step (16 quads)
constexpr int64_t kActivationBlockBytes = 512 << 10;  // activation rows per pass (with a column pair's weights, in L2)
constexpr int64_t kDepthQuads = 128;                  // K step (512 columns): a weight tile pair stays in L1

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

// Accumulates RT row tiles x NB column blocks over quads [q0, q1) onto d[RT * 16][32] (int32, row
// stride 32), starting from zero when `first`. Activation tiles are packed like the weights: per
// 64-column chunk 16 rows x 64 bytes, so quad q of a tile starts at a + 64 q.
template <int RT, int NB>
void dot_tiles(const int8_t* const* a, const uint8_t* const* w, int64_t q0, int64_t q1, bool first, int32_t* d) {
  constexpr int64_t ld = 32 * sizeof(int32_t);
  if (first) {
    _tile_zero(0);
    if (NB > 1) _tile_zero(1);
    if (RT > 1) _tile_zero(2);
    if (RT > 1 && NB > 1) _tile_zero(3);
  } else {
    _tile_loadd(0, d, ld);
    if (NB > 1) _tile_loadd(1, d + 16, ld);
    if (RT > 1) _tile_loadd(2, d + 16 * 32, ld);
    if (RT > 1 && NB > 1) _tile_loadd(3, d + 16 * 32 + 16, ld);
  }
  for (int64_t q = q0; q < q1; q += kChunk / 4) {
    // Each product is issued as soon as its two tiles are loaded.
    _tile_loadd(6, w[0] + 64 * q, 64);
    _tile_loadd(4, a[0] + 64 * q, 64);
    _tile_dpbsud(0, 4, 6);
    if (NB > 1) {
      _tile_loadd(7, w[1] + 64 * q, 64);
      _tile_dpbsud(1, 4, 7);
    }
    if (RT > 1) {
      _tile_loadd(5, a[1] + 64 * q, 64);
      _tile_dpbsud(2, 5, 6);
      if (NB > 1) _tile_dpbsud(3, 5, 7);
    }
  }
  _tile_stored(0, d, ld);
  if (NB > 1) _tile_stored(1, d + 16, ld);
  if (RT > 1) _tile_stored(2, d + 16 * 32, ld);
  if (RT > 1 && NB > 1) _tile_stored(3, d + 16 * 32 + 16, ld);
}

// Row tile pairs of the row block, each followed by `after(t0, rows)` for the pair before it (so
// its epilogue's vector work overlaps the tile products just issued) and finally for the last.
template <int NB, class After>
void dot_rows(const int8_t* abuf, int64_t tile_bytes, int64_t rows, const uint8_t* const* w, int64_t q0, int64_t q1,
              bool first, int32_t* d, const After& after) {
  int64_t prev = -1;
  for (int64_t t0 = 0; t0 < rows; t0 += 32) {
    const int8_t* a[2] = {abuf + t0 / kTileRows * tile_bytes, abuf + (t0 / kTileRows + 1) * tile_bytes};
    if (rows - t0 > kTileRows)
      dot_tiles<2, NB>(a, w, q0, q1, first, d + t0 * 32);
    else
      dot_tiles<1, NB>(a, w, q0, q1, first, d + t0 * 32);
    if (prev >= 0) after(prev, int64_t{32});
    prev = t0;
  }
  if (prev >= 0) after(prev, std::min<int64_t>(32, rows - prev));
}

// Group g's epilogue for rows [m0, m0 + rows) and column blocks b, b + NB - 1: f += sw * (fma(-za,
// Wc, D - zw A)), with D in d and f in f (both row stride 32).
template <int NB>
void group_epilogue(const GemmArguments& args, int64_t m0, int64_t rows, int64_t b, int64_t g, const int32_t* d, float* f) {
  const QuantizedActivations& qa = *args.a;
  const PackedWeights& pw = *args.w;
  const int64_t groups = pw.groups();
  for (int j = 0; j < NB; ++j) {
    const GroupWeights gw = group_weights(pw, b + j, g);
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 t = group_term(_mm512_load_si512(d + r * 32 + 16 * j), gw.zw, gw.wc,
                                  qa.group_sum[(m0 + r) * groups + g], qa.zero[m0 + r]);
      float* fr = f + r * 32 + 16 * j;
      _mm512_store_ps(fr, _mm512_fmadd_ps(gw.sw, t, g == 0 ? _mm512_setzero_ps() : _mm512_load_ps(fr)));
    }
  }
}

// y = fma(sx, f, bias) for rows [m0, m0 + rows) and column blocks b, b + NB - 1.
template <int NB>
void store_rows(const GemmArguments& args, int64_t m0, int64_t rows, int64_t b, const float* f) {
  const PackedWeights& pw = *args.w;
  for (int j = 0; j < NB; ++j) {
    const int64_t n0 = (b + j) * PackedWeights::kBlock;
    const int64_t count = std::min<int64_t>(PackedWeights::kBlock, pw.n - n0);
    const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
    const __m512 bias = args.bias ? _mm512_maskz_loadu_ps(mask, args.bias + n0) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(args.a->scale[m0 + r]), _mm512_load_ps(f + r * 32 + 16 * j), bias);
      _mm512_mask_storeu_ps(args.y + (m0 + r) * args.ldy + n0, mask, y);
    }
  }
}

// One group (per-channel weights): y = fma(sx, fma(sw, t, 0), bias) straight from the int32 sums
// (the same operations as group_epilogue then store_rows, without the float buffer).
template <int NB>
void single_group_rows(const GemmArguments& args, int64_t m0, int64_t rows, int64_t b, const int32_t* d) {
  const QuantizedActivations& qa = *args.a;
  const PackedWeights& pw = *args.w;
  __m512 bias[NB];
  GroupWeights gw[NB];
  __mmask16 mask[NB];
  for (int j = 0; j < NB; ++j) {
    const int64_t n0 = (b + j) * PackedWeights::kBlock;
    mask[j] = static_cast<__mmask16>((1u << std::min<int64_t>(PackedWeights::kBlock, pw.n - n0)) - 1);
    bias[j] = args.bias ? _mm512_maskz_loadu_ps(mask[j], args.bias + n0) : _mm512_setzero_ps();
    gw[j] = group_weights(pw, b + j, 0);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 sx = _mm512_set1_ps(qa.scale[m0 + r]);
    float* y = args.y + (m0 + r) * args.ldy + b * PackedWeights::kBlock;
    for (int j = 0; j < NB; ++j) {
      const __m512 t = group_term(_mm512_load_si512(d + r * 32 + 16 * j), gw[j].zw, gw[j].wc, qa.group_sum[m0 + r], qa.zero[m0 + r]);
      const __m512 acc = _mm512_fmadd_ps(gw[j].sw, t, _mm512_setzero_ps());
      _mm512_mask_storeu_ps(y + 16 * j, mask[j], _mm512_fmadd_ps(sx, acc, bias[j]));
    }
  }
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

template <int NB>
void column_pair(const GemmArguments& args, int64_t r0, int64_t rows, const int8_t* abuf, int64_t tile_bytes, int64_t b,
                 const uint8_t* const* w, uint8_t* wl, int32_t* d, float* f) {
  const PackedWeights& pw = *args.w;
  const int64_t groups = pw.groups();
  const auto nothing = [](int64_t, int64_t) {};
  for (int64_t g = 0; g < groups; ++g) {
    int64_t q0, q1;
    group_quads(pw, g, &q0, &q1);
    // The epilogue of each row pair runs after its last K step, while the next pair's products run.
    const auto finish = [&](int64_t t0, int64_t n) {
      if (groups == 1) return single_group_rows<NB>(args, r0 + t0, n, b, d + t0 * 32);
      group_epilogue<NB>(args, r0 + t0, n, b, g, d + t0 * 32, f + t0 * 32);
      if (g + 1 == groups) store_rows<NB>(args, r0 + t0, n, b, f + t0 * 32);
    };
    for (int64_t k0 = q0; k0 < q1; k0 += kDepthQuads) {
      const int64_t k1 = std::min(q1, k0 + kDepthQuads);
      const uint8_t* wk[2] = {w[0], w[1]};
      if (pw.bits == 4)  // this K step of int4 weights unpacked to the int8 layout, in L1
        for (int j = 0; j < NB; ++j) {
          uint8_t* u = wl + j * kDepthQuads * 64;
          unpack_w4(w[j] + 32 * k0, (k1 - k0) / 2, u);
          wk[j] = u - 64 * k0;
        }
      if (k1 == q1)
        dot_rows<NB>(abuf, tile_bytes, rows, wk, k0, k1, k0 == q0, d, finish);
      else
        dot_rows<NB>(abuf, tile_bytes, rows, wk, k0, k1, k0 == q0, d, nothing);
    }
  }
}

}  // namespace

bool amx_applies(const GemmArguments& args) {
  const PackedWeights& pw = *args.w;
  if (args.a->m < kTileRows || pw.k_padded % kChunk != 0) return false;
  for (int64_t g = 1; g < pw.groups(); ++g)
    if (pw.group_begin(g) % kChunk != 0) return false;
  return true;
}

namespace {
// Rows [m_begin, m_end) x column blocks [b0, b1).
void amx_part(const GemmArguments& args, int64_t m_begin, int64_t m_end, int64_t b0, int64_t b1) {
  const QuantizedActivations& qa = *args.a;
  const PackedWeights& pw = *args.w;
  const int64_t kp = pw.k_padded;
  thread_local std::vector<uint8_t, CacheAligned<uint8_t>> wl(2 * kDepthQuads * 64);
  thread_local std::vector<int8_t> apack;
  thread_local std::vector<int32_t> dbuf;
  thread_local std::vector<float> fbuf;
  configure_tiles();
  const int64_t tile_bytes = kTileRows * kp;
  const int64_t row_block = std::max<int64_t>(32, (kActivationBlockBytes / kp) / 32 * 32);
  dbuf.resize(row_block * 32 + 16);
  fbuf.resize(row_block * 32 + 16);
  int32_t* d = dbuf.data() + (16 - reinterpret_cast<uintptr_t>(dbuf.data()) / 4 % 16) % 16;
  float* f = fbuf.data() + (16 - reinterpret_cast<uintptr_t>(fbuf.data()) / 4 % 16) % 16;
  for (int64_t r0 = m_begin; r0 < m_end; r0 += row_block) {
    const int64_t r1 = std::min(m_end, r0 + row_block);
    const int64_t tiles = (r1 - r0 + kTileRows - 1) / kTileRows;
    apack.resize(tiles * tile_bytes + 64);
    int8_t* abuf = apack.data() + (64 - reinterpret_cast<uintptr_t>(apack.data()) % 64) % 64;
    pack_tiles(qa, r0, r1, abuf);
    for (int64_t b = b0; b < b1; b += 2) {
      // int8 blocks are read in place (64-byte aligned, whole lines); int4 ones are unpacked per
      // K step into wl.
      const uint8_t* block = pw.data.data() + b * pw.block_bytes();
      const uint8_t* w[2] = {block, b + 1 < b1 ? block + pw.block_bytes() : nullptr};
      if (b + 1 < b1)
        column_pair<2>(args, r0, r1 - r0, abuf, tile_bytes, b, w, wl.data(), d, f);
      else
        column_pair<1>(args, r0, r1 - r0, abuf, tile_bytes, b, w, wl.data(), d, f);
    }
  }
  _tile_release();
}
}  // namespace

void gemm_blocks_amx(const GemmArguments& args, int64_t b0, int64_t b1) {
  if (!amx_applies(args)) return gemm_blocks_avx512(args, b0, b1);
  amx_part(args, 0, args.a->m, b0, b1);
}

void gemm_rows_amx(const GemmArguments& args, int64_t r0, int64_t r1) { amx_part(args, r0, r1, 0, args.w->blocks()); }

}  // namespace outq::kernels::detail
