// Internal interface between the host dispatch (kernels.cc) and the kernel
// families (*.cu). No Abseil here: the .cu files stay plain CUDA C++, and a
// launcher reports the first CUDA error with the file and line where it
// was seen (base/cuda_result.h). Launchers assume parameters already
// checked by the dispatch.
//
// Families (one .cu each):
//   fwd_bf16.cu, fwd_fp16.cu        Forward<dtype, D in {64, 128}>
//   bwd_bf16.cu, bwd_fp16.cu        Backward and the deterministic dQ pass
//   fwd_d256.cu, bwd_d256.cu        the same at D = 256, both dtypes
//   merge.cu                        MergePartial, RowDot
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attention/dtype.h"
#include "attention/params.h"
#include "base/cuda_result.h"

namespace ringattn::cuda::internal {

// Shared memory (bytes) each kernel family needs at head dim D.
int ForwardSmemBytes(int head_dim);
int BackwardSmemBytes(int head_dim);

// Forward: out, lse. Softcap on/off is chosen inside from p.softcap.
template <DType kT, int kD>
CudaResult LaunchForward(const AttnParams& p, cudaStream_t stream);

// Backward: dk/dv (and dq unless `deterministic`) added into the fp32
// accumulators; `deterministic` adds dq with a separate pass, no atomics.
template <DType kT, int kD>
CudaResult LaunchBackward(const AttnParams& p, bool deterministic, cudaStream_t stream);

CudaResult LaunchMergePartial(float* acc_out, float* acc_lse, const float* part_out,
                              const float* part_lse, int64_t batch, int64_t seqlen, int64_t heads,
                              int64_t head_dim, cudaStream_t stream);

CudaResult LaunchRowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype,
                        const void* out, TensorStrides out_stride, DType out_dtype, float* dsum,
                        int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim,
                        cudaStream_t stream);

}  // namespace ringattn::cuda::internal
