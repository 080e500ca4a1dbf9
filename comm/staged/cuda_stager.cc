// The CUDA Stager (see staged_comm.h): pinned host buffers
// (cudaHostAlloc, portable) and blocking cudaMemcpy with cudaMemcpyDefault,
// so that device and host sources both work. The device is made current
// on the calling thread first (the transport's threads are not the rank's).
#include <cuda_runtime_api.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "base/cuda_status.h"
#include "base/status.h"
#include "comm/staged/staged_comm.h"

namespace ringattn::comm {
namespace {

class CudaStager final : public Stager {
 public:
  explicit CudaStager(int device) : device_(device) {}
  absl::StatusOr<void*> AllocHost(int64_t bytes) override {
    void* p = nullptr;
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), "staging");
    RINGATTN_CUDA_CHECK(cudaHostAlloc(&p, static_cast<size_t>(bytes), cudaHostAllocPortable),
                        "staging");
    return p;
  }
  void FreeHost(void* host) override { cudaFreeHost(host); }
  absl::Status ToHost(void* host, const void* src, int64_t bytes) override {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), "staging");
    RINGATTN_CUDA_CHECK(cudaMemcpy(host, src, static_cast<size_t>(bytes), cudaMemcpyDefault),
                        "staging to host");
    return absl::OkStatus();
  }
  absl::Status FromHost(void* dst, const void* host, int64_t bytes) override {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), "staging");
    RINGATTN_CUDA_CHECK(cudaMemcpy(dst, host, static_cast<size_t>(bytes), cudaMemcpyDefault),
                        "staging from host");
    return absl::OkStatus();
  }
  std::string Describe() const override {
    return absl::StrCat("device memory staged through pinned host buffers (GPU ", device_, ")");
  }

 private:
  const int device_;
};

}  // namespace

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

absl::StatusOr<std::unique_ptr<Stager>> MakeCudaStager(int device) {
  RETURN_IF_ERROR(CheckCudaDevice("staging", "device", device));
  return std::unique_ptr<Stager>(new CudaStager(device));
}

}  // namespace ringattn::comm
