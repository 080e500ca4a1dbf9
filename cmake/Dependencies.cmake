# Required dependencies (Debian packages in parentheses):
#   Abseil (libabsl-dev), DLPack (libdlpack-dev, header only), OpenMP (libgomp, with g++), BLAS (libopenblas-dev:
#   libxsmm's fallback and the bench ceiling), libxsmm for the CPU tiles
#   (libxsmm-dev); with RINGATTN_BUILD_TOOLS (the tools, benchmarks and
#   tests) also GoogleTest (libgtest-dev), Google Benchmark
#   (libbenchmark-dev), nlohmann-json for the tools' JSON output
#   (nlohmann-json3-dev) and python3 (the tests' drivers); with
#   RINGATTN_PYTHON, nanobind and the Python headers (python/CMakeLists.txt).
# Optional backends, each AUTO / ON / OFF with one status line:
#   RINGATTN_CUDA (CUDA Toolkit), RINGATTN_NCCL, RINGATTN_UCX (libucx-dev),
#   RINGATTN_MPI (libopenmpi-dev).
find_package(absl REQUIRED)
# DLTensor for the C ABI (runtime/c_api.cc): required with the tools and
# tests; a bare library or Python build (pip install . on a machine without
# libdlpack-dev) leaves the C ABI out and says so.
find_package(dlpack CONFIG QUIET)
if(dlpack_FOUND)
  set(RINGATTN_C_API ON)
elseif(RINGATTN_BUILD_TOOLS)
  message(FATAL_ERROR "dlpack not found: apt-get install libdlpack-dev")
else()
  set(RINGATTN_C_API OFF)
  message(STATUS "C ABI: dlpack not found, left out")
endif()
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
if(RINGATTN_BUILD_TOOLS)
  find_package(GTest REQUIRED)
  find_package(benchmark REQUIRED)
  find_package(nlohmann_json 3.2 REQUIRED)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
endif()

set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)

find_path(LIBXSMM_INCLUDE_DIR libxsmm.h)
find_library(LIBXSMM_LIBRARY NAMES xsmm)
if(LIBXSMM_INCLUDE_DIR AND LIBXSMM_LIBRARY)
  add_library(ringattn_libxsmm INTERFACE)
  target_include_directories(ringattn_libxsmm INTERFACE ${LIBXSMM_INCLUDE_DIR})
  # libxsmm.a calls sgemm_ for sizes it does not JIT: resolve from OpenBLAS.
  target_link_libraries(ringattn_libxsmm INTERFACE ${LIBXSMM_LIBRARY} BLAS::BLAS
                        ${CMAKE_DL_LIBS} Threads::Threads m)
  target_compile_definitions(ringattn_libxsmm INTERFACE RINGATTN_HAVE_LIBXSMM)
  message(STATUS "libxsmm: found ${LIBXSMM_LIBRARY}")
else()
  message(FATAL_ERROR "libxsmm not found: apt-get install libxsmm-dev")
endif()

# One status line per optional backend. RINGATTN_<X>_FOUND holds the result.
set(RINGATTN_CUDA AUTO CACHE STRING "CUDA kernels: AUTO, ON or OFF")
set(RINGATTN_NCCL AUTO CACHE STRING "NCCL communicator: AUTO, ON or OFF")
set(RINGATTN_UCX AUTO CACHE STRING "UCX communicator: AUTO, ON or OFF")
set(RINGATTN_MPI AUTO CACHE STRING "MPI bootstrap: AUTO, ON or OFF")
foreach(opt CUDA NCCL UCX MPI)
  set_property(CACHE RINGATTN_${opt} PROPERTY STRINGS AUTO ON OFF)
endforeach()

function(ringattn_report name want found detail)
  if(found)
    message(STATUS "${name}: found ${detail}")
  elseif(want STREQUAL "ON")
    message(FATAL_ERROR "${name}: not found, but RINGATTN_${name}=ON")
  elseif(want STREQUAL "OFF")
    message(STATUS "${name}: disabled (RINGATTN_${name}=OFF)")
  else()
    message(STATUS "${name}: not found, disabled")
  endif()
endfunction()

set(RINGATTN_CUDA_FOUND OFF)
if(NOT RINGATTN_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    find_package(CUDAToolkit QUIET)
    if(CUDAToolkit_FOUND)
      set(RINGATTN_CUDA_FOUND ON)
    endif()
  endif()
endif()
ringattn_report(CUDA "${RINGATTN_CUDA}" ${RINGATTN_CUDA_FOUND} "${CUDAToolkit_VERSION}")

set(RINGATTN_NCCL_FOUND OFF)
if(NOT RINGATTN_NCCL STREQUAL "OFF" AND RINGATTN_CUDA_FOUND)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(RINGATTN_NCCL_FOUND ON)
  endif()
endif()
ringattn_report(NCCL "${RINGATTN_NCCL}" ${RINGATTN_NCCL_FOUND} "${NCCL_LIBRARY}")

set(RINGATTN_UCX_FOUND OFF)
if(NOT RINGATTN_UCX STREQUAL "OFF")
  pkg_check_modules(UCX QUIET IMPORTED_TARGET ucx)
  if(UCX_FOUND)
    set(RINGATTN_UCX_FOUND ON)
  endif()
endif()
ringattn_report(UCX "${RINGATTN_UCX}" ${RINGATTN_UCX_FOUND} "${UCX_VERSION}")

set(RINGATTN_MPI_FOUND OFF)
if(NOT RINGATTN_MPI STREQUAL "OFF")
  find_package(MPI QUIET COMPONENTS C)
  if(MPI_C_FOUND)
    set(RINGATTN_MPI_FOUND ON)
  endif()
endif()
ringattn_report(MPI "${RINGATTN_MPI}" ${RINGATTN_MPI_FOUND} "${MPI_C_VERSION}")
