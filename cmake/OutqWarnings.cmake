# outq_options: warnings (and optional sanitizers) applied to every outq target, never to
# third-party code, whose headers are included as SYSTEM by their imported targets.
add_library(outq_options INTERFACE)
target_compile_options(outq_options INTERFACE -Wall -Wextra $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local> -Wnon-virtual-dtor)
if(OUTQ_WERROR)
  target_compile_options(outq_options INTERFACE -Werror)
endif()
if(OUTQ_SANITIZE)
  target_compile_options(outq_options INTERFACE -fsanitize=${OUTQ_SANITIZE} -fno-omit-frame-pointer
                                                -fno-sanitize-recover=all)
  target_link_options(outq_options INTERFACE -fsanitize=${OUTQ_SANITIZE})
endif()

# outq_add_layer(NAME SOURCES... DEPENDS targets...): one static library per layer.
function(outq_add_layer name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS;PRIVATE_DEPENDS" ${ARGN})
  add_library(outq_${name} STATIC ${ARG_SOURCES})
  add_library(outq::${name} ALIAS outq_${name})
  target_include_directories(outq_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(outq_${name} PUBLIC ${ARG_DEPENDS} PRIVATE outq_options ${ARG_PRIVATE_DEPENDS})
endfunction()
