// AVX2 GEMM (no int8 dot-product instruction that cannot saturate, so none of them saturates here):
//  - int8 weights, signed bytes (the default): with the weight bytes recentred, s = w' - 128 in
//    [-128, 127], D = sum a' s + 128 A (A the group sum the epilogue already has), and sum a' s is
//    taken by vpmaddubsw (unsigned x signed bytes, pairs summed into saturating int16) on operands
//    made to fit: when no activation code is -128, |s| (0..128) times s-signed activations
//    (vpsignb: a' sign(s), within -127..127); else, when no weight code w' is 0 (so |s| <= 127),
//    |a'| (0..128) times a'-signed weights. Bound in both: a pair <= 2 * 128 * 127 = 32512 <=
//    32767, so vpmaddubsw cannot saturate; vpmaddwd against ones widens each channel's quad to one
//    int32 lane (<= 65024; K <= 65536 keeps the sums below 2^31 - 1). One vpmaddubsw and one
//    vpmaddwd per 32 products, where the widened path below needs two vpmaddwd.
//  - int8 weights otherwise (an activation code -128 and a weight code 0 in the same product):
//    weight bytes widened to int16 (vpmovzxbw) and multiplied with int16 activation pairs by
//    vpmaddwd. Bound: |w' a'| <= 255 * 128, a pair <= 65280, and K <= 65536 columns keep every
//    int32 lane below 2^31 - 1 (255 * 128 * 65536 = 2139095040). Each lane holds half of a
//    channel's quad (columns 0-1 or 2-3); the halves are added (vphaddd) at the end of each group.
//  - int4 weights: nibbles (0..15) as vpmaddubsw's unsigned operand against int8 activations; the
//    int16 lane of one octet (two vpmaddubsw, four products) is within 4 * 15 * B for activation
//    codes bounded by B in magnitude (QuantizedActivations::code_bound), so runs of n octets with
//    60 n B <= 32767 accumulate in int16 before vpmaddwd widens them: 32 octets for 4-bit codes
//    (B <= 15: 28800), 1 for any int8 code (7680).
// Tiles of 4 rows x 16 channels (int8 weights: one 8-channel half per pass for 3-4 rows, so the
// int16 weights and the partial sums fit the 16 registers); driver, packing and epilogue in ymm_gemm.h. Compiled with -mavx2 -mfma only for this file; never called unless
// CPUID says so.
#include <immintrin.h>

#include "ymm_gemm.h"

namespace outq::kernels::detail {
namespace {

inline __m256i broadcast_pair4(const int16_t* p) {  // four int16 activations in every 64-bit lane
  int64_t v;
  std::memcpy(&v, p, 8);
  return _mm256_set1_epi64x(v);
}

struct Avx2W8 {
  static constexpr int kRows = 4;
  static constexpr bool kWide = true;
  static constexpr int kWeightOffset = 0;
  // Channels [8 h0, 8 h0 + 8 H) of the block: part[r][j] holds channels 4 j..4 j + 3 of them, two
  // int32 lanes per channel (columns 0-1 and 2-3 of each quad).
  template <int R, int H>
  static void pass(const int16_t* a, const uint8_t* w, int h0, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
    __m256i part[R][2 * H];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 2 * H; ++j) part[r][j] = _mm256_setzero_si256();
    for (int64_t q = q0; q < q1; ++q) {
      __m256i wv[2 * H];
      for (int j = 0; j < 2 * H; ++j)
        wv[j] = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 64 * q + 32 * h0 + 16 * j)));
      for (int r = 0; r < R; ++r) {
        const __m256i av = broadcast_pair4(a + 4 * (q * R + r));
        for (int j = 0; j < 2 * H; ++j) part[r][j] = _mm256_add_epi32(part[r][j], _mm256_madd_epi16(wv[j], av));
      }
    }
    // hadd -> channels 0 1 4 5 | 2 3 6 7 of a half; the 64-bit permute (0, 2, 1, 3) restores 0..7.
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < H; ++h)
        acc[r][h0 + h] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(part[r][2 * h], part[r][2 * h + 1]), 0xD8);
  }
  template <int R>
  static void dot(const void* ap, const uint8_t* w, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
    const int16_t* a = static_cast<const int16_t*>(ap);
    if constexpr (R <= 2) {  // both halves in one pass: each weight line is read once (GEMV streams them)
      pass<R, 2>(a, w, 0, q0, q1, acc);
    } else {  // one half per pass, so 4 R partial sums, the weights and a broadcast fit 16 registers
      pass<R, 1>(a, w, 0, q0, q1, acc);
      pass<R, 1>(a, w, 1, q0, q1, acc);
    }
  }
};

