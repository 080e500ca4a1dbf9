// KernelBackend: the interface through which the ring reaches the attention
// kernels and the memory of one device. Variants:
//   cpu_backend.cc        attention/cpu kernels, host memory
//   cuda_backend.cc       attention/cuda kernels, device memory, one CUDA
//                         stream per backend (per rank); cuda_backend_stub.cc
//                         answers Unimplemented when CUDA is not built
// Every call is complete when it returns (the CUDA backend synchronizes its
// stream), so the ring may hand any buffer to the communicator right after.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/params.h"
#include "runtime/tensor.h"

namespace ringattn {

class KernelBackend {
 public:
  virtual ~KernelBackend() = default;
  virtual const char* Name() const = 0;
  virtual Device device() const = 0;
  // One line for tools: "cpu: 4 threads", "cuda: device 0, NVIDIA H100 ...".
  virtual std::string Describe() const = 0;

  // What the kernels need of a tensor they read in place (q, dout), beyond
  // the ring's own checks (shape, dtype, device, innermost stride 1); an
  // InvalidArgument or Unimplemented naming `name` otherwise. Called before
  // any allocation or communication.
  virtual absl::Status CheckKernelInput(const TensorView& t, const char* name) const {
    (void)t;
    (void)name;
    return absl::OkStatus();
  }

  // The block-pair kernels (see attention/params.h for the contract).
  virtual absl::Status Forward(const AttnParams& p) = 0;
  virtual absl::Status Backward(const AttnParams& p) = 0;
  // acc <- merge(acc, part); out [B, S, H, D], lse [B, H, S], fp32 contiguous.
  virtual absl::Status Merge(float* acc_out, float* acc_lse, const float* part_out,
                             const float* part_lse, int64_t batch, int64_t seqlen, int64_t heads,
                             int64_t head_dim) = 0;
  // dsum [B, H, S] = rowsum(dout * out) for [B, S, H, D] views.
  virtual absl::Status RowDot(const TensorView& dout, const TensorView& out, float* dsum) = 0;

  // Device memory and the copies the ring needs.
  virtual absl::StatusOr<void*> Allocate(int64_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual absl::Status Fill(float* dst, int64_t n, float value) = 0;
  virtual absl::Status Add(float* dst, const float* src, int64_t n) = 0;  // dst += src
  // [B, S, H, D] view -> contiguous buffer of the view's dtype.
  virtual absl::Status Pack(const TensorView& src, void* dst) = 0;
  // Contiguous fp32 [B, S, H, D] (or [B, H, S] for 3-d views) -> view,
  // converting to the view's dtype.
  virtual absl::Status Unpack(const float* src, const TensorView& dst) = 0;
};

std::unique_ptr<KernelBackend> MakeCpuBackend(int num_threads);

// The CUDA backend on GPU `device_index` with its own stream. `deterministic`
// selects the bitwise reproducible backward of cuda::Backward. Fails with
// Unimplemented when CUDA is not built, FailedPrecondition when there is no
// such device.
absl::StatusOr<std::unique_ptr<KernelBackend>> MakeCudaBackend(int device_index,
                                                               bool deterministic);

}  // namespace ringattn
