// The device-memory helpers of cuda_memory.h on the CUDA runtime (built
// when the CUDA toolkit is found; cuda_memory_stub.cc otherwise).
#include "base/cuda_memory.h"

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/cuda_status.h"
#include "base/status.h"

namespace ringattn::cuda {
namespace {

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(int64_t bytes) {
  DeviceBuffer buf;
  if (bytes < 0) return ArgError("bytes", ">= 0", bytes);
  if (bytes == 0) return buf;
  RINGATTN_CUDA_CHECK(cudaMalloc(&buf.data_, static_cast<size_t>(bytes)), "DeviceBuffer::Allocate");
  buf.size_ = bytes;
  return buf;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

absl::Status CopyToDevice(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return absl::OkStatus();
  RINGATTN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "CopyToDevice");
  return absl::OkStatus();
}

absl::Status CopyToHost(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return absl::OkStatus();
  RINGATTN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "CopyToHost");
  return absl::OkStatus();
}

absl::Status CopyDeviceToDevice(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return absl::OkStatus();
  RINGATTN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice),
                      "CopyDeviceToDevice");
  return absl::OkStatus();
}

absl::Status Fill(void* dst, int value, int64_t bytes) {
  if (bytes <= 0) return absl::OkStatus();
  RINGATTN_CUDA_CHECK(cudaMemset(dst, value, bytes), "Fill");
  return absl::OkStatus();
}

absl::Status Synchronize(void* stream) {
  if (stream == nullptr) {
    RINGATTN_CUDA_CHECK(cudaDeviceSynchronize(), "Synchronize");
  } else {
    RINGATTN_CUDA_CHECK(cudaStreamSynchronize(AsStream(stream)), "Synchronize");
  }
  RINGATTN_CUDA_CHECK(cudaGetLastError(), "Synchronize");
  return absl::OkStatus();
}

absl::StatusOr<Stream> Stream::Create() {
  cudaStream_t s = nullptr;
  RINGATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "Stream::Create");
  Stream stream;
  stream.stream_ = s;
  return stream;
}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    Reset();
    stream_ = o.stream_;
    o.stream_ = nullptr;
  }
  return *this;
}

Stream::~Stream() { Reset(); }

void Stream::Reset() {
  if (stream_ == nullptr) return;
  cudaStreamSynchronize(AsStream(stream_));
  cudaStreamDestroy(AsStream(stream_));
  stream_ = nullptr;
}

absl::Status CopyAsync(void* dst, const void* src, int64_t bytes, void* stream) {
  if (bytes <= 0) return absl::OkStatus();
  RINGATTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, AsStream(stream)),
                      "CopyAsync");
  return absl::OkStatus();
}

absl::Status FillAsync(void* dst, int value, int64_t bytes, void* stream) {
  if (bytes <= 0) return absl::OkStatus();
  RINGATTN_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, AsStream(stream)), "FillAsync");
  return absl::OkStatus();
}

}  // namespace ringattn::cuda
