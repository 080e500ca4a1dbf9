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
#include "base/status.h"

namespace ringattn::comm {
namespace {

absl::Status CudaError(cudaError_t e, const char* file, int line, absl::string_view what) {
  const std::string msg = absl::StrCat(file, ":", line, ": ", what, ": ", cudaGetErrorName(e), " (",
                                       cudaGetErrorString(e), ")");
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver: return absl::FailedPreconditionError(msg);
    case cudaErrorMemoryAllocation: return absl::ResourceExhaustedError(msg);
    default: return absl::InternalError(msg);
  }
}

#define RINGATTN_CUDA_COMM_CHECK(expr)                          \
  do {                                                          \
    const cudaError_t ringattn_e_ = (expr);                     \
    if (ringattn_e_ != cudaSuccess) {                           \
      return CudaError(ringattn_e_, __FILE__, __LINE__, #expr); \
    }                                                           \
  } while (0)

class CudaCopier final : public LocalCopier {
 public:
  CudaCopier(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CudaCopier() override {
    if (cudaSetDevice(device_) == cudaSuccess) cudaStreamDestroy(stream_);
  }

  absl::Status Copy(void* dst, const void* src, int64_t bytes) override {
    // The copy thread's current device is its own: set it for the stream.
    RINGATTN_CUDA_COMM_CHECK(cudaSetDevice(device_));
    RINGATTN_CUDA_COMM_CHECK(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDefault, stream_));
    RINGATTN_CUDA_COMM_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  const int device_;
  cudaStream_t stream_;
};

absl::StatusOr<std::unique_ptr<LocalCopier>> MakeCopier(int device) {
  RINGATTN_CUDA_COMM_CHECK(cudaSetDevice(device));
  cudaStream_t stream = nullptr;
  RINGATTN_CUDA_COMM_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return std::unique_ptr<LocalCopier>(new CudaCopier(device, stream));
}

}  // namespace

bool CudaLocalBuilt() { return true; }

absl::StatusOr<std::unique_ptr<LocalWorld>> CreateCudaLocalWorld(int size,
                                                                 LocalWorldOptions options,
                                                                 int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();  // not left behind for the next call to report
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda-local: no CUDA device (cudaGetDeviceCount: ",
        e == cudaSuccess ? "0 devices"
                         : absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)),
        ")"));
  }
  if (device < 0 || device >= count) {
    return ArgError("cuda-local device", absl::StrCat("0..", count - 1), device);
  }
  options.name = "cuda-local";
  options.make_copier = [device](int) { return MakeCopier(device); };
  return LocalWorld::Create(size, options);
}

}  // namespace ringattn::comm
