// The ranks a CLI tool drives in this process, whatever the communicator:
//   local       W ranks as threads of this process (one LocalWorld, memcpy)
//   cuda-local  the same, copying with the CUDA runtime: buffers may be
//               device memory (GPU `device`)
//   ucx         one rank per process, launched by mpirun / srun (or with
//               RINGATTN_RANK / RINGATTN_WORLD_SIZE); the world size comes
//               from the launcher, and an explicit --ranks must agree with it
//   nccl        the same launch, one GPU per process (comm/nccl/nccl_comm.h
//               says which GPU: RINGATTN_DEVICE, else the local rank);
//               device buffers only, so --backend cuda
// Run() runs the per-rank body on each driven rank (a thread each; for nccl
// with the rank's GPU made current on it) and, for ucx and nccl, aborts the
// communicator on a rank's error so that its peers stop promptly instead of
// waiting out their timeouts. GatherToRoot moves one buffer per rank to
// rank 0 (so rank 0 prints or writes for everyone); over nccl it stages the
// host buffers through device memory.
#pragma once

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/cuda_memory.h"
#include "base/status.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/local/cuda_local.h"
#include "comm/local/local_comm.h"
#include "comm/nccl/nccl_comm.h"
#include "comm/staged/staged_comm.h"
#include "comm/ucx/ucx_comm.h"

