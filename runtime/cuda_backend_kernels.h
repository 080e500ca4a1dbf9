// The small device kernels of the CUDA KernelBackend (cuda_backend.cc):
// fill, add, and the strided <-> contiguous copies the ring needs around
// the attention kernels. Plain CUDA C++ (no Abseil), like attention/cuda's
// launchers: each launcher enqueues on `stream` and returns the launch's
// cudaError_t; cuda_backend.cc turns it into a Status.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/dtype.h"

namespace ringattn::cuda_backend {

// A view of up to 4 dims: shape and strides in elements.
struct View {
  int ndim = 0;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t strides[4] = {0, 0, 0, 0};
};

// dst[i] = value for i < n.
cudaError_t LaunchFill(float* dst, int64_t n, float value, cudaStream_t stream);
// dst[i] += src[i] for i < n.
cudaError_t LaunchAdd(float* dst, const float* src, int64_t n, cudaStream_t stream);
// Strided 4-d view `src` of `elem_bytes` (2 or 4) elements -> contiguous dst.
cudaError_t LaunchPack(const void* src, const View& view, int elem_bytes, void* dst,
                       cudaStream_t stream);
// Contiguous fp32 `src` -> strided view `dst` (3-d or 4-d) of dtype `dtype`,
// rounding to nearest even for bf16 and fp16.
cudaError_t LaunchUnpack(const float* src, const View& view, DType dtype, void* dst,
                         cudaStream_t stream);

}  // namespace ringattn::cuda_backend
