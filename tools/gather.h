// GatherToRoot: one buffer per rank to rank 0 over a communicator, so that
// rank 0 prints or writes for everyone (the tools with one rank per
// process: ringattn-bench, ringattn-run, ringattn-eval over ucx or nccl).
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "base/cuda_memory.h"
#include "base/status.h"
#include "comm/communicator.h"

namespace ringattn::tools {

// Rank r != 0 sends `mine` (bytes_of(r) bytes) to rank 0; rank 0 receives
// each other rank's into dest_of(r), one rank after another (a pattern the
// nccl backend's in-order requests match). `tag` tells gathers apart
// (header kind). Buffers are host memory; over nccl, which moves device
// memory only, each message is staged through a device buffer of the
// calling thread's current GPU (comm::World::Run makes it the rank's).
inline absl::Status GatherToRoot(comm::Communicator& c, int tag, const void* mine,
                                 const std::function<int64_t(int)>& bytes_of,
                                 const std::function<void*(int)>& dest_of, absl::Duration timeout) {
  auto meta = [tag](int64_t bytes) {
    comm::MessageMeta m;
    m.kind = 1000 + tag;
    m.ndim = 1;
    m.shape[0] = bytes;
    return m;
  };
  static char empty = 0;
  const bool stage = c.Name() == "nccl";
  if (c.Rank() != 0) {
    const int64_t n = bytes_of(c.Rank());
    const void* src = n > 0 ? mine : &empty;
    cuda::DeviceBuffer staged;
    if (stage && n > 0) {
      ASSIGN_OR_RETURN(staged, cuda::DeviceBuffer::Allocate(n));
      RETURN_IF_ERROR(cuda::CopyToDevice(staged.data(), mine, n));
      src = staged.data();
    }
    ASSIGN_OR_RETURN(auto request, c.SendRecv(src, n, 0, meta(n), nullptr, 0, 0,
                                              comm::MessageMeta{}));
    const absl::Status waited = request->Wait(timeout);
    // Over nccl a failed transfer ends the world before its buffers go
    // (NCCL cannot cancel a transfer it was given).
    if (!waited.ok() && stage) c.Abort(waited);
    return waited;
  }
  for (int r = 1; r < c.Size(); ++r) {
    const int64_t n = bytes_of(r);
    void* dest = n > 0 ? dest_of(r) : &empty;
    cuda::DeviceBuffer staged;
    if (stage && n > 0) {
      ASSIGN_OR_RETURN(staged, cuda::DeviceBuffer::Allocate(n));
    }
    ASSIGN_OR_RETURN(auto request, c.SendRecv(nullptr, 0, 0, comm::MessageMeta{},
                                              staged.data() != nullptr ? staged.data() : dest, n,
                                              r, meta(n)));
    if (const absl::Status waited = request->Wait(timeout); !waited.ok()) {
      if (stage) c.Abort(waited);
      return waited;
    }
    if (staged.data() != nullptr) RETURN_IF_ERROR(cuda::CopyToHost(dest, staged.data(), n));
  }
  return absl::OkStatus();
}

}  // namespace ringattn::tools
