// The world factory: see world.h.
#include "comm/world.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/launch.h"
#include "comm/local/cuda_local.h"
#include "comm/local/local_comm.h"
#include "comm/nccl/nccl_comm.h"
#include "comm/staged/staged_comm.h"
#include "comm/ucx/ucx_comm.h"

namespace ringattn::comm {

bool BackendBuilt(const std::string& name) {
  if (name == "local") return true;
  if (name == "cuda-local") return CudaLocalBuilt();
  if (name == "ucx") return UcxBuilt();
  if (name == "nccl") return NcclBuilt();
  return false;
}

const char* BackendNames() { return "local, cuda-local, ucx, nccl"; }

absl::StatusOr<std::unique_ptr<World>> World::Create(const WorldOptions& options) {
  auto world = std::unique_ptr<World>(new World);
  world->name_ = options.backend;
  ASSIGN_OR_RETURN(world->timeout_, ResolveTimeout(options.timeout, "timeout"));
  if (options.device < -1) return ArgError("device", ">= 0 (-1: from the environment)", options.device);
  if (options.backend == "local" || options.backend == "cuda-local") {
    RETURN_IF_ERROR(world->CreateLocal(options));
  } else if (options.backend == "ucx" || options.backend == "nccl") {
    RETURN_IF_ERROR(world->CreateRemote(options));
  } else {
    return absl::UnimplementedError(absl::StrCat("comm ", options.backend,
                                                 ": not a communicator of this build (",
                                                 BackendNames(), ")"));
  }
  return world;
}

absl::Status World::CreateLocal(const WorldOptions& options) {
  if (options.ranks < 1) return ArgError("ranks", ">= 1", options.ranks);
  if (options.bootstrap != BootstrapKind::kEnvironment &&
      options.bootstrap != BootstrapKind::kInProcess) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bootstrap: the ", name_, " communicator runs its ranks in this process (in-process)"));
  }
  LocalWorldOptions local;
  local.timeout = timeout_;
  if (name_ == "local") {
    ASSIGN_OR_RETURN(local_, LocalWorld::Create(options.ranks, local));
  } else {
    device_ = options.device < 0 ? 0 : options.device;
    ASSIGN_OR_RETURN(local_, CreateCudaLocalWorld(options.ranks, local, device_));
  }
  for (int r = 0; r < options.ranks; ++r) comms_.push_back(&local_->Comm(r));
  size_ = options.ranks;
  return absl::OkStatus();
}

