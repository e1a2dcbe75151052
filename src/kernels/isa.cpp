// CPUID-based ISA detection and the OUTQ_ISA override.
#include "outq/kernels/isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

#include "outq/core/error.h"

namespace outq::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kRef: return "ref";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvxVnni: return "avx_vnni";
    case Isa::kAvx512Vnni: return "avx512_vnni";
    case Isa::kAmxInt8: return "amx_int8";
  }
  return "?";
}

Isa isa_parse(const std::string& name) {
  for (Isa isa : {Isa::kRef, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni, Isa::kAmxInt8})
    if (name == isa_name(isa)) return isa;
  throw Error("unknown ISA '" + name + "': expected ref, avx2, avx_vnni, avx512_vnni or amx_int8");
}

namespace {

// AMX: CPUID.(7,0).EDX bits 24 (AMX-TILE) and 25 (AMX-INT8), and Linux's permission for this
// process to use the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
bool amx_usable() {
  static const bool usable = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!(d & (1u << 24)) || !(d & (1u << 25))) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

// AVX-VNNI (CPUID leaf 7 sub-leaf 1, EAX bit 4), read directly: not every compiler's
// __builtin_cpu_supports knows "avxvnni" (clang 14 does not).
bool cpu_has_avx_vnni() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
  return (eax >> 4) & 1u;
}

}  // namespace

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kRef: return true;
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvxVnni: return isa_supported(Isa::kAvx2) && cpu_has_avx_vnni();
    case Isa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case Isa::kAmxInt8: return isa_supported(Isa::kAvx512Vnni) && amx_usable();
  }
  return false;
}

std::vector<Isa> isa_available() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kRef, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni, Isa::kAmxInt8})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

Isa isa_active() {
  static const Isa active = [] {
    if (const char* forced = std::getenv("OUTQ_ISA"); forced && *forced) {
      const Isa isa = isa_parse(forced);
      OUTQ_CHECK(isa_supported(isa), "OUTQ_ISA=", forced, ": this CPU does not support it; expected one of the supported ",
                 "ISAs (ref, avx2 with FMA, avx_vnni, avx512_vnni, amx_int8)");
      return isa;
    }
    return isa_available().back();
  }();
  return active;
}

}  // namespace outq::kernels
