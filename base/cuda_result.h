// A CUDA runtime error with the file:line where it was seen and the call
// or kernel that failed, without Abseil: what the kernel launchers (plain
// CUDA C++ in .cu files) and the nvcc-only bench return. The Abseil side,
// base/cuda_status.h, turns it into an absl::Status (ToStatus); the bench
// prints it and exits.
//
//   RINGATTN_CUDA_RESULT(err, what)  the CudaResult of `err` here, e.g.
//                                    cudaGetLastError() after a launch;
//   RINGATTN_CUDA_TRY(expr)          returns the CudaResult of `expr` (a
//                                    CUDA runtime call) from the enclosing
//                                    function when it fails.
#pragma once

#include <cuda_runtime_api.h>

namespace ringattn {

struct CudaResult {
  cudaError_t error = cudaSuccess;
  const char* file = "";
  int line = 0;
  const char* what = "";  // the call or kernel that failed
  bool ok() const { return error == cudaSuccess; }
};

}  // namespace ringattn

#define RINGATTN_CUDA_RESULT(err, what) \
  ::ringattn::CudaResult { (err), __FILE__, __LINE__, (what) }

#define RINGATTN_CUDA_TRY(expr)                          \
  do {                                                   \
    const cudaError_t ringattn_err_ = (expr);            \
    if (ringattn_err_ != cudaSuccess) {                  \
      return RINGATTN_CUDA_RESULT(ringattn_err_, #expr); \
    }                                                    \
  } while (0)
