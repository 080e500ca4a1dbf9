// Internal interface between the host dispatch (kernels.cc) and the kernel
// families (the .cu files below). No Abseil here: the .cu files stay plain
// CUDA C++, and a launcher reports the first CUDA error with the file and
// line where it was seen (base/cuda_result.h). Launchers assume parameters
// already checked by the dispatch.
//
// Families (instantiations/ has one .cu per direction x head dim x dtype;
// dispatch.h turns the run-time flags into their template arguments):
//   instantiations/fwd_hdim{64,128,256}_{bf16,fp16}.cu
//                                   LaunchForward<dtype, D, softcap>
//   instantiations/bwd_hdim{64,128,256}_{bf16,fp16}.cu
//                                   LaunchBackward<dtype, D, softcap,
//                                   deterministic>: the main kernel and the
//                                   deterministic dQ pass
//   instantiations/fwd_sm90_hdim{64,128,256}_{bf16,fp16}.cu
//                                   LaunchForwardSm90<dtype, D, softcap>:
//                                   the Hopper forward, sm_90a only
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

// Forward: out, lse; kCap: softcap (p.softcap > 0).
template <DType kT, int kD, bool kCap>
CudaResult LaunchForward(const AttnParams& p, cudaStream_t stream);

// The Hopper forward (same contract as LaunchForward); the device must be
// compute capability 9.0.
template <DType kT, int kD, bool kCap>
CudaResult LaunchForwardSm90(const AttnParams& p, cudaStream_t stream);
int ForwardSm90SmemBytes(int head_dim);

// Backward: dk/dv (and dq unless kDeterministic) added into the fp32
// accumulators; kDeterministic adds dq with a separate pass, no atomics.
template <DType kT, int kD, bool kCap, bool kDeterministic>
CudaResult LaunchBackward(const AttnParams& p, cudaStream_t stream);

CudaResult LaunchMergePartial(float* acc_out, float* acc_lse, const float* part_out,
                              const float* part_lse, int64_t batch, int64_t seqlen, int64_t heads,
                              int64_t head_dim, cudaStream_t stream);

// out, lse <- merge(a, b): two contiguous fp32 partials into an output of
// any dtype and strides.
CudaResult LaunchMergeStore(const float* a_out, const float* a_lse, const float* b_out,
                            const float* b_lse, void* out, TensorStrides out_stride,
                            DType out_dtype, float* lse, int64_t lse_batch_stride,
                            int64_t lse_head_stride, int64_t batch, int64_t seqlen, int64_t heads,
                            int64_t head_dim, cudaStream_t stream);

CudaResult LaunchRowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype,
                        const void* out, TensorStrides out_stride, DType out_dtype, float* dsum,
                        int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim,
                        cudaStream_t stream);

}  // namespace ringattn::cuda::internal
