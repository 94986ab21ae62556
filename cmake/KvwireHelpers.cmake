# Helpers that give every kvwire target the same shape: include root at the repository top
# (#include "kvwire/format/frame.h"), shared warning/sanitizer flags, an alias kvwire::<name>.

# kvwire_add_library(<name> [ALIAS <alias>] SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
#   Creates static library kvwire_<name> with alias kvwire::<alias or name>.
function(kvwire_add_library name)
  cmake_parse_arguments(ARG "" "ALIAS" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  set(target kvwire_${name})
  add_library(${target} STATIC ${ARG_SOURCES})
  if(NOT ARG_ALIAS)
    set(ARG_ALIAS ${name})
  endif()
  add_library(kvwire::${ARG_ALIAS} ALIAS ${target})
  target_include_directories(${target} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}> $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>)
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE kvwire_build_flags ${ARG_PRIVATE_DEPS})
endfunction()

# kvwire_add_executable(<name> SOURCES ... [DEPS ...]) -> build/bin/<name>
function(kvwire_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/include)
  target_link_libraries(${name} PRIVATE kvwire_build_flags ${ARG_DEPS})
endfunction()

# kvwire_add_test(<name> SOURCES ... [DEPS ...] LABELS ... [TIMEOUT s] [ARGS ...] [ENV ...])
#   A GoogleTest binary registered with ctest. Every test has a timeout (default 120 s).
#   Tests labelled `unit` are also collected into the `kvwire_unit_tests` target so sanitizer
#   builds can compile just that layer.
function(kvwire_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS;ARGS;ENV" ${ARGN})
  if(NOT ARG_LABELS)
    message(FATAL_ERROR "kvwire_add_test(${name}): LABELS is required")
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/include)
  target_link_libraries(${name} PRIVATE kvwire_build_flags ${ARG_DEPS} GTest::gtest GTest::gmock
                        GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name} ${ARG_ARGS})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
  if(ARG_ENV)
    set_tests_properties(${name} PROPERTIES ENVIRONMENT "${ARG_ENV}")
  endif()
  foreach(label IN LISTS ARG_LABELS)
    set_property(GLOBAL APPEND PROPERTY KVWIRE_TESTS_${label} ${name})
  endforeach()
endfunction()

function(kvwire_finalize_test_groups)
  get_property(unit GLOBAL PROPERTY KVWIRE_TESTS_unit)
  add_custom_target(kvwire_unit_tests)
  if(unit)
    add_dependencies(kvwire_unit_tests ${unit})
  endif()
endfunction()

function(kvwire_print_summary)
  message(STATUS "kvwire ${PROJECT_VERSION}: build=${CMAKE_BUILD_TYPE} cuda=${KVWIRE_HAVE_CUDA} "
                 "nccl=${KVWIRE_HAVE_NCCL} sanitize='${KVWIRE_SANITIZE}' fuzz=${KVWIRE_FUZZ}")
endfunction()

configure_file(${CMAKE_CURRENT_LIST_DIR}/config.h.in ${PROJECT_BINARY_DIR}/include/kvwire/config.h @ONLY)
