// CPUID-based ISA detection and the OUTQ_ISA override.
#include "outq/kernels/isa.h"

#include <cstdlib>

#include "outq/core/error.h"

namespace outq::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kRef: return "ref";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512Vnni: return "avx512_vnni";
  }
  return "?";
}

Isa isa_parse(const std::string& name) {
  for (Isa isa : {Isa::kRef, Isa::kAvx2, Isa::kAvx512Vnni})
    if (name == isa_name(isa)) return isa;
  throw Error("unknown ISA '" + name + "': expected ref, avx2 or avx512_vnni");
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kRef: return true;
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

std::vector<Isa> isa_available() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kRef, Isa::kAvx2, Isa::kAvx512Vnni})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

Isa isa_active() {
  static const Isa active = [] {
    if (const char* forced = std::getenv("OUTQ_ISA"); forced && *forced) {
      const Isa isa = isa_parse(forced);
      OUTQ_CHECK(isa_supported(isa), "OUTQ_ISA=", forced, ": this CPU does not support it; expected one of the supported ",
                 "ISAs (ref, avx2 with FMA, avx512_vnni)");
      return isa;
    }
    return isa_available().back();
  }();
  return active;
}

}  // namespace outq::kernels
