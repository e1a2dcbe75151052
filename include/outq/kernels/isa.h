// Instruction-set selection for the integer kernels: detected once from CPUID, overridable with
// OUTQ_ISA=ref|avx2|avx_vnni|avx512_vnni|amx_int8 (so tests and benchmarks can run every path on one machine).
#pragma once

#include <string>
#include <vector>

namespace outq::kernels {

/// (kAvxVnni comes last so the numbers of the others stay as they were; isa_available() orders by speed.)
enum class Isa { kRef, kAvx2, kAvx512Vnni, kAmxInt8, kAvxVnni };

const char* isa_name(Isa isa);
/// Parses "ref", "avx2", "avx_vnni", "avx512_vnni", "amx_int8"; throws outq::Error listing them otherwise.
Isa isa_parse(const std::string& name);
/// Whether this CPU can run `isa` (ref always; avx2 needs AVX2 + FMA; avx_vnni needs those and AVX-VNNI,
/// the 256-bit VEX vpdpbusd; avx512_vnni needs
/// AVX-512 F/BW/VL + VNNI; amx_int8 needs those, AMX-TILE + AMX-INT8 and the kernel's permission
/// to use the tile state, which is requested here).
bool isa_supported(Isa isa);
/// Every ISA this CPU supports, slowest first.
std::vector<Isa> isa_available();
/// The ISA the kernels use: OUTQ_ISA if set (an error if this CPU lacks it), else the best
/// supported. Decided once per process.
Isa isa_active();

}  // namespace outq::kernels
