// The cuda-local copier (see cuda_local.h): one non-blocking stream per
// receiving rank; a message is one cudaMemcpyAsync per GiB (cudaMemcpyDefault:
// the runtime tells host from device memory), then an event (the copier's mark)
// and a synchronize, because a request completes only when the bytes are
// there for whatever runs next on any stream or on the host. Stream order:
// SendRecvOnStream records an event on the poster's stream (the poster's
// mark); the copy thread waits for the marks of both sides before the
// copy, so neither rank synchronizes its compute stream to post a
// transfer; and Request::WaitOnStream makes a rank's stream wait for the
// copier's mark, so no rank's host waits for the bytes either.
#include "comm/local/cuda_local.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/cuda_status.h"
#include "base/status.h"

namespace ringattn::comm {
namespace {

// An event recorded on `stream` (of `device`), destroyed with the mark. The
// calling thread's current device is restored.
absl::StatusOr<std::shared_ptr<void>> MarkStream(int device, void* stream) {
  cudaEvent_t event = nullptr;
  RINGATTN_CUDA_CHECK(RecordNewEvent(device, static_cast<cudaStream_t>(stream), &event),
                      "cuda-local: marking the stream");
  return std::shared_ptr<void>(event, [](void* ev) { cudaEventDestroy(static_cast<cudaEvent_t>(ev)); });
}

class CudaCopier final : public LocalCopier {
 public:
  CudaCopier(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CudaCopier() override {
    if (cudaSetDevice(device_) == cudaSuccess) cudaStreamDestroy(stream_);
  }

  absl::Status Copy(void* dst, const void* src, int64_t bytes) override {
    // The copy thread's current device is its own: set it for the stream.
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), "cuda-local copy");
    RINGATTN_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDefault, stream_),
        "cuda-local copy");
    return absl::OkStatus();
  }

  absl::Status Flush() override {
    RINGATTN_CUDA_CHECK(cudaStreamSynchronize(stream_), "cuda-local copy");
    return absl::OkStatus();
  }

  absl::StatusOr<std::shared_ptr<void>> Mark() override { return MarkStream(device_, stream_); }

  // Whole messages, up to 1 GiB: a device-to-device copy of that size takes
  // about a millisecond; 4 MiB chunks meant 32 launches and synchronizes
  // per 128 MiB block (the isolated block transfer reached only 225 GB/s
  // on an H100 that way; not yet measured without the chunks).
  int64_t MaxChunkBytes() const override { return int64_t{1} << 30; }

  // Polls the marks on the host rather than queueing a device-side wait:
  // a rank whose stream never gets there (its caller's stream is stuck)
  // then costs a timeout and an abort, not a copy thread blocked forever
  // and a copy that lands after its request has failed.
  absl::Status After(const void* send_mark, const void* recv_mark,
                     const std::atomic<bool>& aborted, absl::Duration timeout) override {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), "cuda-local copy");
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    for (const void* mark : {send_mark, recv_mark}) {
      if (mark == nullptr) continue;
      const auto event = static_cast<cudaEvent_t>(const_cast<void*>(mark));
      const cudaError_t e = PollCuda([event] { return cudaEventQuery(event); }, deadline,
                                     [&aborted] { return aborted.load(std::memory_order_relaxed); });
      if (e == cudaSuccess) continue;
      if (e != cudaErrorNotReady) RINGATTN_CUDA_CHECK(e, "cuda-local copy");
      if (aborted.load(std::memory_order_relaxed)) {
        return absl::AbortedError("aborted while waiting for the posting rank's stream");
      }
      return absl::DeadlineExceededError(absl::StrCat(
          "the ", mark == send_mark ? "sender" : "receiver",
          "'s stream did not reach the transfer within ", absl::FormatDuration(timeout)));
    }
    return absl::OkStatus();
  }

 private:
  const int device_;
  cudaStream_t stream_;
};

absl::StatusOr<std::unique_ptr<LocalCopier>> MakeCopier(int device) {
  RINGATTN_CUDA_CHECK(cudaSetDevice(device), "cuda-local copy");
  cudaStream_t stream = nullptr;
  RINGATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cuda-local copy");
  return std::unique_ptr<LocalCopier>(new CudaCopier(device, stream));
}

}  // namespace

bool CudaLocalBuilt() { return true; }

absl::StatusOr<std::unique_ptr<LocalWorld>> CreateCudaLocalWorld(int size,
                                                                 LocalWorldOptions options,
                                                                 int device) {
  RETURN_IF_ERROR(CheckCudaDevice("cuda-local", "cuda-local device", device));
  options.name = "cuda-local";
  options.make_copier = [device](int) { return MakeCopier(device); };
  options.mark_stream = [device](void* stream) { return MarkStream(device, stream); };
  options.wait_mark = [](void* stream, const void* mark) -> absl::Status {
    RINGATTN_CUDA_CHECK(
        cudaStreamWaitEvent(static_cast<cudaStream_t>(stream),
                            static_cast<cudaEvent_t>(const_cast<void*>(mark)), 0),
        "cuda-local: making a rank's stream wait for a copy");
    return absl::OkStatus();
  };
  return LocalWorld::Create(size, options);
}

}  // namespace ringattn::comm
