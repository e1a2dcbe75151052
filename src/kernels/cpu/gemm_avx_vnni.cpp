// AVX-VNNI GEMM (256-bit VEX vpdpbusd, on CPUs that have it without AVX-512: Alder Lake and later
// client cores, Sierra Forest): unsigned weight bytes times a broadcast quad of int8 activations
// summed into int32 by one instruction, which does not saturate. Tiles of 6 rows x 16 channels (12
// accumulators, the loop in asm). int4 weights from 16 rows on: nibbles split once per row block
// into the int8 layout and run by the int8 kernel; below (decode), nibble-split in registers in
// 4-row tiles. Driver, packing and epilogue in ymm_gemm.h, so the results equal every other path
// bit for bit. Compiled with -mavx2 -mfma -mavxvnni only for this file; never called unless CPUID
// says so.
#include <immintrin.h>

#include "ymm_gemm.h"

namespace outq::kernels::detail {
namespace {

// acc += dot products of unsigned bytes u and signed bytes s.
inline void dpbusd(__m256i& acc, __m256i u, __m256i s) { acc = _mm256_dpbusd_avx_epi32(acc, u, s); }

// Independent accumulator sets per row: vpdpbusd's latency (about 5 cycles) needs ~10 chains in
// flight, which 1-2 rows x 2 halves do not give; the sets are added at the end.
template <int R>
constexpr int kChains = R >= 3 ? 1 : R == 2 ? 2 : 4;

struct VnniW8 {
  static constexpr int kRows = 6;
  static constexpr ymm::Pack kPack = ymm::Pack::kInt8;
  static constexpr int kWeightOffset = 0;
  // The 6-row tile's loop in asm (GCC stored some of the 12 sums to the stack every quad and ran
  // at half the vpdpbusd rate): the sums in registers, the two weight vectors and the broadcast in
  // ymm13-15 (clobbered, not operands: asm takes at most 30).
  static void dot6(const int8_t* a, const uint8_t* w, int64_t n, __m256i (&acc)[6][2]) {
    const uint8_t* const end = w + 64 * n;
#define OUTQ_ROW(r, x0, x1)                                 \
  "vpbroadcastd " #r "*4(%[a]), %%ymm15\n\t"               \
  "%{vex%} vpdpbusd %%ymm15, %%ymm13, %[" #x0 "]\n\t"       \
  "%{vex%} vpdpbusd %%ymm15, %%ymm14, %[" #x1 "]\n\t"
    asm("1:\n\t"
        "vmovdqu (%[w]), %%ymm13\n\t"
        "vmovdqu 32(%[w]), %%ymm14\n\t"
        OUTQ_ROW(0, c00, c01) OUTQ_ROW(1, c10, c11) OUTQ_ROW(2, c20, c21)
        OUTQ_ROW(3, c30, c31) OUTQ_ROW(4, c40, c41) OUTQ_ROW(5, c50, c51)
        "add $24, %[a]\n\t"
        "add $64, %[w]\n\t"
        "cmp %[end], %[w]\n\t"
        "jne 1b"
        : [c00] "+x"(acc[0][0]), [c01] "+x"(acc[0][1]), [c10] "+x"(acc[1][0]), [c11] "+x"(acc[1][1]),
          [c20] "+x"(acc[2][0]), [c21] "+x"(acc[2][1]), [c30] "+x"(acc[3][0]), [c31] "+x"(acc[3][1]),
          [c40] "+x"(acc[4][0]), [c41] "+x"(acc[4][1]), [c50] "+x"(acc[5][0]), [c51] "+x"(acc[5][1]),
          [a] "+r"(a), [w] "+r"(w)
        : [end] "r"(end)
        : "xmm13", "xmm14", "xmm15", "cc", "memory");
#undef OUTQ_ROW
  }
  template <int R>
  static void dot(const void* ap, const uint8_t* w, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
    const int8_t* a = static_cast<const int8_t*>(ap);
    if constexpr (R == 6) {
      for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
      if (q1 > q0) dot6(a + 24 * q0, w + 64 * q0, q1 - q0, acc);
      return;
    }
    constexpr int U = kChains<R>;
    __m256i c[U][R][2];
    for (int u = 0; u < U; ++u)
      for (int r = 0; r < R; ++r) c[u][r][0] = c[u][r][1] = _mm256_setzero_si256();
    auto step = [&](int u, int64_t q) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * q));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * q + 32));
      for (int r = 0; r < R; ++r) {
        const __m256i av = ymm::broadcast_quad(a + 4 * (q * R + r));
        dpbusd(c[u][r][0], w0, av);
        dpbusd(c[u][r][1], w1, av);
      }
    };
    int64_t q = q0;
    for (; q + U <= q1; q += U)
      for (int u = 0; u < U; ++u) step(u, q + u);
    for (; q < q1; ++q) step(0, q);
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h) {
        acc[r][h] = c[0][r][h];
        for (int u = 1; u < U; ++u) acc[r][h] = _mm256_add_epi32(acc[r][h], c[u][r][h]);
      }
  }
};

