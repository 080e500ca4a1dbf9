// The kernel backend of a CLI tool (--backend, and what it implies for
// --comm and --dtype) and where the tool's per-rank tensors live for it:
// the tool keeps every shard in host vectors; Placement hands the ring
// views of those vectors (cpu), or of device copies (cuda) that it uploads
// on request and downloads back into the vectors with Download(). Device
// memory is that of the calling thread's current device (GPU 0).
// CheckBackendUsable says early, naming the flag, when the cuda backend
// cannot run here.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "attention/cuda/kernels.h"
#include "base/cuda_memory.h"
#include "base/status.h"
#include "runtime/ringattn.h"
#include "runtime/tensor.h"

namespace ringattn::tools {

inline absl::StatusOr<Backend> ParseBackendFlag(const std::string& name) {
  auto b = ParseBackend(name);
  if (!b.ok()) return ArgError("--backend", "cpu or cuda", absl::StrCat("'", name, "'"));
  return *b;
}

// --comm, defaulted by the backend; the cuda backend's buffers are device
// memory, which cuda-local (W ranks on one GPU) and nccl (one process per
// GPU) move, and ucx through pinned host buffers (comm::World with device_memory);
// nccl moves nothing else.
inline absl::StatusOr<std::string> CommFor(Backend backend, const std::string& flag) {
  if (flag.empty()) return std::string(backend == Backend::kCuda ? "cuda-local" : "local");
  if (backend == Backend::kCuda && flag != "cuda-local" && flag != "nccl" && flag != "ucx") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--comm ", flag,
        " moves host memory; --backend cuda needs --comm cuda-local, nccl or ucx (staged)"));
  }
  if (backend != Backend::kCuda && flag == "nccl") {
    return absl::InvalidArgumentError(
        "--comm nccl moves device memory: it needs --backend cuda (and one process per GPU)");
  }
  return flag;
}

// --dtype for the backend: fp32 | bf16 on cpu, bf16 | fp16 on cuda.
inline absl::StatusOr<DType> DTypeFor(Backend backend, const std::string& flag) {
  DType dtype;
  if (!ParseDType(flag, &dtype)) return ArgError("--dtype", "fp32, bf16 or fp16", flag);
  if (backend == Backend::kCpu && dtype == DType::kFloat16) {
    return absl::InvalidArgumentError(
        "--dtype fp16: the cpu backend stores fp32 or bf16 (fp16 needs --backend cuda)");
  }
  if (backend == Backend::kCuda && dtype == DType::kFloat32) {
    return absl::InvalidArgumentError(
        "--dtype fp32: the cuda backend takes bf16 or fp16; pass --dtype bf16 or --dtype fp16");
  }
  return dtype;
}

// Unimplemented when the backend is not built, FailedPrecondition when
// there is no device for it.
inline absl::Status CheckBackendUsable(Backend backend) {
  if (backend != Backend::kCuda) return absl::OkStatus();
  if (!BackendBuilt(backend)) {
    return absl::UnimplementedError(
        "--backend cuda: this build has no CUDA backend (ringattn was built without CUDA: "
        "RINGATTN_CUDA not found)");
  }
  if (!cuda::DeviceAvailable()) {
    return absl::FailedPreconditionError("--backend cuda: no CUDA device found");
  }
  return absl::OkStatus();
}

class Placement {
 public:
  explicit Placement(Backend backend) : device_(backend == Backend::kCuda) {}

  // A contiguous view of `host` (`bytes` bytes) with `shape`, on the
  // backend's device; `upload`: the device copy starts with host's bytes.
  absl::StatusOr<TensorView> Place(void* host, int64_t bytes, DType dtype,
                                   std::initializer_list<int64_t> shape, bool upload) {
    if (!device_) return TensorView::Contiguous(host, dtype, shape, Device::kCpu);
    ASSIGN_OR_RETURN(cuda::DeviceBuffer buf, cuda::DeviceBuffer::Allocate(bytes));
    if (upload && bytes > 0) {
      RETURN_IF_ERROR(cuda::CopyToDevice(buf.data(), host, bytes));
      // A pageable upload may return before its DMA lands, and the ring's
      // streams do not wait for the default stream: wait here.
      RETURN_IF_ERROR(cuda::Synchronize(nullptr));
    }
    const TensorView view = TensorView::Contiguous(buf.data(), dtype, shape, Device::kCuda);
    items_.push_back(Item{host, bytes, std::move(buf)});
    return view;
  }
  template <typename T>
  absl::StatusOr<TensorView> Place(std::vector<T>& host, DType dtype,
                                   std::initializer_list<int64_t> shape, bool upload) {
    return Place(host.data(), static_cast<int64_t>(host.size() * sizeof(T)), dtype, shape, upload);
  }

  // Device copies -> their host vectors (nothing to do on the cpu); with a
  // stream, the copies are queued on it (after the work already there) and
  // waited for.
  absl::Status Download(void* stream = nullptr) {
    for (Item& it : items_) {
      if (stream == nullptr) {
        RETURN_IF_ERROR(cuda::CopyToHost(it.host, it.buf.data(), it.bytes));
      } else {
        RETURN_IF_ERROR(cuda::CopyAsync(it.host, it.buf.data(), it.bytes, stream));
      }
    }
    if (stream != nullptr && !items_.empty()) return cuda::Synchronize(stream);
    return absl::OkStatus();
  }

 private:
  struct Item {
    void* host;
    int64_t bytes;
    cuda::DeviceBuffer buf;
  };
  bool device_;
  std::vector<Item> items_;
};

}  // namespace ringattn::tools
