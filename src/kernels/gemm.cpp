// Packing weights, quantizing activations, argument checks and the threaded GEMM driver that
// hands column blocks to the selected ISA's implementation.
#include "outq/kernels/gemm.h"

#include <omp.h>

#include <cmath>
#include <sstream>

#include "gemm_internal.h"
#include "outq/core/error.h"

namespace outq::kernels {
namespace {

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

}  // namespace

namespace {

// Packs with the group layout already set in w (group_size or bounds); one group index per column.
void pack_into(PackedWeights& w, const int32_t* codes, bool symmetric, const float* scale, const int32_t* zero) {
  const int64_t n = w.n, k = w.k, bits = w.bits;
  w.k_padded = round_up(k, 8);
  const int64_t groups = w.groups(), channels = w.channels();
  std::vector<int64_t> group_of(k);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t kk = w.group_begin(g); kk < w.group_end(g); ++kk) group_of[kk] = g;
  const int32_t offset = symmetric ? 1 << (bits - 1) : 0;  // signed codes -> unsigned w'
  const int32_t wmax = (1 << bits) - 1;
  w.scale.assign(channels * groups, 0.0f);
  w.zero.assign(channels * groups, 0);
  w.sum.assign(channels * groups, 0);
  w.data.assign(w.blocks() * w.block_bytes(), 0);
  w.min_code = wmax;
  for (int64_t c = 0; c < n; ++c) {
    const int64_t b = c / PackedWeights::kBlock, lane = c % PackedWeights::kBlock;
    uint8_t* block = w.data.data() + b * w.block_bytes();
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t src = c * groups + g, i = w.at(c, g);
      OUTQ_CHECK(std::isfinite(scale[src]), "pack_weights: scale of channel ", c, " group ", g, " is not finite");
      w.scale[i] = scale[src];
      w.zero[i] = (symmetric ? 0 : zero[src]) + offset;
      OUTQ_CHECK(w.zero[i] >= 0 && w.zero[i] <= wmax, "pack_weights: zero point of channel ", c, " group ", g,
                 ": expected 0..", wmax, ", found ", w.zero[i] - offset);
    }
    for (int64_t kk = 0; kk < k; ++kk) {
      const int32_t q = codes[c * k + kk] + offset;
      OUTQ_CHECK(q >= 0 && q <= wmax, "pack_weights: code at (", c, ", ", kk, "): expected ", -offset, "..",
                 wmax - offset, ", found ", q - offset);
      const int64_t i = w.at(c, group_of[kk]);
      w.sum[i] += q - w.zero[i];
      w.min_code = std::min(w.min_code, q);
      if (bits == 8) {
        block[(kk / 4) * 64 + lane * 4 + kk % 4] = static_cast<uint8_t>(q);
      } else {
        uint8_t& byte = block[(kk / 8) * 64 + lane * 4 + kk % 4];
        byte = static_cast<uint8_t>(kk % 8 < 4 ? (byte & 0xF0) | q : (byte & 0x0F) | (q << 4));
      }
    }
  }
}

void check_shape(int bits, int64_t n, int64_t k) {
  OUTQ_CHECK(bits == 8 || bits == 4, "pack_weights: bits: expected 8 or 4, found ", bits);
  OUTQ_CHECK(n > 0 && k > 0 && k <= 65536, "pack_weights: shape: expected 1 <= n and 1 <= k <= 65536, found ", n, " x ", k);
}

// Uneven group boundaries: 0, increasing multiples of 8, k.
std::string bounds_problem(const std::vector<int64_t>& b, int64_t k) {
  if (b.size() < 2 || b.front() != 0 || b.back() != k) return "expected boundaries from 0 to the column count";
  for (size_t i = 1; i < b.size(); ++i)
    if (b[i] <= b[i - 1] || (i + 1 < b.size() && b[i] % 8 != 0)) return "expected increasing multiples of 8";
  return "";
}

}  // namespace

PackedWeights pack_weights(const int32_t* codes, int64_t n, int64_t k, int bits, bool symmetric, int64_t group_size,
                           const float* scale, const int32_t* zero) {
  check_shape(bits, n, k);
  OUTQ_CHECK(group_size == 0 || (group_size > 0 && group_size % 8 == 0),
             "pack_weights: group_size: expected 0 (per channel) or a positive multiple of 8, found ", group_size);
  PackedWeights w;
  w.n = n, w.k = k, w.bits = bits;
  w.group_size = group_size == 0 || group_size >= k ? k : group_size;
  pack_into(w, codes, symmetric, scale, zero);
  return w;
}