struct VnniW4 {
  static constexpr int kRows = 4;
  static constexpr ymm::Pack kPack = ymm::Pack::kInt8;
  static constexpr int kWeightOffset = 0;
  template <int R>
  static void dot(const void* ap, const uint8_t* w, int64_t q0, int64_t q1, __m256i (&acc)[R][2]) {
    const int8_t* a = static_cast<const int8_t*>(ap);
    // The kChains sets: low and high nibbles apart for 1-2 rows, and for one row (a GEMV) also
    // even and odd octets (one set per row waited on vpdpbusd's latency).
    constexpr int U = kChains<R>;
    constexpr int P = U == 4 ? 2 : 1;  // octets per loop step, each into its own pair of sets
    __m256i c[U][R][2];
    for (int u = 0; u < U; ++u)
      for (int r = 0; r < R; ++r) c[u][r][0] = c[u][r][1] = _mm256_setzero_si256();
    auto step = [&](int p, int64_t o) {
      constexpr int kHi = U == 1 ? 0 : 1;
      __m256i lo[2], hi[2];
      ymm::split_octet(w, o, lo, hi);
      for (int r = 0; r < R; ++r) {
        const __m256i a0 = ymm::broadcast_quad(a + 4 * (2 * o * R + r));
        const __m256i a1 = ymm::broadcast_quad(a + 4 * ((2 * o + 1) * R + r));
        for (int h = 0; h < 2; ++h) {
          dpbusd(c[2 * p][r][h], lo[h], a0);
          dpbusd(c[2 * p + kHi][r][h], hi[h], a1);
        }
      }
    };
    int64_t o = q0 / 2;
    for (; o + P <= q1 / 2; o += P)
      for (int p = 0; p < P; ++p) step(p, o + p);
    for (; o < q1 / 2; ++o) step(0, o);
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h) {
        acc[r][h] = c[0][r][h];
        for (int u = 1; u < U; ++u) acc[r][h] = _mm256_add_epi32(acc[r][h], c[u][r][h]);
      }
  }
};

// int4 weights for many rows: each column block's nibbles split once per row block into a panel
// (ymm::nibble_panel), which is the int8 layout (an octet's low nibbles are its first quad, the
// high ones its second), so the int8 kernel runs on it. VnniW4's 4-row tiles take two dependent
// vpdpbusd per accumulator and octet, which held them at 0.87x the int8 rate on Zen 5.
struct VnniW4Paneled : VnniW8 {
  static constexpr int kPanelScale = 2;
  static void panel(const uint8_t* w, int64_t octets, uint8_t* out) { ymm::nibble_panel(w, octets, out); }
};

}  // namespace

void gemm_blocks_avx_vnni(const GemmArguments& args, int64_t b0, int64_t b1) {
  if (args.w->bits == 8)
    ymm::gemm_blocks<VnniW8>(args, b0, b1);
  else
    ymm::gemm_blocks_by_rows<VnniW4Paneled, VnniW4>(args, b0, b1);
}

}  // namespace outq::kernels::detail
