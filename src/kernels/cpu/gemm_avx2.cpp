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
//    (B <= 15: 28800), for any int8 code 4 in tiles of 1-2 rows (30720) and 1 in larger ones
//    (7680; their int16 sums would not fit the registers).
//    On a Zen 5 core vpmaddubsw and vpmaddwd share two pipes and vpsignb partly competes for them:
//    the signed-byte step runs at 0.86x the saturating three-instruction step (probes
//    int8_sign_avx2 / int8_dot_avx2, 2 threads).
// Tiles of 4 rows x 16 channels (widened int8 weights: one 8-channel half per pass for 3-4 rows,
// so the int16 weights and the partial sums fit the 16 registers; the signed-byte 4-row loop in
// asm); driver, packing and epilogue in ymm_gemm.h. Compiled with -mavx2 -mfma only for this file;
// never called unless CPUID says so.
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
  static constexpr ymm::Pack kPack = ymm::Pack::kInt16;
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
// sign-applied weights). Each column block's weights are recentred once per row block into a
// panel (per quad: s of both halves, then |s| where the activations take the sign); the
// activation tiles carry |a'| beside a' where the weights take it (Pack::kInt8Abs). So the loop
// has no per-quad recentring and no per-row absolute value: per row and 16 channels one
// broadcast (two), two vpsignb, two vpmaddubsw, two vpmaddwd and two vpaddd.
template <bool SignActivations, bool Paneled>
struct Avx2W8Signed {
  static constexpr int kRows = 4;
  static constexpr ymm::Pack kPack = SignActivations ? ymm::Pack::kInt8 : ymm::Pack::kInt8Abs;
  static constexpr int kWeightOffset = 128;                    // dot() sums a' (w' - 128)
  static constexpr int kPanelScale = Paneled ? (SignActivations ? 2 : 1) : 0;  // panel bytes per packed byte
  static constexpr int64_t kQuadStride = Paneled ? 64 * kPanelScale : 64;    // weight bytes per quad
  static constexpr int kQuadBytes = SignActivations ? 4 : 8;   // packed activation bytes per row and quad

