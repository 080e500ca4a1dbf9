// absl::Status from a CUDA runtime error: the one mapping of error codes
// (CudaStatus, RINGATTN_CUDA_CHECK, and ToStatus for the CudaResult that
// the kernel launchers return, base/cuda_result.h), used by the attention
// kernels' dispatch, the device-memory helpers, the CUDA backend and the
// CUDA-aware communicators; and the two small pieces their stream-ordered
// code shares (an event marking a stream, a bounded poll). Include only
// where the CUDA runtime headers are available (or the CPU model of them
// in tests/comm/nccl_model).
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/cuda_result.h"
#include "base/status.h"

namespace ringattn {

// "file:line: what: cudaErrorX (text)", with a code that says whose fault
// it is: no device or driver -> FailedPrecondition, out of memory ->
// ResourceExhausted, a bad device index -> InvalidArgument, no kernel image
// for this GPU -> Unimplemented, anything else -> Internal.
inline absl::Status CudaStatus(cudaError_t e, const char* file, int line, absl::string_view what) {
  const std::string msg = absl::StrCat(file, ":", line, ": ", what, ": ", cudaGetErrorName(e), " (",
                                       cudaGetErrorString(e), ")");
  switch (e) {
    case cudaErrorMemoryAllocation: return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver: return absl::FailedPreconditionError(msg);
    case cudaErrorInvalidDevice: return absl::InvalidArgumentError(msg);
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion: return absl::UnimplementedError(msg);
    default: return absl::InternalError(msg);
  }
}

// OK, or CudaStatus of the error a launcher returned, at its file:line.
inline absl::Status ToStatus(const CudaResult& r) {
  if (r.ok()) return absl::OkStatus();
  return CudaStatus(r.error, r.file, r.line, r.what);
}

// OK when `device` is a CUDA device present here. Otherwise
// FailedPrecondition "<who>: no CUDA device (...)", or an ArgError naming
// `arg` with the valid range.
inline absl::Status CheckCudaDevice(absl::string_view who, absl::string_view arg, int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();  // not left behind for the next call to report
    return absl::FailedPreconditionError(absl::StrCat(
        who, ": no CUDA device (cudaGetDeviceCount: ",
        e == cudaSuccess ? "0 devices"
                         : absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)),
        ")"));
  }
  if (device < 0 || device >= count) {
    return ArgError(arg, absl::StrCat("0..", count - 1, " (CUDA devices present)"), device);
  }
  return absl::OkStatus();
}

// A new event (timing off) of CUDA device `device`, recorded on `stream`
// (a stream of that device): the mark a stream-ordered transfer waits for.
// The calling thread's current device is restored; on error no event is
// left behind.
inline cudaError_t RecordNewEvent(int device, cudaStream_t stream, cudaEvent_t* event) {
  *event = nullptr;
  int current = 0;
  cudaError_t e = cudaGetDevice(&current);
  if (e == cudaSuccess) e = cudaSetDevice(device);
  if (e != cudaSuccess) return e;
  e = cudaEventCreateWithFlags(event, cudaEventDisableTiming);
  if (e == cudaSuccess) {
    e = cudaEventRecord(*event, stream);
    if (e != cudaSuccess) {
      cudaEventDestroy(*event);
      *event = nullptr;
    }
  }
  cudaSetDevice(current);
  return e;
}

// Polls `query()` (a cudaStreamQuery or cudaEventQuery) until it answers
// anything but cudaErrorNotReady, `stop()` turns true, or `deadline`
// passes; yields at first, then naps 20 us between polls. Returns the last
// answer: cudaErrorNotReady when it stopped or ran out of time.
template <typename Query, typename Stop>
cudaError_t PollCuda(Query query, std::chrono::steady_clock::time_point deadline, Stop stop) {
  for (int polls = 0;; ++polls) {
    const cudaError_t e = query();
    if (e != cudaErrorNotReady) return e;
    if (stop() || std::chrono::steady_clock::now() > deadline) return e;
    if (polls < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
}

}  // namespace ringattn

// Returns CudaStatus(...) from the enclosing function when `expr` (a CUDA
// runtime call) fails; `what` (a string) names the operation.
#define RINGATTN_CUDA_CHECK(expr, what)                                       \
  do {                                                                        \
    const cudaError_t ringattn_e_ = (expr);                                   \
    if (ringattn_e_ != cudaSuccess) {                                         \
      return ::ringattn::CudaStatus(ringattn_e_, __FILE__, __LINE__,          \
                                    absl::StrCat(what, ": ", #expr));         \
    }                                                                         \
  } while (0)
