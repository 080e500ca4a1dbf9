// CUDA flash attention over one query block x one key block, with the same
// contract as the CPU kernels (attention/cpu/kernels.h) on the same
// AttnParams, whose pointers are DEVICE pointers here (the mask's
// cu_seqlens too: runtime/cuda_backend.cc uploads an engine's documents):
//   Forward   writes out (out_dtype bf16, fp16 or fp32: fp32 keeps a ring's
//             partial results exact until the last merge) and lse (fp32,
//             natural log); a fully masked row gives out 0 and lse -inf.
//   Backward  ADDS into the fp32 dq/dk/dv accumulators (contiguous bshd),
//             from the global lse and dsum = rowsum(dO * O) (RowDot).
//             deterministic = false: dQ through fp32 atomics (fastest);
//             deterministic = true: a separate dQ pass without atomics, so
//             gradients are bitwise identical run after run (see
//             docs/CUDA_KERNELS.md for the cost).
// A mask with a sink (Mask::HasSink) runs as its two parts: the forward
// computes both in fp32 and merges them (stream-ordered scratch; the result
// is rounded to a 16-bit output once), the backward adds both parts'
// gradients.
// Inputs are bf16 or fp16 with 16-byte aligned rows (strides multiples of 8
// elements), head dim 64, 128 or 256, on a device of compute capability 8.0 or
// newer; anything else is refused with a Status before any launch.
// `stream` is a cudaStream_t (nullptr: the default stream); every call is
// asynchronous on it, and launch errors come back as Status with file:line.
// Without CUDA at build time, every function answers Unimplemented and
// DeviceAvailable() is false.
//
// The forward runs the mma.sync kernels (fwd_kernel.cuh) unless the
// environment variable RINGATTN_CUDA_KERNELS says sm90a: then the Hopper
// kernels (fwd_sm90_kernel.cuh), on compute capability 9.0 only. Unset or
// "auto" is the mma.sync kernels until the Hopper ones have run on a GPU
// (see UseSm90aForward in kernels.cc); any other value is InvalidArgument.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "attention/params.h"

namespace ringattn::cuda {

// Whether a CUDA device is present and usable (a driver, at least one GPU).
bool DeviceAvailable();

// The current device's compute capability as 10 * major + minor (90 for an
// H100), or 0 without a device.
int DeviceComputeCapability();

// Checks what the kernels rely on, without launching anything.
absl::Status CheckParams(const AttnParams& p, bool backward);

absl::Status Forward(const AttnParams& p, void* stream);
absl::Status Backward(const AttnParams& p, bool deterministic, void* stream);

// acc <- merge(acc, part): acc_out, part_out [B, S, H, D] and acc_lse,
// part_lse [B, H, S], contiguous fp32 device buffers (attention/merge.h).
absl::Status MergePartial(float* acc_out, float* acc_lse, const float* part_out,
                          const float* part_lse, int64_t batch, int64_t seqlen, int64_t heads,
                          int64_t head_dim, void* stream);

// dsum[b, h, i] = sum_d dout[b, i, h, d] * out[b, i, h, d] in fp32: the
// backward pre-pass, like cpu::RowDot. dout and out have any bshd strides
// and dtype (fp32, bf16, fp16); dsum is contiguous [B, H, S].
absl::Status RowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype, const void* out,
                    TensorStrides out_stride, DType out_dtype, float* dsum, int64_t batch,
                    int64_t seqlen, int64_t heads, int64_t head_dim, void* stream);

}  // namespace ringattn::cuda
