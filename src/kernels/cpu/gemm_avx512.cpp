// AVX-512 VNNI GEMM: tiles of up to 6 rows x 32 channels (two column blocks), 12 int32
// accumulators fed by vpdpbusd (weights as the unsigned operand, a broadcast quad of int8
// activations as the signed one), a group epilogue in float FMAs (see gemm.h). Activation rows are
// processed in blocks that stay in L2, packed quad-major per tile. int4 weights are unpacked once
// per call into the int8 layout when there are enough rows to reuse them, else nibble-split in
// registers (GEMV / decode). Compiled with -mavx512f/bw/vl/vnni only
// for this file; never called unless CPUID says so.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "../gemm_internal.h"
#include "avx512_common.h"

namespace outq::kernels::detail {
namespace {

constexpr int kRows = 6;           // rows per tile
constexpr int64_t kUnpackRows = 8; // unpack int4 panels when at least this many rows reuse them
constexpr int64_t kActivationBlockBytes = 512 << 10;  // activation rows kept in L2 per pass

// acc += dot products of unsigned bytes u and signed bytes s, in place. (GCC 12 compiles the
// intrinsic with a register copy before and after every instruction when the accumulators live in
// an array, which halves the rate; the asm keeps each accumulator in its register.)
inline void dpbusd(__m512i& acc, __m512i u, __m512i s) { asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s)); }