PackedWeights pack_weights(const int32_t* codes, int64_t n, int64_t k, int bits, bool symmetric,
                           const std::vector<int64_t>& bounds, const float* scale, const int32_t* zero) {
  check_shape(bits, n, k);
  const std::string problem = bounds_problem(bounds, k);
  OUTQ_CHECK(problem.empty(), "pack_weights: group bounds: ", problem);
  PackedWeights w;
  w.n = n, w.k = k, w.bits = bits;
  w.group_size = k;
  w.bounds = bounds;
  pack_into(w, codes, symmetric, scale, zero);
  return w;
}

void quantize_activations(const float* x, int64_t m, int64_t k, int64_t ldx, const ActivationFormat& f,
                          int64_t group_size, QuantizedActivations* out, Isa isa) {
  OUTQ_CHECK(isa_supported(isa), "quantize_activations: this CPU cannot run the ", isa_name(isa), " code");
  const bool avx2 = isa != Isa::kRef;
  auto run = avx2 ? detail::quantize_run_avx2 : detail::quantize_run;
  OUTQ_CHECK(f.bits >= 2 && f.bits <= 8, "quantize_activations: bits: expected 2..8, found ", f.bits);
  OUTQ_CHECK(m >= 0 && k > 0 && ldx >= k, "quantize_activations: shape: expected m >= 0, k > 0, ldx >= k, found ", m, ", ",
             k, ", ", ldx);
  const bool peg = !f.peg_bounds.empty();
  if (peg) {
    const std::string problem = bounds_problem(f.peg_bounds, k);
    OUTQ_CHECK(problem.empty() && !f.dynamic, "quantize_activations: per-embedding-group bounds: ",
               problem.empty() ? "expected static ranges" : problem);
    const size_t groups = f.peg_bounds.size() - 1;
    OUTQ_CHECK(f.peg_scale.size() == groups && f.peg_zero.size() == groups, "quantize_activations: expected ", groups,
               " group scales and zero points, found ", f.peg_scale.size(), " and ", f.peg_zero.size());
    for (size_t g = 0; g < groups; ++g)
      OUTQ_CHECK(std::isfinite(f.peg_scale[g]) && f.peg_scale[g] > 0 && std::isfinite(f.peg_zero[g]),
                 "quantize_activations: group ", g, ": expected a positive finite scale and a finite zero, found ",
                 f.peg_scale[g], " and ", f.peg_zero[g]);
    OUTQ_CHECK(f.gather.empty() || static_cast<int64_t>(f.gather.size()) == k, "quantize_activations: gather: expected ",
               k, " column indices, found ", f.gather.size());
    for (const int64_t c : f.gather) OUTQ_CHECK(c >= 0 && c < k, "quantize_activations: gather index ", c, " outside 0..", k - 1);
  }
  out->m = m, out->k = k, out->k_padded = round_up(k, 8);
  out->group_size = peg || group_size == 0 || group_size >= k ? k : group_size;
  out->bounds = peg ? f.peg_bounds : std::vector<int64_t>{};
  const int64_t groups = out->groups();
  out->codes.assign(m * out->k_padded, 0);
  out->scale.resize(m);
  out->zero.resize(m);
  out->group_sum.assign(m * groups, 0);
  out->code_bound = f.symmetric ? 1 << (f.bits - 1) : f.bits == 8 ? 128 : (1 << f.bits) - 1;
  // Grid of q and the shift that stores it as int8 a' (asymmetric 8-bit codes 0..255 move by -128).
  const int32_t qmin = f.symmetric ? -(1 << (f.bits - 1)) : 0;
  const int32_t qmax = f.symmetric ? (1 << (f.bits - 1)) - 1 : (1 << f.bits) - 1;
  const int32_t shift = !f.symmetric && f.bits == 8 ? -128 : 0;
  OUTQ_CHECK(peg || f.dynamic || (std::isfinite(f.static_scale) && f.static_scale > 0 && std::isfinite(f.static_zero)),
             "quantize_activations: static scale and zero: expected a positive finite scale and a finite zero, found ",
             f.static_scale, " and ", f.static_zero);
  int64_t bad_row = -1;
#pragma omp parallel for schedule(static) if (m * k > 65536)
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x + r * ldx;
    float scale, zero;
    if (!(avx2 ? detail::row_grid_avx2 : detail::row_grid)(row, k, f, qmax, &scale, &zero)) {
#pragma omp critical
      bad_row = r;
    }
    int8_t* codes = out->codes.data() + r * out->k_padded;
    int32_t* sums = out->group_sum.data() + r * groups;
    if (peg) {  // gathered columns, each group on its own static grid; the row keeps scale 1, zero 0
      // The gather first (into a buffer), so the quantizing loop is the plain vectorized one.
      thread_local std::vector<float> gathered;
      const float* src = row;
      if (!f.gather.empty()) {
        gathered.resize(static_cast<size_t>(k));
        const int64_t* idx = f.gather.data();
        for (int64_t i = 0; i < k; ++i) gathered[i] = row[idx[i]];
        src = gathered.data();
      }
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t i0 = f.peg_bounds[g], i1 = f.peg_bounds[g + 1];
        sums[g] = run(src + i0, i1 - i0, f.peg_scale[g], f.peg_zero[g], qmin, qmax, shift, codes + i0);
      }
      out->scale[r] = 1;
      out->zero[r] = 0;
      continue;
    }
    for (int64_t g0 = 0, g = 0; g0 < k; g0 += out->group_size, ++g) {
      const int64_t g1 = std::min(k, g0 + out->group_size);
      sums[g] = run(row + g0, g1 - g0, scale, zero, qmin, qmax, shift, codes + g0);  // as outq::quantize
    }
    out->scale[r] = scale;
    out->zero[r] = zero + static_cast<float>(shift);
  }
  OUTQ_CHECK(bad_row < 0, "quantize_activations: row ", bad_row, " holds NaN or infinite values; expected finite activations");
}

