// The `nccl` communicator backend: one process per GPU, NCCL point-to-point
// (ncclSend / ncclRecv) between device buffers, on a stream of its own.
// Built when CUDA and NCCL (nccl.h) are found; libnccl.so.2 itself is
// loaded at run time (dlopen), so binaries start on machines without NCCL
// and --comm nccl then says so. Otherwise nccl_stub.cc answers
// Unimplemented.
//
// Setup (collective over the bootstrap): the ranks exchange their host
// names (local rank and count per host), each picks its GPU (NcclOptions
// device, else RINGATTN_DEVICE, else the launcher's local rank -- OMPI,
// MPICH, Slurm, torchrun variables -- or the rank's place among the ranks
// of its host, modulo the visible GPUs; CUDA_VISIBLE_DEVICES applies as
// usual), the ranks exchange the GPUs' UUIDs and refuse, on every rank,
// two ranks on one GPU (NCCL cannot), and rank 0's ncclUniqueIds travel
// through the bootstrap. Two non-blocking communicators (ncclConfig_t
// blocking = 0) are made: one for messages, one for Barrier, so that a
// message waiting for a silent peer never holds a barrier up. NCCL opens
// its own bootstrap sockets (NCCL_SOCKET_IFNAME chooses the interface).
//
// Protocol of one SendRecv (a "round"), run by the communicator's progress
// thread, the only thread that calls NCCL or uses its streams:
//   1. control messages: to each peer of the round (`to` and `from`, once
//      each when they are one rank), one fixed-size ControlMsg holding this
//      rank's header for the message it sends that peer and the header it
//      expects from that peer; one NCCL group of sends and receives of
//      ControlMsgs through device staging, then a copy to pinned host
//      memory and an event.
//   2. on the host, both ends of each message now hold the same pair
//      (the sender's header, the receiver's expected header): CheckHeader
//      decides, identically on both ranks, whether the payload moves. A
//      mismatch fails the request on BOTH ranks with both headers printed,
//      and no byte reaches the destination.
//   3. payloads: one NCCL group of the agreed ncclSend / ncclRecv on the
//      user's device buffers, then an event; the request completes when
//      it has passed.
// Stream order (SendRecvOnStream, communicator.h): the poster records an
// event on its stream and the payload group waits for it on the device
// (cudaStreamWaitEvent on the communication stream), so the ring posts a
// transfer right after queueing the kernel that produces its bytes; the
// control messages, which touch no user buffer, need not wait.
// Request::WaitOnStream makes the user's stream wait for an event after the
// payload group: the host waits for the control round trip and the header
// check, not for the round's bytes (but, rounds being sequential, for the
// previous round's).
// Waits and tests poll the state the progress thread keeps (events,
// ncclCommGetAsyncError); so a transfer progresses while the rank
// computes. Message bytes travel as ncclUint8.
//
// Semantics that differ from the local and ucx backends (NCCL matches a
// pair's operations in issue order and a pending operation holds up the
// later ones of its communicator):
// - A rank's requests run one after another, in posting order: request k
//   starts when request k-1 has completed, and is matched by the peers'
//   requests at the same place in their own order. Every rank must post
//   so that this cannot deadlock: the ring does (each SendRecv is one
//   permutation step posted by every rank), and so do one-to-one gathers
//   (tools/gather.h GatherToRoot). A pattern such as "receive from my left,
//   then, in a second request, send to my right" on every rank deadlocks;
//   it fails after the timeout naming the peers and the step. A peer
//   whose request at the same place does not involve this rank the same
//   way (a send where a receive was expected) fails both requests with
//   InvalidArgument.
// - Buffers of messages with bytes > 0 must be device memory of this
//   rank's GPU (checked with cudaPointerGetAttributes; host memory is
//   refused naming the argument).
// - Wait(timeout) returning DeadlineExceeded leaves the request pending
//   (a later Wait may still succeed). Destroying a pending request waits
//   for it up to the communicator's timeout; then a request that never
//   started is dropped, a receive-only request still exchanging headers is
//   orphaned (if its sender turns up, the payload lands in a scratch
//   buffer and is dropped), and anything else aborts the communicator,
//   since NCCL cannot cancel a transfer it was given.
// - Abort() is local: ncclCommAbort on both communicators, and every
//   pending and later call of THIS rank fails at once with Aborted naming
//   it and the reason. NCCL has no message a rank could send while it
//   aborts: peers waiting on it fail within their timeout
//   (DeadlineExceeded naming this rank and the step), or at once where
//   NCCL reports the broken connection itself (network transports). Under
//   mpirun or srun, the failing process's exit ends the job anyway.
// - An error NCCL reports asynchronously (ncclCommGetAsyncError) fails the
//   current request naming its peers and step, and aborts the
//   communicator.
// - Barrier is an allreduce of one int on the barrier communicator. One
//   that times out leaves the barriers out of step: later Barrier calls
//   fail with FailedPrecondition.
//
// Teardown: destroy every request, then (collectively) the communicator.
// A healthy one is finalized (ncclCommFinalize, bounded by the timeout)
// and destroyed; one with pending, orphaned or failed work is aborted
// (ncclCommRevoke on both NCCL communicators first, where NCCL has it, so
// that freeing one never waits for the other's stuck kernel).
//
// Tests: tests/comm/nccl_comm_test (the conformance suite and fault tests,
// one process per GPU under mpirun; label multigpu) and nccl_model_test
// (this file compiled against a CPU model of CUDA streams and NCCL
// point-to-point, ranks as threads: runs in every build).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"

namespace ringattn::comm {

struct NcclOptions {
  // Waits on peers (setup, destroyed pending requests, teardown). Zero:
  // DefaultTimeout() (RINGATTN_TIMEOUT_MS, else 60 s).
  absl::Duration timeout = absl::ZeroDuration();
  // The CUDA device of this rank, in this process's numbering; -1: the
  // environment decides (see above).
  int device = -1;
};

// A communicator made by CreateNcclCommunicator.
class NcclCommunicator : public Communicator {
 public:
  // This rank's CUDA device (this process's numbering).
  virtual int Device() const = 0;
  // Makes Device() current on the calling thread. CUDA's current device
  // is per thread and a new thread starts on device 0: call this on every
  // thread that allocates or launches for this rank.
  virtual absl::Status MakeDeviceCurrent() const = 0;
  // "NCCL 2.28.3, GPU 1 (NVIDIA H100 80GB HBM3), local rank 1 of 8 on
  // host node1": what the tools print.
  virtual std::string Description() const = 0;
};

// Whether this build has the NCCL backend (libnccl may still be missing
// at run time, and a GPU too).
bool NcclBuilt();

// One communicator of Size() = bootstrap->Size() ranks; collective over
// the bootstrap (used only during the call). Makes the chosen device
// current on the calling thread. Errors: Unimplemented when not built;
// FailedPrecondition when libnccl.so.2 cannot be loaded, there is no CUDA
// device, or two ranks of one host would share a GPU (every rank reports
// it); DeadlineExceeded when not every rank joined NCCL's setup in time.
absl::StatusOr<std::unique_ptr<NcclCommunicator>> CreateNcclCommunicator(
    Bootstrap* bootstrap, const NcclOptions& options = {});

// The CUDA devices this process sees (CUDA_VISIBLE_DEVICES applies); 0
// without a driver, and in a build without the NCCL backend.
int VisibleGpuCount();

// "NCCL 2.28.3 (libnccl.so.2), device buffers" or why it is unavailable:
// what a tool prints before any communicator exists.
std::string NcclDescription();

}  // namespace ringattn::comm
