// Factories of the registered outlier methods (one per file in this folder; registry.cpp lists them).
#pragma once

#include <memory>

#include "outq/ptq/method.h"

namespace outq {

std::unique_ptr<QuantMethod> make_smoothquant(const MethodEntry& entry);
std::unique_ptr<QuantMethod> make_qfem(const MethodEntry& entry);
std::unique_ptr<QuantMethod> make_qfep(const MethodEntry& entry);
std::unique_ptr<QuantMethod> make_rotate(const MethodEntry& entry);

}  // namespace outq
