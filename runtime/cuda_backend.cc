// The CUDA KernelBackend: attention/cuda kernels on one GPU, device memory,
// one non-blocking CUDA stream per backend instance (one per ring rank, so
// W virtual ranks on one GPU run their kernels concurrently).
//
// Every call only ENQUEUES on the stream (after checking the launch) and
// returns; the waits for the GPU are Synchronize and TimedSeconds, which
// poll within a timeout (so a stream stuck behind a transfer that never
// lands becomes an error, not a hang), and Free and the destructor, which
// wait for the stream without a limit (freeing memory that queued kernels
// still use would be worse). The ring orders the communicator after the
// kernels with events (backend.h). Compute time is measured with event
// pairs on the stream. Built only with CUDA (cuda_backend_stub.cc
// otherwise).
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "attention/cuda/kernels.h"
#include "attention/cuda/traits.h"
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

class CudaBackend final : public KernelBackend {
 public:
  CudaBackend(int device, bool deterministic, cudaStream_t stream, cudaEvent_t order_event,
              std::string description)
      : device_(device),
        deterministic_(deterministic),
        stream_(stream),
        order_event_(order_event),
        description_(std::move(description)) {}
  ~CudaBackend() override {
    if (cudaSetDevice(device_) != cudaSuccess) return;
    cudaStreamSynchronize(stream_);  // nothing of ours may run after the memory is gone
    for (DeviceCopy* c : {&docs_, &blocks_}) {
      if (c->device != nullptr) cudaFree(c->device);
    }
    for (cudaEvent_t e : timing_events_) cudaEventDestroy(e);
    cudaEventDestroy(order_event_);
    cudaStreamDestroy(stream_);
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
    if (t.ndim == 4 && !cuda::HeadDimBuilt(t.shape[3])) {
      return absl::UnimplementedError(absl::StrCat(
          name, " head dim: the CUDA kernels are built for 64, 128 and 256, not ", t.shape[3]));
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
    ASSIGN_OR_RETURN(const AttnParams dp, WithDeviceMask(p));
    return In("forward", cuda::Forward(dp, stream_));
  }
  absl::Status Backward(const AttnParams& p) override {
    RETURN_IF_ERROR(Enter("backward"));
    ASSIGN_OR_RETURN(const AttnParams dp, WithDeviceMask(p));
    return In("backward", cuda::Backward(dp, deterministic_, stream_));
  }
  absl::Status Merge(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                     int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim) override {
    RETURN_IF_ERROR(Enter("merge"));
    return In("merge", cuda::MergePartial(acc_out, acc_lse, part_out, part_lse, batch, seqlen,
                                          heads, head_dim, stream_));
  }
  absl::Status RowDot(const TensorView& dout, const TensorView& out, float* dsum) override {
    RETURN_IF_ERROR(Enter("rowdot"));
    return In("rowdot", cuda::RowDot(dout.data, BshdStrides(dout), dout.dtype, out.data, BshdStrides(out),
                                     out.dtype, dsum, out.shape[0], out.shape[1], out.shape[2],
                                     out.shape[3], stream_));
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
    cudaStreamSynchronize(stream_);  // kernels still queued may use it
    cudaFree(ptr);
  }
  absl::Status Fill(float* dst, int64_t n, float value) override {
    RETURN_IF_ERROR(Enter("fill"));
    RINGATTN_CUDA_CHECK(cuda_backend::LaunchFill(dst, n, value, stream_), "cuda backend fill");
    return absl::OkStatus();
  }
  absl::Status Add(float* dst, const float* src, int64_t n) override {
    RETURN_IF_ERROR(Enter("add"));
    RINGATTN_CUDA_CHECK(cuda_backend::LaunchAdd(dst, src, n, stream_), "cuda backend add");
    return absl::OkStatus();
  }
  // `p` with its mask's documents and block mask in device memory, where
  // the kernels read them.
  absl::StatusOr<AttnParams> WithDeviceMask(const AttnParams& p) {
    AttnParams d = p;
    if (p.mask.HasDocuments()) {
      const int64_t n = p.mask.num_docs + 1;
      ASSIGN_OR_RETURN(const void* at, Upload(docs_, p.mask.cu_seqlens, n * sizeof(int64_t),
                                              "cu_seqlens"));
      d.mask.cu_seqlens = static_cast<const int64_t*>(at);
    }
    if (p.mask.HasBlocks()) {
      const Mask& m = p.mask;
      ASSIGN_OR_RETURN(const void* at, Upload(blocks_, m.blocks,
                                              m.block_heads * m.block_rows * m.block_cols,
                                              "block mask"));
      d.mask.blocks = static_cast<const uint8_t*>(at);
    }
    return d;
  }
  // A device copy of host bytes [src, src + bytes) kept in `slot`: uploaded
  // on first use (the one call that waits for the rank's stream on a
  // caller's stream) and again only when they change (an engine's mask
  // never does).
  struct DeviceCopy {
    std::vector<uint8_t> host;  // as uploaded
    void* device = nullptr;
  };
  absl::StatusOr<const void*> Upload(DeviceCopy& slot, const void* src, int64_t bytes,
                                     const char* what) {
    const auto* b = static_cast<const uint8_t*>(src);
    if (slot.device == nullptr || !std::equal(b, b + bytes, slot.host.begin(), slot.host.end())) {
      slot.host.clear();
      if (slot.device != nullptr) Free(slot.device);
      slot.device = nullptr;
      ASSIGN_OR_RETURN(slot.device, Allocate(bytes));
      RETURN_IF_ERROR(Copy(slot.device, src, bytes, what));
      slot.host.assign(b, b + bytes);
    }
    return slot.device;
  }

  // A copy on the rank's stream, waited for (small messages only).
  absl::Status Copy(void* dst, const void* src, int64_t bytes, const char* what) {
    RETURN_IF_ERROR(Enter(what));
    RINGATTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDefault,
                                        stream_),
                        absl::StrCat("cuda backend ", what));
    RINGATTN_CUDA_CHECK(cudaStreamSynchronize(stream_), absl::StrCat("cuda backend ", what));
    return absl::OkStatus();
  }
  absl::Status Pack(const TensorView& src, void* dst) override {
    RETURN_IF_ERROR(Enter("pack"));
    RINGATTN_CUDA_CHECK(
        cuda_backend::LaunchPack(src.data, ViewOf(src), static_cast<int>(DTypeSize(src.dtype)), dst,
                                 stream_),
        "cuda backend pack");
    return absl::OkStatus();
  }
  absl::Status Unpack(const float* src, const TensorView& dst) override {
    RETURN_IF_ERROR(Enter("unpack"));
    RINGATTN_CUDA_CHECK(cuda_backend::LaunchUnpack(src, ViewOf(dst), dst.dtype, dst.data, stream_),
                        "cuda backend unpack");
    return absl::OkStatus();
  }

  absl::Status CopyFromHost(void* dst, const void* host_src, int64_t bytes) override {
    return Copy(dst, host_src, bytes, "copying from the host");
  }
  absl::Status CopyToHost(void* host_dst, const void* src, int64_t bytes) override {
    return Copy(host_dst, src, bytes, "copying to the host");
  }

  void* Stream() const override { return stream_; }
  absl::Status WaitForStream(void* stream) override {
    RETURN_IF_ERROR(Enter("ordering after the caller's stream"));
    RINGATTN_CUDA_CHECK(cudaEventRecord(order_event_, static_cast<cudaStream_t>(stream)),
                        "cuda backend: recording an event on the caller's stream");
    RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(stream_, order_event_, 0),
                        "cuda backend: ordering after the caller's stream");
    return absl::OkStatus();
  }
  absl::Status MakeStreamWait(void* stream) override {
    RETURN_IF_ERROR(Enter("ordering the caller's stream"));
    RINGATTN_CUDA_CHECK(cudaEventRecord(order_event_, stream_),
                        "cuda backend: recording an event on the rank's stream");
    RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), order_event_, 0),
                        "cuda backend: ordering the caller's stream");
    return absl::OkStatus();
  }
  absl::Status Synchronize(absl::Duration timeout) override {
    RETURN_IF_ERROR(Enter("synchronize"));
    RETURN_IF_ERROR(Poll([this] { return cudaStreamQuery(stream_); }, timeout,
                         "the rank's kernels (reported when completing the stream)"));
    RINGATTN_CUDA_CHECK(cudaGetLastError(), "cuda backend synchronize");
    return absl::OkStatus();
  }

  absl::Status StartTiming() override {
    timed_ = 0;
    return absl::OkStatus();
  }
  absl::Status BeginTimed() override { return RecordTiming(); }
  absl::Status EndTimed() override { return RecordTiming(); }
  absl::StatusOr<double> TimedSeconds(absl::Duration timeout) override {
    RETURN_IF_ERROR(Enter("timing"));
    double seconds = 0;
    for (size_t i = 0; i + 1 < timed_; i += 2) {
      const cudaEvent_t end = timing_events_[i + 1];
      RETURN_IF_ERROR(Poll([end] { return cudaEventQuery(end); }, timeout, "timing"));
      float ms = 0;
      RINGATTN_CUDA_CHECK(cudaEventElapsedTime(&ms, timing_events_[i], timing_events_[i + 1]),
                          "cuda backend: timing");
      seconds += ms * 1e-3;
    }
    return seconds;
  }

 private:
  // The calling thread's current device is per thread: set it every call.
  absl::Status Enter(const char* op) {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), absl::StrCat("cuda backend ", op));
    return absl::OkStatus();
  }
  // Polls `query` (cudaStreamQuery or cudaEventQuery) until it answers
  // cudaSuccess, an error, or `timeout` passes (DeadlineExceeded).
  template <typename Query>
  absl::Status Poll(Query query, absl::Duration timeout, const char* what) {
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    const cudaError_t e = PollCuda(query, deadline, [] { return false; });
    if (e == cudaSuccess) return absl::OkStatus();
    if (e != cudaErrorNotReady) {
      return CudaStatus(e, __FILE__, __LINE__, absl::StrCat("cuda backend: ", what));
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "cuda backend: ", what, ": the work queued on device ", device_, " did not finish within ",
        absl::FormatDuration(timeout), " (a transfer or a caller's stream it waits for may be stuck)"));
  }
  // Records the next event of the timing pool (grown on demand, kept).
  absl::Status RecordTiming() {
    RETURN_IF_ERROR(Enter("timing"));
    if (timed_ == timing_events_.size()) {
      cudaEvent_t e = nullptr;
      RINGATTN_CUDA_CHECK(cudaEventCreate(&e), "cuda backend: creating a timing event");
      timing_events_.push_back(e);
    }
    RINGATTN_CUDA_CHECK(cudaEventRecord(timing_events_[timed_], stream_), "cuda backend: timing");
    ++timed_;
    return absl::OkStatus();
  }

  const int device_;
  const bool deterministic_;
  cudaStream_t stream_;
  cudaEvent_t order_event_;  // caller's stream <-> this stream
  const std::string description_;
  std::vector<cudaEvent_t> timing_events_;  // begin, end, begin, end, ...
  DeviceCopy docs_;    // the mask's documents on the device
  DeviceCopy blocks_;  // and its block mask
  size_t timed_ = 0;                        // events recorded since StartTiming
};

}  // namespace

bool CudaBackendBuilt() { return true; }

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
  cudaEvent_t order_event = nullptr;
  const cudaError_t e = cudaEventCreateWithFlags(&order_event, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    cudaStreamDestroy(stream);
    return CudaStatus(e, __FILE__, __LINE__, "cuda backend: creating an event");
  }
  std::string description =
      absl::StrFormat("cuda: device %d, %s, sm_%d%d, %.1f GiB", device_index, prop.name, prop.major,
                      prop.minor, prop.totalGlobalMem / 1073741824.0);
  return std::unique_ptr<KernelBackend>(
      new CudaBackend(device_index, deterministic, stream, order_event, std::move(description)));
}

}  // namespace ringattn
