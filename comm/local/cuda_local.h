// The `cuda-local` communicator: a LocalWorld (W ranks as threads of one
// process, local_comm.h) whose copy threads move bytes with the CUDA runtime
// (cudaMemcpyAsync with cudaMemcpyDefault on one non-blocking stream per
// receiving rank, then a stream synchronize), so that message buffers may be
// device memory (any GPU of the process, with unified addressing) or host
// memory. It is stream ordered (SendRecvOnStream, communicator.h: the copy
// thread waits for the work both ranks queued before posting, by polling an
// event, so an abort or the world's timeout still stops it; and
// Request::WaitOnStream makes a rank's stream wait for an event after the
// queued copy, so no host waits for the bytes); the streams passed to
// SendRecvOnStream and WaitOnStream must belong to the world's `device`.
// Everything else (matching, header checks, timeouts, abort) is the
// local backend's. Built with CUDA; otherwise CreateCudaLocalWorld answers
// Unimplemented.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/local/local_comm.h"

namespace ringattn::comm {

// Whether this build has the CUDA copier (a device may still be missing).
bool CudaLocalBuilt();

// A world of `size` ranks whose copies run on CUDA device `device` (its
// streams live there). options.make_copier and options.name are set here
// (name "cuda-local"). FailedPrecondition without a CUDA device.
absl::StatusOr<std::unique_ptr<LocalWorld>> CreateCudaLocalWorld(int size,
                                                                 LocalWorldOptions options = {},
                                                                 int device = 0);

}  // namespace ringattn::comm