std::string can_implement(const GemmArguments& args) {
  std::ostringstream why;
  if (!args.a || !args.w || !args.y) return "expected activations, weights and an output buffer (one is null)";
  const auto& a = *args.a;
  const auto& w = *args.w;
  if (w.version != PackedWeights::kVersion)
    why << "packed weights format version " << w.version << ", expected " << PackedWeights::kVersion;
  else if (w.bits != 8 && w.bits != 4)
    why << "weight bits " << w.bits << ", expected 8 or 4";
  else if (a.k != w.k)
    why << "activations have " << a.k << " columns, the weights " << w.k << " (expected equal)";
  else if (a.bounds != w.bounds)
    why << "activation groups and weight groups have different boundaries (quantize with the weights' bounds)";
  else if (a.group_size != w.group_size)
    why << "activation group sums are over " << a.group_size << " columns, the weight groups " << w.group_size
        << " (quantize the activations with the weights' group size)";
  else if (w.data.size() != static_cast<size_t>(w.blocks() * w.block_bytes()) ||
           w.scale.size() != static_cast<size_t>(w.blocks() * PackedWeights::kBlock * w.groups()))
    why << "packed weights of " << w.n << " x " << w.k << " have inconsistent buffer sizes";
  else if (a.codes.size() != static_cast<size_t>(a.m * a.k_padded) || a.k_padded != w.k_padded)
    why << "activation codes buffer does not match " << a.m << " x " << a.k;
  else if (args.ldy < w.n)
    why << "output row stride " << args.ldy << " is smaller than n = " << w.n;
  return why.str();
}

void gemm(const GemmArguments& args, Isa isa) {
  const std::string problem = can_implement(args);
  OUTQ_CHECK(problem.empty(), "integer GEMM: ", problem);
  OUTQ_CHECK(isa_supported(isa), "integer GEMM: this CPU cannot run the ", isa_name(isa), " kernels");
  if (args.a->m == 0) return;
  auto* fn = isa == Isa::kAmxInt8      ? detail::gemm_blocks_amx
             : isa == Isa::kAvx512Vnni ? detail::gemm_blocks_avx512
             : isa == Isa::kAvxVnni  ? detail::gemm_blocks_avx_vnni
             : isa == Isa::kAvx2     ? detail::gemm_blocks_avx2
                                     : detail::gemm_blocks_ref;
  const int64_t blocks = args.w->blocks();
  const int64_t m = args.a->m;
  if (isa == Isa::kAmxInt8 && detail::amx_applies(args) && m >= 64) {
    // AMX: row tiles split over the team, so each thread packs only its own activation rows.
#pragma omp parallel
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads(), tiles = (m + 15) / 16;
      const int64_t r0 = std::min(m, tiles * t / nt * 16), r1 = std::min(m, tiles * (t + 1) / nt * 16);
      if (r0 < r1) detail::gemm_rows_amx(args, r0, r1);
    }
    return;
  }
  // Column blocks split evenly over the team; one thread when there is too little work.
  const bool parallel = blocks > 1 && args.a->m * args.w->n * args.w->k >= (int64_t{1} << 18);
#pragma omp parallel if (parallel)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    if (b0 < b1) fn(args, b0, b1);
  }
}

}  // namespace outq::kernels
