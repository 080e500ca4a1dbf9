// The device-memory helpers of cuda_memory.h when the CUDA toolkit was not
// found at build time: everything links and every call answers
// Unimplemented, so callers need no #ifdef.
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/cuda_memory.h"

namespace ringattn::cuda {
namespace {

absl::Status NotBuilt() {
  return absl::UnimplementedError("ringattn was built without CUDA (RINGATTN_CUDA not found)");
}

}  // namespace

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(int64_t) { return NotBuilt(); }
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  data_ = o.data_;
  size_ = o.size_;
  o.data_ = nullptr;
  o.size_ = 0;
  return *this;
}
DeviceBuffer::~DeviceBuffer() = default;
absl::Status CopyToDevice(void*, const void*, int64_t) { return NotBuilt(); }
absl::Status CopyToHost(void*, const void*, int64_t) { return NotBuilt(); }
absl::Status CopyDeviceToDevice(void*, const void*, int64_t) { return NotBuilt(); }
absl::Status Fill(void*, int, int64_t) { return NotBuilt(); }
absl::Status Synchronize(void*) { return NotBuilt(); }

absl::StatusOr<Stream> Stream::Create() { return NotBuilt(); }
Stream& Stream::operator=(Stream&& o) noexcept {
  stream_ = o.stream_;
  o.stream_ = nullptr;
  return *this;
}
Stream::~Stream() = default;
void Stream::Reset() { stream_ = nullptr; }
absl::Status CopyAsync(void*, const void*, int64_t, void*) { return NotBuilt(); }
absl::Status FillAsync(void*, int, int64_t, void*) { return NotBuilt(); }

}  // namespace ringattn::cuda
