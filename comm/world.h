// The world factory: from a few options, the communicators of this process
// with their rank, size and local rank. Everything that builds
// communicators -- the CLI tools, the Python package -- goes through here;
// nothing outside comm/ includes a backend's header. Backends:
//   local       W ranks as threads of this process (memcpy)
//   cuda-local  the same, copying with the CUDA runtime: buffers may be
//               device memory of GPU `device`
//   ucx         one rank per process, host memory; with device_memory the
//               buffers are device memory staged through pinned host
//               buffers (comm/staged/: Debian's UCX has no CUDA transport)
//   nccl        one rank per process and GPU, device memory
// Bootstraps, how the processes of ucx and nccl find each other:
//   environment  MPI under mpirun (when built), else the file store in
//                RINGATTN_STORE_DIR; the launch (comm/launch.h) gives rank,
//                size and job id
//   mpi, file    the one named
//   external     the caller's Bootstrap (the Python package exchanges the
//                blobs through its torch.distributed group)
//   in-process   the local backends: no bootstrap at all
// The timeout (ResolveTimeout: the option, else RINGATTN_TIMEOUT_MS, else
// 60 s) and the GPU (ChooseDevice: the option, else RINGATTN_DEVICE, else
// the launcher's local rank) are resolved once, here.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"

namespace ringattn::comm {

class LocalWorld;

enum class BootstrapKind : uint8_t { kEnvironment, kMpi, kFile, kExternal, kInProcess };

struct WorldOptions {
  std::string backend = "local";  // local | cuda-local | ucx | nccl
  // local, cuda-local: the ranks of this process (>= 1). ucx, nccl: the
  // launched world size, which must then agree; 0 takes the launcher's.
  int ranks = 1;
  BootstrapKind bootstrap = BootstrapKind::kEnvironment;  // ucx, nccl
  Bootstrap* external_bootstrap = nullptr;  // kExternal; used during Create only
  absl::Duration timeout = absl::ZeroDuration();  // 0: RINGATTN_TIMEOUT_MS, else 60 s
  // The GPU of cuda-local, nccl, and ucx with device_memory; -1: the
  // environment's (RINGATTN_DEVICE, else the local rank; 0 for cuda-local).
  int device = -1;
  bool device_memory = false;  // ucx: message buffers are device memory
};

// Whether this build has the backend `name` (its devices may still be
// missing), and the names of all backends.
bool BackendBuilt(const std::string& name);
const char* BackendNames();  // "local, cuda-local, ucx, nccl"

class World {
 public:
  // Collective for ucx and nccl (every process of the launch calls it).
  // InvalidArgument naming the option for a bad one; Unimplemented for a
  // backend this build lacks; FailedPrecondition for a launch that is not
  // there (no launcher variables) or a missing device.
  static absl::StatusOr<std::unique_ptr<World>> Create(const WorldOptions& options);
  // One rank per process: unless Run left the ranks in step, waits at a
  // barrier (the configured timeout at most) until every peer is done with
  // it, then closes.
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int size() const { return size_; }
  // The ranks this process drives, in rank order (all of them for local
  // backends, one for ucx and nccl).
  const std::vector<Communicator*>& comms() const { return comms_; }
  bool one_rank_per_process() const { return remote_ != nullptr; }
  bool root() const { return comms_[0]->Rank() == 0; }
  int local_rank() const { return local_rank_; }
  // The GPU of this process's ranks (RingOptions::device_index); 0 where
  // none is used.
  int device() const { return device_; }
  absl::Duration timeout() const { return timeout_; }
  // "ucx: 4 processes (one rank each), bootstrap mpi, UCX 1.13.1 ...".
  std::string Describe() const;

  // Runs body(comm) for each rank of this process, on a thread each (with
  // the rank's GPU current for nccl); for ucx and nccl a rank's error
  // aborts its communicator, so that its peers stop promptly instead of
  // waiting out their timeouts. Returns the first error. One rank per
  // process: a successful body ends with a barrier (the configured timeout),
  // so that no rank closes while a peer still receives from it; a failure
  // (or a peer missing at that barrier) also keeps MPI from finalizing at
  // exit, which would wait for a stopped peer forever.
  absl::Status Run(const std::function<absl::Status(Communicator&)>& body);

 private:
  World() = default;
  absl::Status CreateLocal(const WorldOptions& options);
  absl::Status CreateRemote(const WorldOptions& options);

  std::string name_;
  int size_ = 1;
  int local_rank_ = 0;
  int device_ = 0;
  absl::Duration timeout_;
  bool nccl_ = false;
  bool in_step_ = false;  // the last Run ended at a barrier; nothing sent since
  bool failed_ = false;   // a Run failed: the world is aborted, nobody to wait for
  std::unique_ptr<LocalWorld> local_;
  std::unique_ptr<Bootstrap> bootstrap_;
  std::string bootstrap_name_;
  std::unique_ptr<Communicator> remote_;
  std::unique_ptr<Communicator> staged_;  // over remote_: ucx with device memory
  std::string remote_description_;
  std::function<absl::Status()> make_device_current_;  // nccl
  std::vector<Communicator*> comms_;
};

}  // namespace ringattn::comm
