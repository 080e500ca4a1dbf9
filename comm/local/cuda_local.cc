// The cuda-local copier (see cuda_local.h): one non-blocking stream per
// receiving rank; each chunk is a cudaMemcpyAsync (cudaMemcpyDefault: the
// runtime tells host from device memory) followed by a synchronize, because
// the receiver's Wait() must mean "the bytes are there" for whatever runs
// next on any stream or on the host.
#include "comm/local/cuda_local.h"

#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/cuda_status.h"
#include "base/status.h"

namespace ringattn::comm {
namespace {

#define RINGATTN_CUDA_LOCAL_CHECK(expr) RINGATTN_CUDA_CHECK(expr, "cuda-local copy")

class CudaCopier final : public LocalCopier {
 public:
  CudaCopier(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CudaCopier() override {
    if (cudaSetDevice(device_) == cudaSuccess) cudaStreamDestroy(stream_);
  }

  absl::Status Copy(void* dst, const void* src, int64_t bytes) override {
    // The copy thread's current device is its own: set it for the stream.
    RINGATTN_CUDA_LOCAL_CHECK(cudaSetDevice(device_));
    RINGATTN_CUDA_LOCAL_CHECK(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDefault, stream_));
    RINGATTN_CUDA_LOCAL_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  const int device_;
  cudaStream_t stream_;
};

absl::StatusOr<std::unique_ptr<LocalCopier>> MakeCopier(int device) {
  RINGATTN_CUDA_LOCAL_CHECK(cudaSetDevice(device));
  cudaStream_t stream = nullptr;
  RINGATTN_CUDA_LOCAL_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
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
  return LocalWorld::Create(size, options);
}

}  // namespace ringattn::comm