// The signed-byte int8 path (see the top): SignActivations picks the operand pair used when no
// activation code is -128 (|s| x sign-applied activations), else no weight code is 0 (|a'| x
// sign-applied weights). Tiles of 4 rows x 16 channels: 8 accumulators, 2 weight registers and
// their absolute values or the row's two operands, ones.
template <bool SignActivations>
struct Avx2W8Signed {
  static constexpr int kRows = 4;
  static constexpr bool kWide = false;
  static constexpr int kWeightOffset = 128;  // dot() sums a' (w' - 128)
  template <int R>
  static void dot(const void* ap, const uint8_t* w, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
    const int8_t* a = static_cast<const int8_t*>(ap);
    const __m256i ones = _mm256_set1_epi16(1), recentre = _mm256_set1_epi8(static_cast<char>(0x80));
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int64_t q = q0; q < q1; ++q) {
      __m256i s[2], u[2];
      for (int h = 0; h < 2; ++h) {
        s[h] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * q + 32 * h)), recentre);
        if constexpr (SignActivations) u[h] = _mm256_abs_epi8(s[h]);
      }
      for (int r = 0; r < R; ++r) {
        const __m256i av = ymm::broadcast_quad(a + 4 * (q * R + r));
        const __m256i aabs = SignActivations ? av : _mm256_abs_epi8(av);  // |a'|, once per row (second pair)
        for (int h = 0; h < 2; ++h) {
          const __m256i p = SignActivations ? _mm256_maddubs_epi16(u[h], _mm256_sign_epi8(av, s[h]))
                                            : _mm256_maddubs_epi16(aabs, _mm256_sign_epi8(s[h], av));
          acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(p, ones));
        }
      }
    }
  }
};

// The smallest activation code (vpminsb over the rows; padding codes are 0).
int8_t smallest_code(const QuantizedActivations& a) {
  const int8_t* p = a.codes.data();
  const int64_t n = static_cast<int64_t>(a.codes.size());
  __m256i lo = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) lo = _mm256_min_epi8(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
  alignas(32) int8_t lanes[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), lo);
  int8_t out = 0;
  for (int j = 0; j < 32; ++j) out = std::min(out, lanes[j]);
  for (; i < n; ++i) out = std::min(out, p[i]);
  return out;
}

// Rows per tile and the int16 run length (octets) are fixed per instantiation: runs of 32 octets
// with 3 rows for 4-bit activations (the int16 and int32 sums of 3 rows fill the registers), and
// for 5- to 8-bit ones a vpmaddwd after every octet with 4 rows (runs of 4 ran slower: their int32
// sums spilled on every run).
template <int Rows, int Run>
struct Avx2W4 {
  static constexpr int kRows = Rows;
  static constexpr bool kWide = false;
  static constexpr int kWeightOffset = 0;
  // One octet of R rows x 16 channels into the int16 sums.
  template <int R>
  static void octet(const int8_t* a, const uint8_t* w, int64_t o, __m256i (&s16)[R][2]) {
    __m256i lo[2], hi[2];
    ymm::split_octet(w, o, lo, hi);
    for (int r = 0; r < R; ++r) {
      const __m256i a0 = ymm::broadcast_quad(a + 4 * (2 * o * R + r));
      const __m256i a1 = ymm::broadcast_quad(a + 4 * ((2 * o + 1) * R + r));
      for (int h = 0; h < 2; ++h)
        s16[r][h] = _mm256_add_epi16(s16[r][h], _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], a0), _mm256_maddubs_epi16(hi[h], a1)));
    }
  }
  // Octets [o0, o1) in int16 runs of Run octets (a compile-time count, so the run loop unrolls
  // and its exit is predictable), each widened into acc by vpmaddwd.
  template <int R>
  static void runs(const int8_t* a, const uint8_t* w, int64_t o0, int64_t o1, __m256i (&acc)[R][2]) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t o = o0; o < o1;) {
      __m256i s16[R][2];
      for (int r = 0; r < R; ++r) s16[r][0] = s16[r][1] = _mm256_setzero_si256();
      if (o + Run <= o1) {
#pragma GCC unroll 4
        for (int j = 0; j < Run; ++j) octet<R>(a, w, o + j, s16);
        o += Run;
      } else {
        for (; o < o1; ++o) octet<R>(a, w, o, s16);
      }
      for (int r = 0; r < R; ++r)
        for (int h = 0; h < 2; ++h) acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(s16[r][h], ones));
    }
  }
  template <int R>
  static void dot(const void* ap, const uint8_t* w, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    runs<R>(static_cast<const int8_t*>(ap), w, q0 / 2, q1 / 2, acc);
  }
};

}  // namespace

void gemm_blocks_avx2(const GemmArguments& args, int64_t b0, int64_t b1) {
  // Runs of 32 octets hold for codes within 17 in magnitude (60 * 32 * 17 <= 32767): every 4-bit
  // format; runs of 1 for any int8 code (60 * 128).
  if (args.w->bits == 8) {
    if (smallest_code(*args.a) > -128)
      ymm::gemm_blocks<Avx2W8Signed<true>>(args, b0, b1);
    else if (args.w->min_code > 0)
      ymm::gemm_blocks<Avx2W8Signed<false>>(args, b0, b1);
    else
      ymm::gemm_blocks<Avx2W8>(args, b0, b1);
  }
  else if (args.a->code_bound <= 17)
    ymm::gemm_blocks<Avx2W4<3, 32>>(args, b0, b1);
  else
    ymm::gemm_blocks<Avx2W4<4, 1>>(args, b0, b1);
}

}  // namespace outq::kernels::detail
