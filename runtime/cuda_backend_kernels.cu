// The CUDA KernelBackend's small kernels (see cuda_backend_kernels.h):
// grid-stride loops over 64-bit element counts, one element per step. They
// run once or twice per ring call on O(S_r * H * D) elements, far from the
// attention kernels' cost, so they stay simple.
#include "runtime/cuda_backend_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

namespace ringattn::cuda_backend {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;  // grid-stride beyond this

int Blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

__device__ inline int64_t GlobalIndex() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t GridStride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Offset in elements of contiguous index i within view v (row-major over
// v.shape), by v.strides.
__device__ inline int64_t StridedOffset(const View& v, int64_t i) {
  int64_t off = 0;
  for (int d = v.ndim - 1; d >= 0; --d) {
    const int64_t n = v.shape[d];
    off += (i % n) * v.strides[d];
    i /= n;
  }
  return off;
}

__global__ void FillKernel(float* dst, int64_t n, float value) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) dst[i] = value;
}

__global__ void AddKernel(float* dst, const float* src, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) dst[i] += src[i];
}

template <typename T>
__global__ void PackKernel(const T* src, View v, int64_t n, T* dst) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) dst[i] = src[StridedOffset(v, i)];
}

__device__ inline void Store(float x, float* p) { *p = x; }
__device__ inline void Store(float x, __nv_bfloat16* p) { *p = __float2bfloat16_rn(x); }
__device__ inline void Store(float x, __half* p) { *p = __float2half_rn(x); }

template <typename T>
__global__ void UnpackKernel(const float* src, View v, int64_t n, T* dst) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride())
    Store(src[i], dst + StridedOffset(v, i));
}

int64_t Numel(const View& v) {
  int64_t n = 1;
  for (int d = 0; d < v.ndim; ++d) n *= v.shape[d];
  return n;
}

bool Contiguous(const View& v) {
  int64_t s = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    if (v.shape[d] != 1 && v.strides[d] != s) return false;
    s *= v.shape[d];
  }
  return true;
}

}  // namespace

cudaError_t LaunchFill(float* dst, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  FillKernel<<<Blocks(n), kThreads, 0, stream>>>(dst, n, value);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<<<Blocks(n), kThreads, 0, stream>>>(dst, src, n);
  return cudaGetLastError();
}

cudaError_t LaunchPack(const void* src, const View& view, int elem_bytes, void* dst,
                       cudaStream_t stream) {
  const int64_t n = Numel(view);
  if (n <= 0) return cudaSuccess;
  if (Contiguous(view)) {
    return cudaMemcpyAsync(dst, src, static_cast<size_t>(n * elem_bytes), cudaMemcpyDeviceToDevice,
                           stream);
  }
  if (elem_bytes == 4) {
    PackKernel<<<Blocks(n), kThreads, 0, stream>>>(static_cast<const float*>(src), view, n,
                                                   static_cast<float*>(dst));
  } else {
    PackKernel<<<Blocks(n), kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), view, n,
                                                   static_cast<uint16_t*>(dst));
  }
  return cudaGetLastError();
}

cudaError_t LaunchUnpack(const float* src, const View& view, DType dtype, void* dst,
                         cudaStream_t stream) {
  const int64_t n = Numel(view);
  if (n <= 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat32:
      if (Contiguous(view)) {
        return cudaMemcpyAsync(dst, src, static_cast<size_t>(n * 4), cudaMemcpyDeviceToDevice,
                               stream);
      }
      UnpackKernel<<<Blocks(n), kThreads, 0, stream>>>(src, view, n, static_cast<float*>(dst));
      break;
    case DType::kBFloat16:
      UnpackKernel<<<Blocks(n), kThreads, 0, stream>>>(src, view, n,
                                                       static_cast<__nv_bfloat16*>(dst));
      break;
    case DType::kFloat16:
      UnpackKernel<<<Blocks(n), kThreads, 0, stream>>>(src, view, n, static_cast<__half*>(dst));
      break;
  }
  return cudaGetLastError();
}

}  // namespace ringattn::cuda_backend
