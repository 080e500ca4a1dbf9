// KernelBackend: the interface through which the ring reaches the attention
// kernels and the memory of one device. Variants:
//   cpu_backend.cc        attention/cpu kernels, host memory
//   cuda_backend.cc       attention/cuda kernels, device memory, one CUDA
//                         stream per backend (per rank); cuda_backend_stub.cc
//                         answers Unimplemented when CUDA is not built
// Order: the CPU backend's calls are complete when they return (Stream()
// is null). The CUDA backend's calls only ENQUEUE on the rank's compute
// stream and return at once; the ring orders its transfers after them
// (Communicator::SendRecvOnStream, or Synchronize first where the
// communicator is not stream ordered) and waits for the stream once, at the
// end of a call (or not at all, on a caller's stream).
#pragma once

#include <chrono>
#include <cstring>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attention/params.h"
#include "runtime/tensor.h"

namespace ringattn {

// The batch, sequence and head strides of a [B, S, H, D] view (the kernels'
// TensorStrides; D is contiguous).
inline TensorStrides BshdStrides(const TensorView& t) {
  return {t.strides[0], t.strides[1], t.strides[2]};
}

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

  // Blocking copies between host memory and this backend's memory (small
  // messages: the options every rank compares at its first call).
  virtual absl::Status CopyFromHost(void* dst, const void* host_src, int64_t bytes) {
    std::memcpy(dst, host_src, static_cast<size_t>(bytes));
    return absl::OkStatus();
  }
  virtual absl::Status CopyToHost(void* host_dst, const void* src, int64_t bytes) {
    std::memcpy(host_dst, src, static_cast<size_t>(bytes));
    return absl::OkStatus();
  }

  // Stream order (defaults: a backend whose calls complete on return).
  // The compute stream (a cudaStream_t), or null.
  virtual void* Stream() const { return nullptr; }
  // Work enqueued from now on waits for what is queued on `stream` (the
  // caller's; null: the legacy default stream) so far.
  virtual absl::Status WaitForStream(void* stream) {
    (void)stream;
    return absl::OkStatus();
  }
  // Work the caller queues on `stream` from now on waits for what this
  // backend has enqueued so far.
  virtual absl::Status MakeStreamWait(void* stream) {
    (void)stream;
    return absl::OkStatus();
  }
  // Blocks until the enqueued work is done, at most `timeout`
  // (DeadlineExceeded); errors of kernels that ran are reported here.
  virtual absl::Status Synchronize(absl::Duration timeout) {
    (void)timeout;
    return absl::OkStatus();
  }

  // Compute time: the work enqueued between BeginTimed and EndTimed is
  // timed (here with the host clock; on CUDA with events on the stream).
  // StartTiming forgets earlier intervals; TimedSeconds sums the intervals
  // since then, waiting for them to finish (DeadlineExceeded after
  // `timeout`).
  virtual absl::Status StartTiming() {
    timed_seconds_ = 0;
    return absl::OkStatus();
  }
  virtual absl::Status BeginTimed() {
    timed_begin_ = std::chrono::steady_clock::now();
    return absl::OkStatus();
  }
  virtual absl::Status EndTimed() {
    timed_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - timed_begin_).count();
    return absl::OkStatus();
  }
  virtual absl::StatusOr<double> TimedSeconds(absl::Duration timeout) {
    (void)timeout;
    return timed_seconds_;
  }

 private:
  std::chrono::steady_clock::time_point timed_begin_;
  double timed_seconds_ = 0;
};

std::unique_ptr<KernelBackend> MakeCpuBackend(int num_threads);

// Whether this build has the CUDA backend (a device may still be missing).
bool CudaBackendBuilt();

// The CUDA backend on GPU `device_index` with its own stream. `deterministic`
// selects the bitwise reproducible backward of cuda::Backward. Fails with
// Unimplemented when CUDA is not built, FailedPrecondition when there is no
// such device.
absl::StatusOr<std::unique_ptr<KernelBackend>> MakeCudaBackend(int device_index,
                                                               bool deterministic);

}  // namespace ringattn
