// The CUDA KernelBackend: attention/cuda kernels on one GPU, device memory,
// one non-blocking CUDA stream per backend instance (one per ring rank, so
// W virtual ranks on one GPU run their kernels concurrently).
//
// Every call enqueues on the stream and then SYNCHRONIZES it before
// returning. The ring hands its buffers to the communicator right after a
// backend call, and the cuda-local communicator copies them from its own
// threads and streams: finishing each call on the host keeps the ring's
// step logic correct without events. It costs a host round trip per call
// (a few per ring step); recording events for the communicator to wait on
// would remove it. Built only with CUDA (cuda_backend_stub.cc otherwise).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "attention/cuda/kernels.h"
#include "base/cuda_status.h"
#include "base/status.h"
#include "runtime/backend.h"
#include "runtime/cuda_backend_kernels.h"

namespace ringattn {
namespace {

// Prefixes an error with the backend operation it came from.
absl::Status In(absl::string_view op, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("cuda backend ", op, ": ", s.message()));
}

cuda_backend::View ViewOf(const TensorView& t) {
  cuda_backend::View v;
  v.ndim = t.ndim;
  for (int d = 0; d < t.ndim; ++d) {
    v.shape[d] = t.shape[d];
    v.strides[d] = t.strides[d];
  }
  return v;
}

TensorStrides Bshd(const TensorView& t) { return {t.strides[0], t.strides[1], t.strides[2]}; }

class CudaBackend final : public KernelBackend {
 public:
  CudaBackend(int device, bool deterministic, cudaStream_t stream, std::string description)
      : device_(device),
        deterministic_(deterministic),
        stream_(stream),
        description_(std::move(description)) {}
  ~CudaBackend() override {
    if (cudaSetDevice(device_) == cudaSuccess) cudaStreamDestroy(stream_);
  }

  const char* Name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  std::string Describe() const override {
    return absl::StrCat(description_, ", deterministic backward ", deterministic_ ? "on" : "off");
  }