namespace ringattn::tools {

class Ranks {
 public:
  // `ranks` is --ranks; `ranks_explicit` whether the user gave it;
  // `device` the GPU of cuda-local (nccl picks its own: device()).
  static absl::StatusOr<std::unique_ptr<Ranks>> Create(const std::string& comm_name, int ranks,
                                                       bool ranks_explicit, int device = 0) {
    auto out = std::unique_ptr<Ranks>(new Ranks);
    out->name_ = comm_name;
    out->device_ = device;
    if (comm_name == "local" || comm_name == "cuda-local") {
      if (ranks < 1) return ArgError("--ranks", ">= 1", ranks);
      if (comm_name == "local") {
        ASSIGN_OR_RETURN(out->local_, comm::LocalWorld::Create(ranks));
      } else {
        ASSIGN_OR_RETURN(out->local_, comm::CreateCudaLocalWorld(ranks, {}, device));
      }
      for (int r = 0; r < ranks; ++r) out->comms_.push_back(&out->local_->Comm(r));
      out->world_ = ranks;
      return out;
    }
    if (comm_name != "ucx" && comm_name != "nccl") {
      return absl::UnimplementedError(absl::StrCat(
          "--comm ", comm_name, ": not a communicator of this build (local, cuda-local, ucx, nccl)"));
    }
    if (comm_name == "ucx" && !comm::UcxBuilt()) {
      return comm::CreateUcxCommunicator(nullptr).status();
    }
    if (comm_name == "nccl" && !comm::NcclBuilt()) {
      return comm::CreateNcclCommunicator(nullptr).status();
    }
    ASSIGN_OR_RETURN(const comm::LaunchInfo launch, comm::DetectLaunch());
    if (!launch.launched) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--comm ", comm_name,
          ": no launcher found: start one process per rank with mpirun or srun",
          comm_name == "nccl" ? " (one per GPU)" : "",
          ", or set RINGATTN_RANK, RINGATTN_WORLD_SIZE, RINGATTN_STORE_DIR and RINGATTN_JOB_ID"));
    }
    if (ranks_explicit && ranks != launch.size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--ranks ", ranks, " does not match the launched world size ", launch.size, " (",
          launch.source, "); leave --ranks out or launch ", ranks, " processes"));
    }
    ASSIGN_OR_RETURN(const absl::Duration timeout, comm::DefaultTimeout());
    ASSIGN_OR_RETURN(out->bootstrap_, comm::CreateBootstrapFromEnvironment(timeout));
    if (comm_name == "nccl") {
      // The GPU: RINGATTN_DEVICE, else the local rank; fewer GPUs than
      // ranks on a host is refused on every rank.
      ASSIGN_OR_RETURN(std::unique_ptr<comm::NcclCommunicator> nccl,
                       comm::CreateNcclCommunicator(out->bootstrap_.get()));
      out->nccl_ = nccl.get();
      out->device_ = nccl->Device();
      out->remote_ = std::move(nccl);
    } else {
      ASSIGN_OR_RETURN(out->remote_, comm::CreateUcxCommunicator(out->bootstrap_.get()));
    }
    out->comms_.push_back(out->remote_.get());
    out->world_ = out->remote_->Size();
    return out;
  }

  ~Ranks() {
    if (remote_ != nullptr) {
      // Nobody closes while a peer still talks to it (rank 0 may still be
      // printing or running its comparisons); a dead peer ends this at once
      // over ucx, and within 10 minutes over nccl (which cannot tell).
      (void)remote_->Barrier(nccl_ != nullptr ? absl::Minutes(10) : absl::Hours(24));
      staged_.reset();
      remote_.reset();
    }
  }

  int world() const { return world_; }
  const std::vector<comm::Communicator*>& comms() const { return comms_; }
  bool one_rank_per_process() const { return remote_ != nullptr; }
  bool root() const { return comms_[0]->Rank() == 0; }
  // The GPU of this process's ranks: cuda-local's `device`, or the one the
  // nccl communicator took (pass it as RingOptions::device_index).
  int device() const { return device_; }

  // --backend cuda over ucx: this process's GPU is RINGATTN_DEVICE, else
  // its local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID,
  // MPI_LOCALRANKID) modulo the GPUs; the UCX here moves host memory only,
  // so device buffers go through pinned host buffers (comm/staged/).
  absl::Status StageDeviceMemory() {
    if (remote_ == nullptr || nccl_ != nullptr || staged_ != nullptr) return absl::OkStatus();
    int device = 0;
    if (const char* d = std::getenv("RINGATTN_DEVICE"); d != nullptr && *d != '\0') {
      if (!absl::SimpleAtoi(d, &device) || device < 0) {
        return ArgError("RINGATTN_DEVICE", "a GPU index >= 0", absl::StrCat("'", d, "'"));
      }
    } else {
      for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
        const char* v = std::getenv(var);
        int local = 0;
        if (v != nullptr && absl::SimpleAtoi(v, &local) && local >= 0) {
          const int count = comm::CudaDeviceCount();
          device = count > 0 ? local % count : local;
          break;
        }
      }
    }
    ASSIGN_OR_RETURN(std::unique_ptr<comm::Stager> stager, comm::MakeCudaStager(device));
    staging_ = stager->Describe();
    ASSIGN_OR_RETURN(const absl::Duration timeout, comm::DefaultTimeout());
    staged_ = comm::MakeStagedCommunicator(remote_.get(), std::move(stager), timeout);
    comms_[0] = staged_.get();
    device_ = device;
    return absl::OkStatus();
  }

  // "ucx: 4 processes (one rank each), bootstrap mpi, UCX 1.13.1 ...".
  std::string Describe() const {
    if (remote_ == nullptr && name_ == "cuda-local") {
      return absl::StrCat("cuda-local: ", world_,
                          " ranks as threads of one process (cudaMemcpyAsync on device ", device_,
                          ")");
    }
    if (remote_ == nullptr) {
      return absl::StrCat("local: ", world_, " ranks as threads of one process (memcpy)");
    }
    if (nccl_ != nullptr) {
      return absl::StrCat("nccl: ", world_, " processes (one GPU each), bootstrap ",
                          bootstrap_->Name(), ", rank ", remote_->Rank(), ": ",
                          nccl_->Description());
    }
    return absl::StrCat("ucx: ", world_, " processes (one rank each), bootstrap ",
                        bootstrap_->Name(), ", ", comm::UcxDescription(),
                        staged_ != nullptr ? absl::StrCat("; this run: ", staging_) : "");
  }

  absl::Status Run(const std::function<absl::Status(comm::Communicator&)>& body) {
    std::vector<absl::Status> status(comms_.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < comms_.size(); ++i) {
      threads.emplace_back([&, i] {
        // A new thread's current CUDA device is 0: make it the rank's.
        status[i] = nccl_ != nullptr ? nccl_->MakeDeviceCurrent() : absl::OkStatus();
        if (status[i].ok()) status[i] = body(*comms_[i]);
        if (!status[i].ok() && remote_ != nullptr) comms_[i]->Abort(status[i]);
      });
    }
    for (std::thread& t : threads) t.join();
    for (const absl::Status& s : status) RETURN_IF_ERROR(s);
    return absl::OkStatus();
  }

 private:
  Ranks() = default;
  std::string name_;
  int device_ = 0;
  int world_ = 1;
  std::unique_ptr<comm::LocalWorld> local_;
  std::unique_ptr<comm::Bootstrap> bootstrap_;
  std::unique_ptr<comm::Communicator> remote_;
  std::unique_ptr<comm::Communicator> staged_;  // over remote_: ucx with device memory
  std::string staging_;
  comm::NcclCommunicator* nccl_ = nullptr;  // remote_, when it is nccl
  std::vector<comm::Communicator*> comms_;
};

// Whether argv sets --ranks (or -ranks), for Ranks::Create; call before
// flags are parsed.
inline bool RanksFlagGiven(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") break;
    for (const char* p : {"--ranks", "-ranks"}) {
      const std::string f = p;
      if (a == f || a.rfind(f + "=", 0) == 0) return true;
    }
  }
  return false;
}

// Rank r != 0 sends `mine` (bytes_of(r) bytes) to rank 0; rank 0 receives
// each other rank's into dest_of(r), one rank after another (a pattern the
// nccl backend's in-order requests match). `tag` tells gathers apart
// (header kind). Buffers are host memory; over nccl, which moves device
// memory only, each message is staged through a device buffer of the
// calling thread's current GPU (Ranks::Run makes it the rank's).
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
