// A Communicator that moves device memory over a host-memory transport
// (UCX without CUDA transports, as Debian's UCX 1.13 is): a send is copied
// into a pinned host buffer before it is posted, and a receive lands in a
// pinned host buffer and is copied to its destination only when the inner
// request completes -- after the inner transport checked the header, so a
// refused or truncated message never reaches the destination. Host buffers
// come from a pool and are reused across ring steps.
//
// The copies belong to a Stager: MakeCudaStager (cudaHostAlloc'd buffers,
// cudaMemcpy with cudaMemcpyDefault, so host pointers work too) or
// MakeHostStager (malloc and memcpy: what the tests use on a CPU).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/communicator.h"

namespace ringattn::comm {

class Stager {
 public:
  virtual ~Stager() = default;
  virtual absl::StatusOr<void*> AllocHost(int64_t bytes) = 0;
  virtual void FreeHost(void* host) = 0;
  // Both block until the bytes are there.
  virtual absl::Status ToHost(void* host, const void* src, int64_t bytes) = 0;
  virtual absl::Status FromHost(void* dst, const void* host, int64_t bytes) = 0;
  // "pinned host buffers, device 0", for the tools' summaries.
  virtual std::string Describe() const = 0;
};

// memcpy and malloc.
std::unique_ptr<Stager> MakeHostStager();
// CUDA device `device`; Unimplemented without CUDA, FailedPrecondition
// without a device.
absl::StatusOr<std::unique_ptr<Stager>> MakeCudaStager(int device);

// CUDA devices present (0 without CUDA or without a device).
int CudaDeviceCount();

// Wraps `inner` (not owned; it must outlive the result and its requests).
// `timeout`: the inner communicator's, how long a destroyed pending request
// waits for its transfer before it gives up (its bytes then do not land).
std::unique_ptr<Communicator> MakeStagedCommunicator(Communicator* inner,
                                                     std::unique_ptr<Stager> stager,
                                                     absl::Duration timeout);

}  // namespace ringattn::comm