  absl::Status CheckKernelInput(const TensorView& t, const char* name) const override {
    if (t.dtype != DType::kBFloat16 && t.dtype != DType::kFloat16) {
      return absl::UnimplementedError(absl::StrCat(
          name, " dtype: the CUDA kernels take bf16 or fp16, not ", DTypeName(t.dtype)));
    }
    if (t.ndim == 4 && t.shape[3] != 64 && t.shape[3] != 128) {
      return absl::UnimplementedError(absl::StrCat(
          name, " head dim: the CUDA kernels are built for 64 and 128, not ", t.shape[3]));
    }
    const bool aligned = reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
    if (!aligned || t.strides[0] % 8 != 0 || t.strides[1] % 8 != 0 || t.strides[2] % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name,
          ": the CUDA kernels read 16-byte rows: expected a 16-byte aligned pointer and "
          "strides multiples of 8 elements, got ",
          absl::StrFormat("%p", t.data), " with strides (", t.strides[0], ", ", t.strides[1], ", ",
          t.strides[2], ", ", t.strides[3], ")"));
    }
    return absl::OkStatus();
  }

  absl::Status Forward(const AttnParams& p) override {
    RETURN_IF_ERROR(Enter("forward"));
    RETURN_IF_ERROR(In("forward", cuda::Forward(p, stream_)));
    return Sync("forward");
  }
  absl::Status Backward(const AttnParams& p) override {
    RETURN_IF_ERROR(Enter("backward"));
    RETURN_IF_ERROR(In("backward", cuda::Backward(p, deterministic_, stream_)));
    return Sync("backward");
  }
  absl::Status Merge(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                     int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim) override {
    RETURN_IF_ERROR(Enter("merge"));
    RETURN_IF_ERROR(In("merge", cuda::MergePartial(acc_out, acc_lse, part_out, part_lse, batch,
                                                   seqlen, heads, head_dim, stream_)));
    return Sync("merge");
  }
  absl::Status RowDot(const TensorView& dout, const TensorView& out, float* dsum) override {
    RETURN_IF_ERROR(Enter("rowdot"));
    RETURN_IF_ERROR(In("rowdot", cuda::RowDot(dout.data, Bshd(dout), dout.dtype, out.data,
                                              Bshd(out), out.dtype, dsum, out.shape[0],
                                              out.shape[1], out.shape[2], out.shape[3], stream_)));
    return Sync("rowdot");
  }

  absl::StatusOr<void*> Allocate(int64_t bytes) override {
    RETURN_IF_ERROR(Enter("allocate"));
    void* p = nullptr;
    RINGATTN_CUDA_CHECK(
        cudaMalloc(&p, static_cast<size_t>(bytes < 1 ? 1 : bytes)),
        absl::StrCat("cuda backend: allocating ", bytes, " bytes on device ", device_));
    return p;
  }
  void Free(void* ptr) override {
    if (ptr == nullptr || cudaSetDevice(device_) != cudaSuccess) return;
    cudaFree(ptr);
  }
  absl::Status Fill(float* dst, int64_t n, float value) override {
    RETURN_IF_ERROR(Enter("fill"));
    RINGATTN_CUDA_CHECK(cuda_backend::LaunchFill(dst, n, value, stream_), "cuda backend fill");
    return Sync("fill");
  }
  absl::Status Add(float* dst, const float* src, int64_t n) override {
    RETURN_IF_ERROR(Enter("add"));
    RINGATTN_CUDA_CHECK(cuda_backend::LaunchAdd(dst, src, n, stream_), "cuda backend add");
    return Sync("add");
  }
  absl::Status Pack(const TensorView& src, void* dst) override {
    RETURN_IF_ERROR(Enter("pack"));
    RINGATTN_CUDA_CHECK(
        cuda_backend::LaunchPack(src.data, ViewOf(src), static_cast<int>(DTypeSize(src.dtype)), dst,
                                 stream_),
        "cuda backend pack");
    return Sync("pack");
  }
  absl::Status Unpack(const float* src, const TensorView& dst) override {
    RETURN_IF_ERROR(Enter("unpack"));
    RINGATTN_CUDA_CHECK(cuda_backend::LaunchUnpack(src, ViewOf(dst), dst.dtype, dst.data, stream_),
                        "cuda backend unpack");
    return Sync("unpack");
  }

 private:
  // The calling thread's current device is per thread: set it every call.
  absl::Status Enter(const char* op) {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), absl::StrCat("cuda backend ", op));
    return absl::OkStatus();
  }
  // Waits for the stream; an error of a kernel that ran is reported here.
  absl::Status Sync(const char* op) {
    RINGATTN_CUDA_CHECK(cudaStreamSynchronize(stream_),
                        absl::StrCat("cuda backend ", op, " (completing on the stream)"));
    RINGATTN_CUDA_CHECK(cudaGetLastError(), absl::StrCat("cuda backend ", op));
    return absl::OkStatus();
  }

  const int device_;
  const bool deterministic_;
  cudaStream_t stream_;
  const std::string description_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KernelBackend>> MakeCudaBackend(int device_index,
                                                               bool deterministic) {
  RETURN_IF_ERROR(CheckCudaDevice("cuda backend", "device_index", device_index));
  RINGATTN_CUDA_CHECK(cudaSetDevice(device_index), "cuda backend");
  cudaDeviceProp prop;
  RINGATTN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index), "cuda backend");
  if (prop.major < 8) {
    return absl::UnimplementedError(absl::StrCat(
        "cuda backend: the CUDA attention kernels need compute capability 8.0 or newer; device ",
        device_index, " (", prop.name, ") is sm_", prop.major, prop.minor));
  }
  cudaStream_t stream = nullptr;
  RINGATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                      "cuda backend: creating the rank's stream");
  std::string description =
      absl::StrFormat("cuda: device %d, %s, sm_%d%d, %.1f GiB", device_index, prop.name, prop.major,
                      prop.minor, prop.totalGlobalMem / 1073741824.0);
  return std::unique_ptr<KernelBackend>(
      new CudaBackend(device_index, deterministic, stream, std::move(description)));
}

}  // namespace ringattn
