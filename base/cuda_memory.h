// Device memory for callers that must not include CUDA headers (tests,
// tools, the runtime): an owning buffer, a stream, and checked copies and
// fills. Every function returns a Status: the CUDA error name and file:line
// (base/cuda_status.h). Two variants: cuda_memory.cc on the CUDA runtime,
// and cuda_memory_stub.cc for builds without the CUDA toolkit, where every
// call answers Unimplemented, so callers need no #ifdef.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringattn::cuda {

// cudaMalloc'd bytes, freed on destruction; move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Allocate(int64_t bytes);
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  int64_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  int64_t size_ = 0;
};

absl::Status CopyToDevice(void* dst, const void* src, int64_t bytes);
absl::Status CopyToHost(void* dst, const void* src, int64_t bytes);
absl::Status CopyDeviceToDevice(void* dst, const void* src, int64_t bytes);
// Sets `bytes` bytes to `value` (0..255), like memset.
absl::Status Fill(void* dst, int value, int64_t bytes);
// Waits for the stream (nullptr: the whole device) and reports any error
// raised by the work queued on it.
absl::Status Synchronize(void* stream);

// A non-blocking stream of the current device, destroyed (after it drains)
// with the object: what a caller of RingAttention::ForwardOnStream holds.
class Stream {
 public:
  Stream() = default;
  static absl::StatusOr<Stream> Create();
  Stream(Stream&& o) noexcept : stream_(o.stream_) { o.stream_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
  void* get() const { return stream_; }  // a cudaStream_t

 private:
  void Reset();  // waits for the stream, destroys it
  void* stream_ = nullptr;
};

// Enqueued on `stream`: a copy (host or device memory on either side; host
// memory not pinned makes the call wait for its part) and a memset.
absl::Status CopyAsync(void* dst, const void* src, int64_t bytes, void* stream);
absl::Status FillAsync(void* dst, int value, int64_t bytes, void* stream);

}  // namespace ringattn::cuda