  static void panel(const uint8_t* w, int64_t quads, uint8_t* out) {
    const __m256i recentre = _mm256_set1_epi8(static_cast<char>(0x80));
    for (int64_t q = 0; q < quads; ++q)
      for (int h = 0; h < 2; ++h) {
        const __m256i s = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * q + 32 * h)), recentre);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * kPanelScale * q + 32 * h), s);
        if constexpr (SignActivations)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 128 * q + 64 + 32 * h), _mm256_abs_epi8(s));
      }
  }

  // The 4-row tile's loop over n quads, registers allocated by hand (GCC kept three of the eight
  // sums on the stack and ran 10-15% slower). v0, v1: |s| (s read by vpsignb from the panel), or s.
  static void dot4(const int8_t* a, const uint8_t* w, int64_t n, __m256i ones, __m256i (&acc)[4][2]) {
    __m256i v0, v1, av, aa, t0, t1;
    // Per 16 channels: t = value sign(sign) for both halves (AT&T order: vpsignb sign, value,
    // out), then u x t by vpmaddubsw, widened by vpmaddwd against ones into the row's two sums.
#define OUTQ_STEPS(x0, x1, sign0, value0, sign1, value1, u0, u1) \
  "vpsignb " sign0 ", " value0 ", %[t0]\n\t"                     \
  "vpsignb " sign1 ", " value1 ", %[t1]\n\t"                     \
  "vpmaddubsw %[t0], " u0 ", %[t0]\n\t"                          \
  "vpmaddubsw %[t1], " u1 ", %[t1]\n\t"                          \
  "vpmaddwd %[ones], %[t0], %[t0]\n\t"                           \
  "vpmaddwd %[ones], %[t1], %[t1]\n\t"                           \
  "vpaddd %[t0], %[" #x0 "], %[" #x0 "]\n\t"                     \
  "vpaddd %[t1], %[" #x1 "], %[" #x1 "]\n\t"
    // Activations take the sign: |s| x a' sign(s), s read from the panel.
#define OUTQ_ROW_SIGN_A(r, x0, x1)            \
  "vpbroadcastd " #r "*4(%[a]), %[av]\n\t" \
  OUTQ_STEPS(x0, x1, "(%[w])", "%[av]", "32(%[w])", "%[av]", "%[v0]", "%[v1]")
    // Weights take the sign: |a'| x s sign(a'), |a'| broadcast from the tile's magnitudes.
#define OUTQ_ROW_SIGN_W(r, x0, x1)                \
  "vpbroadcastd " #r "*4(%[a]), %[av]\n\t"     \
  "vpbroadcastd 16+" #r "*4(%[a]), %[aa]\n\t"  \
  OUTQ_STEPS(x0, x1, "%[av]", "%[v0]", "%[av]", "%[v1]", "%[aa]", "%[aa]")
#define OUTQ_OPERANDS                                                                                      \
  : [c00] "+x"(acc[0][0]), [c01] "+x"(acc[0][1]), [c10] "+x"(acc[1][0]), [c11] "+x"(acc[1][1]),           \
    [c20] "+x"(acc[2][0]), [c21] "+x"(acc[2][1]), [c30] "+x"(acc[3][0]), [c31] "+x"(acc[3][1]),           \
    [v0] "=&x"(v0), [v1] "=&x"(v1), [av] "=&x"(av), [aa] "=&x"(aa), [t0] "=&x"(t0), [t1] "=&x"(t1),        \
    [a] "+r"(a), [w] "+r"(w), [n] "+r"(n)                                                                  \
  : [ones] "x"(ones)                                                                                       \
  : "cc", "memory"
    if constexpr (SignActivations)
      asm("1:\n\t"
          "vmovdqu 64(%[w]), %[v0]\n\t"
          "vmovdqu 96(%[w]), %[v1]\n\t"
          OUTQ_ROW_SIGN_A(0, c00, c01) OUTQ_ROW_SIGN_A(1, c10, c11) OUTQ_ROW_SIGN_A(2, c20, c21) OUTQ_ROW_SIGN_A(3, c30, c31)
          "add $16, %[a]\n\t"
          "add $128, %[w]\n\t"
          "dec %[n]\n\t"
          "jnz 1b"
          OUTQ_OPERANDS);
    else
      asm("1:\n\t"
          "vmovdqu (%[w]), %[v0]\n\t"
          "vmovdqu 32(%[w]), %[v1]\n\t"
          OUTQ_ROW_SIGN_W(0, c00, c01) OUTQ_ROW_SIGN_W(1, c10, c11) OUTQ_ROW_SIGN_W(2, c20, c21) OUTQ_ROW_SIGN_W(3, c30, c31)
          "add $32, %[a]\n\t"
          "add $64, %[w]\n\t"
          "dec %[n]\n\t"
          "jnz 1b"
          OUTQ_OPERANDS);
#undef OUTQ_STEPS
#undef OUTQ_ROW_SIGN_A
#undef OUTQ_ROW_SIGN_W
#undef OUTQ_OPERANDS
  }

  template <int R>
  static void dot(const void* ap, const uint8_t* w, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
    const int8_t* a = static_cast<const int8_t*>(ap);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    if constexpr (Paneled && R == 4) {
      if (q1 > q0) dot4(a + kQuadBytes * R * q0, w + kQuadStride * q0, q1 - q0, ones, acc);
      return;
    }
    // Without a panel (few rows) or for tiles of fewer rows: the same operations in intrinsics.
    const __m256i recentre = _mm256_set1_epi8(static_cast<char>(0x80));
    for (int64_t q = q0; q < q1; ++q) {
      const uint8_t* wq = w + kQuadStride * q;
      const int8_t* aq = a + kQuadBytes * R * q;
      __m256i s[2], u[2];
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + 32 * h));
        s[h] = Paneled ? v : _mm256_xor_si256(v, recentre);
        if constexpr (SignActivations)
          u[h] = Paneled ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + 64 + 32 * h)) : _mm256_abs_epi8(s[h]);
      }
      for (int r = 0; r < R; ++r) {
        const __m256i av = ymm::broadcast_quad(aq + 4 * r);
        for (int h = 0; h < 2; ++h) {
          const __m256i p = SignActivations
                                ? _mm256_maddubs_epi16(u[h], _mm256_sign_epi8(av, s[h]))
                                : _mm256_maddubs_epi16(ymm::broadcast_quad(aq + 4 * R + 4 * r), _mm256_sign_epi8(s[h], av));
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

// The int16 run length (octets) is fixed per instantiation: runs of 32 octets for 4-bit
// activations, and for 5- to 8-bit ones a vpmaddwd after every octet (4 in GEMV tiles). Each column block's
// octets are split into nibbles once per row block (the panel: per octet the low nibbles of both
// halves, then the high ones, 128 bytes), and the 4-row loop is asm like the int8 one: 8 sums,
// the 4 nibble registers, two broadcasts and two temporaries fill the 16 registers (ones is read
// from memory).
template <int Run, bool Paneled>
struct Avx2W4 {
  static constexpr int kRows = 4;
  static constexpr ymm::Pack kPack = ymm::Pack::kInt8;
  static constexpr int kWeightOffset = 0;
  static constexpr int kPanelScale = Paneled ? 2 : 0;

  static void panel(const uint8_t* w, int64_t octets, uint8_t* out) { ymm::nibble_panel(w, octets, out); }

  // n octets of the 4-row tile: Widen adds each octet's int16 lane pairs into the int32 sums by
  // vpmaddwd; else the octets' int16 sums accumulate in `sum` (a run).
  template <bool Widen>
  static void octets4(const int8_t* a, const uint8_t* w, int64_t n, const __m256i& ones, __m256i (&sum)[4][2]) {
    __m256i l0, l1, h0, h1, a0, a1, t0, t1;
    const uint8_t* const end = w + 128 * n;  // (a count would be a 31st asm operand)
#define OUTQ_HALF(lo, hi, x)                         \
  "vpmaddubsw %[a0], " lo ", %[t0]\n\t"              \
  "vpmaddubsw %[a1], " hi ", %[t1]\n\t"              \
  "vpaddw %[t1], %[t0], %[t0]\n\t"                  \
  OUTQ_ADD(x)
#define OUTQ_ROW(r, x0, x1)                          \
  "vpbroadcastd " #r "*4(%[a]), %[a0]\n\t"          \
  "vpbroadcastd 16+" #r "*4(%[a]), %[a1]\n\t"       \
  OUTQ_HALF("%[l0]", "%[h0]", x0) OUTQ_HALF("%[l1]", "%[h1]", x1)
#define OUTQ_LOOP                                                                                         \
  asm("1:\n\t"                                                                                            \
      "vmovdqu (%[w]), %[l0]\n\t"                                                                         \
      "vmovdqu 32(%[w]), %[l1]\n\t"                                                                       \
      "vmovdqu 64(%[w]), %[h0]\n\t"                                                                       \
      "vmovdqu 96(%[w]), %[h1]\n\t"                                                                       \
      OUTQ_ROW(0, c00, c01) OUTQ_ROW(1, c10, c11) OUTQ_ROW(2, c20, c21) OUTQ_ROW(3, c30, c31)             \
      "add $32, %[a]\n\t"                                                                                 \
      "add $128, %[w]\n\t"                                                                                \
      "cmp %[end], %[w]\n\t"                                                                              \
      "jne 1b"                                                                                            \
      : [c00] "+x"(sum[0][0]), [c01] "+x"(sum[0][1]), [c10] "+x"(sum[1][0]), [c11] "+x"(sum[1][1]),      \
        [c20] "+x"(sum[2][0]), [c21] "+x"(sum[2][1]), [c30] "+x"(sum[3][0]), [c31] "+x"(sum[3][1]),      \
        [l0] "=&x"(l0), [l1] "=&x"(l1), [h0] "=&x"(h0), [h1] "=&x"(h1), [a0] "=&x"(a0), [a1] "=&x"(a1),  \
        [t0] "=&x"(t0), [t1] "=&x"(t1), [a] "+r"(a), [w] "+r"(w)                                         \
      : [end] "r"(end), [ones] "m"(ones)                                                                  \
      : "cc", "memory")
    if constexpr (Widen) {
#define OUTQ_ADD(x) "vpmaddwd %[ones], %[t0], %[t0]\n\tvpaddd %[t0], %[" #x "], %[" #x "]\n\t"
      OUTQ_LOOP;
#undef OUTQ_ADD
    } else {
#define OUTQ_ADD(x) "vpaddw %[t0], %[" #x "], %[" #x "]\n\t"
      OUTQ_LOOP;
#undef OUTQ_ADD
    }
#undef OUTQ_HALF
#undef OUTQ_ROW
#undef OUTQ_LOOP
  }

  // One octet of R rows x 16 channels into the int16 sums (no panel, or tiles of fewer rows).
  template <int R>
  static void octet(const int8_t* a, const uint8_t* w, int64_t o, __m256i (&s16)[R][2]) {
    __m256i lo[2], hi[2];
    if constexpr (Paneled) {
      for (int h = 0; h < 2; ++h) {
        lo[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 128 * o + 32 * h));
        hi[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 128 * o + 64 + 32 * h));
      }
    } else {
      ymm::split_octet(w, o, lo, hi);
    }
    for (int r = 0; r < R; ++r) {
      const __m256i a0 = ymm::broadcast_quad(a + 4 * (2 * o * R + r));
      const __m256i a1 = ymm::broadcast_quad(a + 4 * ((2 * o + 1) * R + r));
      for (int h = 0; h < 2; ++h)
        s16[r][h] = _mm256_add_epi16(s16[r][h], _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], a0), _mm256_maddubs_epi16(hi[h], a1)));
    }
  }

  // Octets [o0, o1) in int16 runs, each widened into acc by vpmaddwd. Runs of Run octets, except
  // for int8 activations in tiles of 1-2 rows (a GEMV): there the int16 sums of 4 octets fit the
  // registers, and 4 octets are within the bound (60 * 4 * 128 = 30720 <= 32767).
  template <int R>
  static void runs(const int8_t* a, const uint8_t* w, int64_t o0, int64_t o1, __m256i (&acc)[R][2]) {
    const __m256i ones = _mm256_set1_epi16(1);
    if constexpr (Paneled && R == 4 && Run == 1) {
      if (o1 > o0) octets4<true>(a + 32 * o0, w + 128 * o0, o1 - o0, ones, acc);
      return;
    }
    constexpr int kRun = Run == 1 && R <= 2 ? 4 : Run;
    for (int64_t o = o0; o < o1;) {
      const int64_t len = std::min<int64_t>(kRun, o1 - o);
      __m256i s16[R][2];
      for (int r = 0; r < R; ++r) s16[r][0] = s16[r][1] = _mm256_setzero_si256();
      if constexpr (Paneled && R == 4) {
        octets4<false>(a + 32 * o, w + 128 * o, len, ones, s16);
      } else if (len == kRun) {
#pragma GCC unroll 4
        for (int j = 0; j < kRun; ++j) octet<R>(a, w, o + j, s16);
      } else {
        for (int64_t j = 0; j < len; ++j) octet<R>(a, w, o + j, s16);
      }
      o += len;
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
  // format; for any int8 code, runs of 1 (4 in the 1-2 row tiles of a GEMV, 60 * 4 * 128).
  using ymm::gemm_blocks_by_rows;
  if (args.w->bits == 8) {
    if (smallest_code(*args.a) > -128)
      gemm_blocks_by_rows<Avx2W8Signed<true, true>, Avx2W8Signed<true, false>>(args, b0, b1);
    else if (args.w->min_code > 0)
      gemm_blocks_by_rows<Avx2W8Signed<false, true>, Avx2W8Signed<false, false>>(args, b0, b1);
    else
      ymm::gemm_blocks<Avx2W8>(args, b0, b1);
  } else if (args.a->code_bound <= 17) {
    gemm_blocks_by_rows<Avx2W4<32, true>, Avx2W4<32, false>>(args, b0, b1);
  } else {
    gemm_blocks_by_rows<Avx2W4<1, true>, Avx2W4<1, false>>(args, b0, b1);
  }
}

}  // namespace outq::kernels::detail