inline __m512i broadcast_quad(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Integer dot products over quads [q0, q1) for R rows and NB blocks in the int8 layout. `a` is the
// tile's activations packed quad-major (quad q of row r at a + 4 (q R + r)): one sequential stream.
template <int R, int NB>
inline void dot_w8(const int8_t* a, const uint8_t* const* w, int64_t q0, int64_t q1, __m512i (&acc)[R][NB]) {
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  for (int64_t q = q0; q < q1; ++q) {
    __m512i b[NB];
    for (int j = 0; j < NB; ++j) b[j] = _mm512_loadu_si512(w[j] + 64 * q);
    for (int r = 0; r < R; ++r) {
      const __m512i av = broadcast_quad(a + 4 * (q * R + r));
      for (int j = 0; j < NB; ++j) dpbusd(acc[r][j], b[j], av);
    }
  }
}

// The same from packed int4 (each 64-byte octet: low nibbles = first quad, high = second).
template <int R, int NB>
inline void dot_w4(const int8_t* a, const uint8_t* const* w, int64_t q0, int64_t q1, __m512i (&acc)[R][NB]) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  // Low and high nibbles accumulate separately (two dependency chains per accumulator, which
  // matters for a single row, where there are only NB accumulators), summed at the end.
  __m512i acc_hi[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = acc_hi[r][j] = _mm512_setzero_si512();
  for (int64_t o = q0 / 2; o < q1 / 2; ++o) {
    __m512i lo[NB], hi[NB];
    for (int j = 0; j < NB; ++j) {
      const __m512i v = _mm512_loadu_si512(w[j] + 64 * o);
      lo[j] = _mm512_and_si512(v, mask);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    }
    for (int r = 0; r < R; ++r) {
      const __m512i a0 = broadcast_quad(a + 4 * (2 * o * R + r)), a1 = broadcast_quad(a + 4 * ((2 * o + 1) * R + r));
      for (int j = 0; j < NB; ++j) {
        dpbusd(acc[r][j], lo[j], a0);
        dpbusd(acc_hi[r][j], hi[j], a1);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_add_epi32(acc[r][j], acc_hi[r][j]);
}

template <int R, int NB, bool kPackedW4>
void tile(const GemmArguments& args, int64_t m0, int64_t b, const uint8_t* const* w, const int8_t* arow) {
  const QuantizedActivations& a = *args.a;
  const PackedWeights& pw = *args.w;
  const int64_t groups = pw.groups();
  __m512 facc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) facc[r][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    int64_t q0, q1;
    group_quads(pw, g, &q0, &q1);
    __m512i acc[R][NB];
    if (kPackedW4)
      dot_w4<R, NB>(arow, w, q0, q1, acc);
    else
      dot_w8<R, NB>(arow, w, q0, q1, acc);
    for (int j = 0; j < NB; ++j) {
      const GroupWeights gw = group_weights(pw, b + j, g);
      for (int r = 0; r < R; ++r) {
        const __m512 t = group_term(acc[r][j], gw.zw, gw.wc, a.group_sum[(m0 + r) * groups + g], a.zero[m0 + r]);
        facc[r][j] = _mm512_fmadd_ps(gw.sw, t, facc[r][j]);
      }
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int64_t n0 = (b + j) * PackedWeights::kBlock;
    const int64_t count = std::min<int64_t>(PackedWeights::kBlock, pw.n - n0);
    const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
    const __m512 bias = args.bias ? _mm512_maskz_loadu_ps(mask, args.bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) {
      const __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(a.scale[m0 + r]), facc[r][j], bias);
      _mm512_mask_storeu_ps(args.y + (m0 + r) * args.ldy + n0, mask, y);
    }
  }
}

// Rows [m_begin, m_end) of column blocks b, b + NB - 1; `apack` holds those rows packed by tiles.
template <int NB, bool kPackedW4>
void rows(const GemmArguments& args, int64_t b, const uint8_t* const* w, int64_t m_begin, int64_t m_end,
          const int8_t* apack) {
  const int64_t kp = args.a->k_padded;
  int64_t m0 = m_begin;
  for (; m0 + kRows <= m_end; m0 += kRows) tile<kRows, NB, kPackedW4>(args, m0, b, w, apack + (m0 - m_begin) * kp);
  const int8_t* rest = apack + (m0 - m_begin) * kp;
  switch (m_end - m0) {
    case 1: tile<1, NB, kPackedW4>(args, m0, b, w, rest); break;
    case 2: tile<2, NB, kPackedW4>(args, m0, b, w, rest); break;
    case 3: tile<3, NB, kPackedW4>(args, m0, b, w, rest); break;
    case 4: tile<4, NB, kPackedW4>(args, m0, b, w, rest); break;
    case 5: tile<5, NB, kPackedW4>(args, m0, b, w, rest); break;
    default: break;
  }
}

}  // namespace

void gemm_blocks_avx512(const GemmArguments& args, int64_t b0, int64_t b1) {
  const PackedWeights& pw = *args.w;
  const int64_t m = args.a->m;
  const int64_t block_elems = PackedWeights::kBlock * pw.k_padded;
  // int4 weights are unpacked to the int8 layout once per call (all of this thread's blocks) when
  // enough rows reuse them; the row blocks below then read them like int8 weights.
  const bool unpack = pw.bits == 4 && m >= kUnpackRows;
  thread_local std::vector<uint8_t> unpacked;
  thread_local std::vector<int8_t> apack;
  if (unpack) {
    unpacked.resize((b1 - b0) * block_elems);
    for (int64_t b = b0; b < b1; ++b)
      unpack_w4(pw.data.data() + b * pw.block_bytes(), pw.k_padded / 8, unpacked.data() + (b - b0) * block_elems);
  }
  // Row blocks whose activation codes (rows x K bytes) stay in L2 while the column blocks pass.
  const int64_t row_block = std::max<int64_t>(kRows, (kActivationBlockBytes / pw.k_padded) / kRows * kRows);
  for (int64_t r0 = 0; r0 < m; r0 += row_block) {
    const int64_t r1 = std::min(m, r0 + row_block);
    apack.resize((r1 - r0) * pw.k_padded);
    pack_tile_rows(*args.a, r0, r1, kRows, apack.data());
    for (int64_t b = b0; b < b1; b += 2) {
      const int nb = b + 1 < b1 ? 2 : 1;
      const uint8_t* w[2];
      for (int j = 0; j < nb; ++j)
        w[j] = unpack ? unpacked.data() + (b + j - b0) * block_elems : pw.data.data() + (b + j) * pw.block_bytes();
      const bool w4 = pw.bits == 4 && !unpack;
      if (nb == 2)
        w4 ? rows<2, true>(args, b, w, r0, r1, apack.data()) : rows<2, false>(args, b, w, r0, r1, apack.data());
      else
        w4 ? rows<1, true>(args, b, w, r0, r1, apack.data()) : rows<1, false>(args, b, w, r0, r1, apack.data());
    }
  }
}

}  // namespace outq::kernels::detail
