// KernelBackend: the interface through which the ring reaches the attention
// kernels and the memory of one device. The CPU backend lives in
// cpu_backend.cc; a backend that is not built answers Unimplemented.
#pragma once

#include <cstdint>
#include <memory>

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

}  // namespace ringattn
