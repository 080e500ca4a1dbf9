// The CUDA kernels of runtime/cuda_backend.cc on the CPU model of CUDA
// (tests/comm/nccl_model): each "launch" checks its arguments at once, as
// the real launchers do, then runs the CPU kernel (attention/cpu, one
// thread) or the CPU backend's copy in stream order on the model stream's
// thread. So ring_model_test runs the real ring, CUDA backend and
// communicators, whose only GPU-specific part is the ordering of work on
// streams, and their results must equal the CPU ring's bit for bit.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>

#include "absl/status/status.h"
#include "attention/cpu/kernels.h"
#include "attention/cuda/kernels.h"
#include "runtime/backend.h"
#include "runtime/cuda_backend_kernels.h"

namespace ringattn {
namespace {

cudaStream_t AsStream(void* s) { return static_cast<cudaStream_t>(s); }

// Attention kernels take a while on a GPU: here up to 3 ms more, at random,
// so that work racing them (a transfer that does not wait for its
// producer) loses the race often.
void KernelTime() {
  thread_local std::minstd_rand rng(std::random_device{}());
  std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
}

// A kernel failing on the "device" is a bug of the test's inputs: stop.
void MustSucceed(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "model kernel %s failed: %s\n", what, s.ToString().c_str());
  std::abort();
}

KernelBackend& Cpu() {
  static KernelBackend* cpu = MakeCpuBackend(1).release();
  return *cpu;
}

TensorView ViewOf(void* data, DType dtype, const cuda_backend::View& v) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.ndim = v.ndim;
  for (int d = 0; d < v.ndim; ++d) {
    t.shape[d] = v.shape[d];
    t.strides[d] = v.strides[d];
  }
  return t;
}

}  // namespace

namespace cuda {

bool DeviceAvailable() { return true; }
absl::Status CheckParams(const AttnParams&, bool) { return absl::OkStatus(); }

absl::Status Forward(const AttnParams& p, void* stream) {
  ModelLaunch(AsStream(stream), [p] {
    KernelTime();
    MustSucceed(cpu::Forward(p, 1), "forward");
  });
  return absl::OkStatus();
}

absl::Status Backward(const AttnParams& p, bool, void* stream) {
  ModelLaunch(AsStream(stream), [p] {
    KernelTime();
    MustSucceed(cpu::Backward(p, 1), "backward");
  });
  return absl::OkStatus();
}

absl::Status MergePartial(float* acc_out, float* acc_lse, const float* part_out,
                          const float* part_lse, int64_t batch, int64_t seqlen, int64_t heads,
                          int64_t head_dim, void* stream) {
  ModelLaunch(AsStream(stream), [=] {
    MustSucceed(Cpu().Merge(acc_out, acc_lse, part_out, part_lse, batch, seqlen, heads, head_dim),
                "merge");
  });
  return absl::OkStatus();
}

absl::Status RowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype, const void* out,
                    TensorStrides out_stride, DType out_dtype, float* dsum, int64_t batch,
                    int64_t seqlen, int64_t heads, int64_t head_dim, void* stream) {
  ModelLaunch(AsStream(stream), [=] {
    cpu::RowDot(dout, dout_stride, dout_dtype, out, out_stride, out_dtype, dsum, batch, seqlen,
                heads, head_dim, 1);
  });
  return absl::OkStatus();
}

}  // namespace cuda

namespace cuda_backend {

cudaError_t LaunchFill(float* dst, int64_t n, float value, cudaStream_t stream) {
  ModelLaunch(stream, [=] { MustSucceed(Cpu().Fill(dst, n, value), "fill"); });
  return cudaSuccess;
}

cudaError_t LaunchAdd(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  ModelLaunch(stream, [=] { MustSucceed(Cpu().Add(dst, src, n), "add"); });
  return cudaSuccess;
}

cudaError_t LaunchPack(const void* src, const View& view, int elem_bytes, void* dst,
                       cudaStream_t stream) {
  const DType dtype = elem_bytes == 4 ? DType::kFloat32 : DType::kBFloat16;
  const TensorView t = ViewOf(const_cast<void*>(src), dtype, view);
  ModelLaunch(stream, [=] { MustSucceed(Cpu().Pack(t, dst), "pack"); });
  return cudaSuccess;
}

cudaError_t LaunchUnpack(const float* src, const View& view, DType dtype, void* dst,
                         cudaStream_t stream) {
  const TensorView t = ViewOf(dst, dtype, view);
  ModelLaunch(stream, [=] { MustSucceed(Cpu().Unpack(src, t), "unpack"); });
  return cudaSuccess;
}

}  // namespace cuda_backend
}  // namespace ringattn
