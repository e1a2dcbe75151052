# LibTorch (Debian's libtorch-dev, CPU, 1.13) and a precompiled <torch/torch.h> shared by every
# target that includes it: outq_torch_pch builds the PCH once; others use outq_use_torch().
find_package(Torch 1.13 REQUIRED)
add_library(outq_torch_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/torch_pch.cpp)
target_link_libraries(outq_torch_pch PUBLIC ${TORCH_LIBRARIES} PRIVATE outq_options)
target_precompile_headers(outq_torch_pch PRIVATE <torch/torch.h>)

function(outq_use_torch target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  target_precompile_headers(${target} REUSE_FROM outq_torch_pch)
endfunction()
