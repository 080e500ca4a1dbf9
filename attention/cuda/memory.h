// Device memory for callers that must not include CUDA headers (tests,
// tools, the runtime): an owning buffer and checked copies. Every function
// returns a Status (Unimplemented when CUDA was not built; the CUDA error
// name and file:line otherwise).
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

}  // namespace ringattn::cuda