absl::Status World::CreateRemote(const WorldOptions& options) {
  const bool nccl = name_ == "nccl";
  if (!BackendBuilt(name_)) {
    return (nccl ? CreateNcclCommunicator(nullptr).status()
                 : CreateUcxCommunicator(nullptr).status());
  }
  if (options.ranks < 0) return ArgError("ranks", ">= 0 (0: the launcher's world size)", options.ranks);
  ASSIGN_OR_RETURN(const LaunchInfo launch, DetectLaunch());
  switch (options.bootstrap) {
    case BootstrapKind::kExternal:
      if (options.external_bootstrap == nullptr) {
        return absl::InvalidArgumentError("bootstrap: external, but no external_bootstrap given");
      }
      break;
    case BootstrapKind::kInProcess:
      return absl::InvalidArgumentError(absl::StrCat(
          "bootstrap: in-process is for the local communicators; ", name_,
          " runs one rank per process (environment, mpi, file or external)"));
    case BootstrapKind::kMpi: {
      ASSIGN_OR_RETURN(bootstrap_, CreateMpiBootstrap(timeout_));
      break;
    }
    case BootstrapKind::kFile:
    case BootstrapKind::kEnvironment: {
      if (!launch.launched) {
        return absl::FailedPreconditionError(absl::StrCat(
            "comm ", name_, ": no launcher found: start one process per rank with mpirun, srun or "
            "torchrun", nccl ? " (one per GPU)" : "",
            ", or set RINGATTN_RANK, RINGATTN_WORLD_SIZE, RINGATTN_STORE_DIR and RINGATTN_JOB_ID"));
      }
      if (options.bootstrap == BootstrapKind::kFile) {
        FileStoreOptions store;
        const char* dir = std::getenv("RINGATTN_STORE_DIR");
        store.dir = dir != nullptr ? dir : "";
        store.job_id = launch.job_id;
        store.rank = launch.rank;
        store.size = launch.size;
        ASSIGN_OR_RETURN(bootstrap_, CreateFileStoreBootstrap(store, timeout_));
      } else {
        ASSIGN_OR_RETURN(bootstrap_, CreateBootstrapFromEnvironment(timeout_));
      }
      break;
    }
  }
  Bootstrap* bootstrap =
      options.bootstrap == BootstrapKind::kExternal ? options.external_bootstrap : bootstrap_.get();
  bootstrap_name_ = bootstrap->Name();
  if (options.ranks != 0 && options.ranks != bootstrap->Size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ranks ", options.ranks, " does not match the launched world size ", bootstrap->Size(),
        " (", launch.launched ? launch.source : bootstrap_name_, "); leave it out or launch ",
        options.ranks, " processes"));
  }
  local_rank_ = launch.local_rank >= 0 ? launch.local_rank : 0;
  if (nccl) {
    NcclOptions nccl_options;
    nccl_options.timeout = timeout_;
    nccl_options.device = options.device;  // -1: RINGATTN_DEVICE, else the local rank
    ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> comm,
                     CreateNcclCommunicator(bootstrap, nccl_options));
    NcclCommunicator* raw = comm.get();
    device_ = raw->Device();
    remote_description_ = raw->Description();
    make_device_current_ = [raw] { return raw->MakeDeviceCurrent(); };
    remote_ = std::move(comm);
    nccl_ = true;
  } else {
    UcxOptions ucx_options;
    ucx_options.timeout = timeout_;
    ASSIGN_OR_RETURN(remote_, CreateUcxCommunicator(bootstrap, ucx_options));
    remote_description_ = UcxDescription();
  }
  comms_.push_back(remote_.get());
  size_ = remote_->Size();
  if (!nccl && options.device_memory) {
    // Device buffers over a host-memory transport: staged through pinned
    // host buffers of this process's GPU.
    device_ = options.device;
    if (device_ < 0) {
      ASSIGN_OR_RETURN(device_, ChooseDevice(launch, CudaDeviceCount()));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Stager> stager, MakeCudaStager(device_));
    absl::StrAppend(&remote_description_, "; this run: ", stager->Describe());
    staged_ = MakeStagedCommunicator(remote_.get(), std::move(stager), timeout_);
    comms_[0] = staged_.get();
  }
  return absl::OkStatus();
}

World::~World() {
  if (remote_ == nullptr) return;
  // Nobody closes while a peer still receives from it. After a Run the
  // ranks are in step already; otherwise (the Python package drives the
  // communicator itself) a barrier, bounded by the configured timeout: a
  // peer still busy after it has long received what this rank sent (the
  // transports progress on their own threads), and a stopped one must not
  // keep this process from exiting.
  if (!in_step_ && !failed_ && !remote_->Barrier(timeout_).ok()) SkipMpiFinalizeAtExit();
  staged_.reset();
  remote_.reset();
}

std::string World::Describe() const {
  if (remote_ == nullptr && name_ == "cuda-local") {
    return absl::StrCat("cuda-local: ", size_,
                        " ranks as threads of one process (cudaMemcpyAsync on device ", device_,
                        ")");
  }
  if (remote_ == nullptr) {
    return absl::StrCat("local: ", size_, " ranks as threads of one process (memcpy)");
  }
  if (nccl_) {
    return absl::StrCat("nccl: ", size_, " processes (one GPU each), bootstrap ", bootstrap_name_,
                        ", rank ", remote_->Rank(), ": ", remote_description_);
  }
  return absl::StrCat("ucx: ", size_, " processes (one rank each), bootstrap ", bootstrap_name_,
                      ", ", remote_description_);
}

absl::Status World::Run(const std::function<absl::Status(Communicator&)>& body) {
  in_step_ = false;
  std::vector<absl::Status> status(comms_.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < comms_.size(); ++i) {
    threads.emplace_back([&, i] {
      // A new thread's current CUDA device is 0: make it the rank's.
      status[i] = make_device_current_ ? make_device_current_() : absl::OkStatus();
      if (status[i].ok()) status[i] = body(*comms_[i]);
      if (!status[i].ok() && remote_ != nullptr) comms_[i]->Abort(status[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  absl::Status first;
  for (const absl::Status& s : status) {
    if (!s.ok()) {
      first = s;
      break;
    }
  }
  if (remote_ == nullptr) return first;
  if (first.ok()) {
    // In step: every rank's body is done, so every message has arrived.
    first = remote_->Barrier(timeout_);
    if (!first.ok()) remote_->Abort(first);
  }
  if (!first.ok()) {
    failed_ = true;
    SkipMpiFinalizeAtExit();
    return first;
  }
  in_step_ = true;
  return absl::OkStatus();
}

}  // namespace ringattn::comm
