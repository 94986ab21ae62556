# Build options. Every feature switch is prefixed KVWIRE_ and surfaces in code as a macro that is
# always defined to 0 or 1 (test with #if, never #ifdef).

set(KVWIRE_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: AUTO (when nvcc is found), ON or OFF")
set_property(CACHE KVWIRE_CUDA PROPERTY STRINGS AUTO ON OFF)
set(KVWIRE_NCCL "AUTO" CACHE STRING "Build the NCCL transport: AUTO (with CUDA and NCCL found), ON or OFF")
set_property(CACHE KVWIRE_NCCL PROPERTY STRINGS AUTO ON OFF)
set(KVWIRE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures to compile for")
set(KVWIRE_SANITIZE "" CACHE STRING "Comma-separated sanitizers, e.g. address,undefined")
option(KVWIRE_WERROR "Treat all warnings as errors" OFF)
option(KVWIRE_FUZZ "Build libFuzzer targets (needs clang)" OFF)

foreach(opt KVWIRE_CUDA KVWIRE_NCCL)
  if(NOT ${opt} MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "${opt} must be AUTO, ON or OFF (got '${${opt}}')")
  endif()
endforeach()

# Warnings and flags shared by every kvwire target (applied per target by the helpers, never at
# directory scope). A dropped absl::Status must not compile.
add_library(kvwire_build_flags INTERFACE)
target_compile_options(kvwire_build_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
      -Werror=unused-result -Werror=return-type>)
if(KVWIRE_WERROR)
  target_compile_options(kvwire_build_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
if(KVWIRE_SANITIZE)
  string(REPLACE "," ";" _san_list "${KVWIRE_SANITIZE}")
  foreach(s IN LISTS _san_list)
    if(NOT s MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "KVWIRE_SANITIZE: unknown sanitizer '${s}'")
    endif()
  endforeach()
  target_compile_options(kvwire_build_flags INTERFACE
      $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${KVWIRE_SANITIZE} -fno-omit-frame-pointer
        -fno-sanitize-recover=all>)
  target_link_options(kvwire_build_flags INTERFACE -fsanitize=${KVWIRE_SANITIZE})
endif()

if(KVWIRE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "KVWIRE_FUZZ=ON needs clang (libFuzzer); configure with CXX=clang++-14")
  endif()
  # Coverage instrumentation for every kvwire library the fuzz targets link.
  target_compile_options(kvwire_build_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link>)
endif()

find_program(KVWIRE_CCACHE ccache)
if(KVWIRE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_C_COMPILER_LAUNCHER ${KVWIRE_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${KVWIRE_CCACHE})
endif()
