// The `nccl` backend (see nccl_comm.h): rounds of control messages and
// payloads over NCCL point-to-point, driven by one progress thread per
// communicator.
//
// Threads: the progress thread is the only one that calls NCCL or touches
// the communicator's streams, events and staging memory ([pt] below). The
// user's threads post requests and barriers into queues and wait on state
// the progress thread updates under mu_. The CUDA calls a user's thread
// makes touch only its own stream and per-request events: SendRecvOnStream
// records `ready` on the user's stream, Request::WaitOnStream makes the
// user's stream wait for `done`, and a request's end may destroy both. A
// round (one request) is in one of three phases: queued (nothing given to
// NCCL), control (the ControlMsg group), payload (the agreed ncclSend /
// ncclRecv group). Each phase's NCCL group is "enqueued" once NCCL has put
// it on the stream (a non-blocking communicator may return ncclInProgress
// from ncclGroupEnd: then ncclCommGetAsyncError is polled until it is not,
// and only then is anything else put on that stream); then an event marks
// its end.
//
// libnccl is opened at run time (nccl_loader.h), so that binaries linking
// this file start where NCCL is not installed.
#include "comm/nccl/nccl_comm.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/cuda_status.h"
#include "base/status.h"
#include "comm/backend_util.h"
#include "comm/launch.h"
#include "comm/nccl/nccl_loader.h"

namespace ringattn::comm {
namespace {

// ---- errors -------------------------------------------------------------------

absl::Status NcclFailure(const NcclApi& api, ncclResult_t r, const char* call, const char* file,
                         int line) {
  const char* last = api.GetLastError(nullptr);
  const std::string msg =
      absl::StrCat(file, ":", line, ": ", call, ": ", api.GetErrorString(r),
                   last != nullptr && *last != '\0' ? absl::StrCat(" (", last, ")") : "");
  switch (r) {
    case ncclSystemError:
    case ncclRemoteError: return absl::UnavailableError(msg);
    case ncclInvalidArgument: return absl::InvalidArgumentError(msg);
    default: return absl::InternalError(msg);
  }
}

#define RINGATTN_NCCL_FAIL(api, result, call) NcclFailure(api, result, call, __FILE__, __LINE__)

// ---- wire structures ------------------------------------------------------------

constexpr uint32_t kControlMagic = 0x4E43434C;  // "NCCL"

// What a rank tells one peer at one place of its request order.
struct ControlMsg {
  uint32_t magic = kControlMagic;
  int32_t sender = -1;
  int32_t has_sent = 0;      // `sent`: the header of the message sender -> receiver
  int32_t has_expected = 0;  // `expected`: the header the sender expects from the receiver
  MessageHeader sent;
  MessageHeader expected;
};
static_assert(std::is_trivially_copyable_v<ControlMsg>);
constexpr int kMaxPeersPerRound = 2;

// Setup blobs (bootstrap AllGather); sizes are checked on receipt.
struct HostBlob {
  int32_t ok = 1;
  int32_t launcher_local_rank = -1;  // -1: the launcher did not say
  char host[256] = {0};
  char error[512] = {0};
};
struct GpuBlob {
  int32_t ok = 1;
  int32_t device = -1;
  int32_t device_count = 0;
  uint8_t uuid[16] = {0};
  char gpu[96] = {0};
  char error[512] = {0};
  ncclUniqueId ids[2] = {};  // rank 0's: the message and barrier communicators
};
static_assert(std::is_trivially_copyable_v<HostBlob> && std::is_trivially_copyable_v<GpuBlob>);

template <typename T>
std::string ToBlob(const T& value) {
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <typename T>
absl::StatusOr<std::vector<T>> FromBlobs(const std::vector<std::string>& blobs, const char* what) {
  std::vector<T> out(blobs.size());
  for (size_t r = 0; r < blobs.size(); ++r) {
    if (blobs[r].size() != sizeof(T)) {
      return absl::InternalError(absl::StrCat("nccl setup: rank ", r, "'s ", what, " is ",
                                              blobs[r].size(), " bytes, expected ", sizeof(T),
                                              " (ranks built from different sources?)"));
    }
    std::memcpy(&out[r], blobs[r].data(), sizeof(T));
  }
  return out;
}

template <size_t N>
void CopyText(char (&dst)[N], const std::string& text) {
  const size_t n = std::min(text.size(), N - 1);
  std::memcpy(dst, text.data(), n);
  dst[n] = '\0';
}

template <size_t N>
std::string Text(const char (&src)[N]) {
  return std::string(src, strnlen(src, N));
}


// ---- the communicator -------------------------------------------------------------

enum class Phase { kQueued, kControl, kPayload, kDone };

// One request (one round).
struct Op {
  bool has_send = false;
  bool has_recv = false;
  int to = 0;
  int from = 0;
  const void* send_buf = nullptr;
  void* recv_buf = nullptr;
  // Stream order (SendRecvOnStream): an event on the poster's stream that
  // the payload group waits for on the device; owned here.
  cudaEvent_t ready = nullptr;
  // Recorded on the communication stream after the payload group, for
  // Request::WaitOnStream; owned here. Written by [pt] before `on_stream`
  // is set under mu_, read by the user's thread after it.
  cudaEvent_t done = nullptr;
  MessageHeader send_header;  // the message this rank sends
  MessageHeader recv_header;  // the message this rank expects
  std::vector<int> peers;     // distinct peers of the round: to, then from

  // Guarded by mu_.
  Phase phase = Phase::kQueued;
  bool complete = false;  // the user-visible outcome is known (status)
  bool on_stream = false;  // the payload group and `done` are on the stream
  bool settled = false;   // nothing of NCCL's touches the user's buffers any more
  bool orphaned = false;  // destroyed while exchanging control: payload to scratch
  bool dropped = false;   // destroyed before it started: never given to NCCL
  absl::Status status;

  // [pt]
  bool enqueued = false;  // the current phase's group is on the stream
  bool send_payload = false;
  bool recv_payload = false;
  void* scratch = nullptr;
  absl::Status error;  // the round's first error, reported at completion

  Op() = default;
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;
  ~Op() {
    if (ready != nullptr) cudaEventDestroy(ready);
    if (done != nullptr) cudaEventDestroy(done);
  }
};

struct BarrierOp {
  bool done = false;  // mu_
  absl::Status status;
  bool enqueued = false;  // [pt]
};

class NcclComm;

class NcclRequest final : public Request {
 public:
  NcclRequest(NcclComm* comm, std::shared_ptr<Op> op) : comm_(comm), op_(std::move(op)) {}
  ~NcclRequest() override;
  absl::StatusOr<bool> Test() override;
  absl::Status Wait(absl::Duration timeout) override;
  absl::Status WaitOnStream(void* stream, absl::Duration timeout) override;

 private:
  NcclComm* const comm_;
  std::shared_ptr<Op> op_;  // null: a request with neither half
};

class NcclComm final : public NcclCommunicator {
 public:
  NcclComm(const NcclApi* api, int rank, int size, int device, absl::Duration timeout,
           std::string description)
      : api_(api),
        rank_(rank),
        size_(size),
        device_(device),
        timeout_(timeout),
        description_(std::move(description)) {}
  ~NcclComm() override;

  // Takes the two NCCL communicators; makes streams, events and staging.
  absl::Status Init(ncclComm_t data, ncclComm_t barrier);

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Name() const override { return "nccl"; }
  int Device() const override { return device_; }
  absl::Status MakeDeviceCurrent() const override {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_), "nccl");
    return absl::OkStatus();
  }
  std::string Description() const override { return description_; }

  absl::StatusOr<std::unique_ptr<Request>> SendRecv(const void* send, int64_t send_bytes, int to,
                                                    const MessageMeta& send_meta, void* recv,
                                                    int64_t recv_bytes, int from,
                                                    const MessageMeta& recv_meta) override;
  bool StreamOrdered() const override { return true; }
  absl::StatusOr<std::unique_ptr<Request>> SendRecvOnStream(
      void* stream, const void* send, int64_t send_bytes, int to, const MessageMeta& send_meta,
      void* recv, int64_t recv_bytes, int from, const MessageMeta& recv_meta) override;
  absl::Status Barrier(absl::Duration timeout) override;
  void Abort(const absl::Status& reason) override;
  int64_t BytesSent() const override { return bytes_sent_.load(std::memory_order_relaxed); }

  // For requests.
  absl::StatusOr<bool> TestOp(const Op& op);
  absl::Status WaitOp(const Op& op, absl::Duration timeout);
  absl::Status WaitOpOnStream(const Op& op, void* stream, absl::Duration timeout);
  void ReleaseOp(const std::shared_ptr<Op>& op);

 private:
  absl::Status CheckDeviceBuffer(const void* ptr, const char* name) const;
  std::string DescribePending(const Op& op, absl::Duration timeout) const;  // mu_ held
  void RequestAbortLocked(const absl::Status& status);                      // mu_ held

  // Progress thread.
  void Loop();
  bool StepRound();
  bool StepBarrier();
  absl::Status StartControl(Op& op);
  absl::Status AfterControlGroup(Op& op);
  absl::Status FinishControl(Op& op);
  // SendRecv, or (ordered) SendRecvOnStream on `stream` (null: the legacy
  // default stream).
  absl::StatusOr<std::unique_ptr<Request>> Post(bool ordered, void* stream, const void* send,
                                                int64_t send_bytes, int to,
                                                const MessageMeta& send_meta, void* recv,
                                                int64_t recv_bytes, int from,
                                                const MessageMeta& recv_meta);
  absl::Status StartPayload(Op& op);
  absl::Status AfterPayloadGroup(Op& op);
  void CompleteRound(Op& op);
  absl::Status LaunchBarrier(BarrierOp& op);
  // Ends the communicator: ncclCommAbort on both, fails everything pending.
  void Fail(const absl::Status& status);
  // Aborts both NCCL communicators (when they are still there).
  void AbortNccl();
  std::string DescribeRound(const Op& op) const;

  const NcclApi* const api_;
  const int rank_;
  const int size_;
  const int device_;
  const absl::Duration timeout_;
  const std::string description_;
  std::atomic<int64_t> bytes_sent_{0};

  // [pt], and the destructor once the thread has ended.
  ncclComm_t data_comm_ = nullptr;
  ncclComm_t barrier_comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaStream_t barrier_stream_ = nullptr;
  cudaEvent_t event_ = nullptr;
  cudaEvent_t barrier_event_ = nullptr;
  ControlMsg* dev_ctrl_ = nullptr;   // [out 0, out 1, in 0, in 1]
  ControlMsg* host_ctrl_ = nullptr;  // pinned, the same four
  int32_t* barrier_value_ = nullptr;
  bool nccl_aborted_ = false;
  std::shared_ptr<Op> current_;
  std::shared_ptr<BarrierOp> barrier_current_;
  std::thread progress_;

  std::mutex barrier_mu_;  // one Barrier call at a time
  mutable std::mutex mu_;
  std::condition_variable cv_;      // requests and barriers
  std::condition_variable cmd_cv_;  // the progress thread
  std::deque<std::shared_ptr<Op>> queue_;
  std::deque<std::shared_ptr<BarrierOp>> barrier_queue_;
  absl::Status abort_status_;
  bool abort_pending_ = false;  // the progress thread has an abort to carry out
  absl::Status barrier_broken_;
  bool stopping_ = false;
};

// ---- setup and teardown ------------------------------------------------------------

absl::Status NcclComm::Init(ncclComm_t data, ncclComm_t barrier) {
  data_comm_ = data;
  barrier_comm_ = barrier;
  RINGATTN_CUDA_CHECK(cudaSetDevice(device_), "nccl");
  // The highest priority: NCCL's kernels are scheduled ahead of compute.
  int least = 0, greatest = 0;
  RINGATTN_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest), "nccl");
  RINGATTN_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest),
                      "nccl");
  RINGATTN_CUDA_CHECK(
      cudaStreamCreateWithPriority(&barrier_stream_, cudaStreamNonBlocking, greatest), "nccl");
  RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "nccl");
  RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&barrier_event_, cudaEventDisableTiming), "nccl");
  RINGATTN_CUDA_CHECK(cudaMalloc(&dev_ctrl_, 2 * kMaxPeersPerRound * sizeof(ControlMsg)), "nccl");
  RINGATTN_CUDA_CHECK(cudaMallocHost(&host_ctrl_, 2 * kMaxPeersPerRound * sizeof(ControlMsg)),
                      "nccl");
  RINGATTN_CUDA_CHECK(cudaMalloc(&barrier_value_, sizeof(int32_t)), "nccl");
  RINGATTN_CUDA_CHECK(cudaMemset(barrier_value_, 0, sizeof(int32_t)), "nccl");
  progress_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

NcclComm::~NcclComm() {
  bool healthy = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cmd_cv_.notify_all();
  }
  if (progress_.joinable()) progress_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    healthy = abort_status_.ok() && barrier_broken_.ok() && queue_.empty() &&
              barrier_queue_.empty() && current_ == nullptr && barrier_current_ == nullptr;
  }
  cudaSetDevice(device_);
  if (!nccl_aborted_) {
    // A healthy communicator is finalized (its last sends flushed to their
    // peers) and destroyed; anything else, or a finalize that does not end
    // in time (a peer gone), is aborted.
    const absl::Time deadline = absl::Now() + std::min(timeout_, absl::Seconds(30));
    for (ncclComm_t* comm : {&data_comm_, &barrier_comm_}) {
      if (*comm == nullptr || !healthy) continue;
      const ncclResult_t r = api_->CommFinalize(*comm);
      ncclResult_t state = r;
      while ((r == ncclSuccess || r == ncclInProgress) && absl::Now() < deadline) {
        if (api_->CommGetAsyncError(*comm, &state) != ncclSuccess || state != ncclInProgress) {
          break;
        }
        absl::SleepFor(absl::Milliseconds(1));
      }
      if ((r == ncclSuccess || r == ncclInProgress) && state == ncclSuccess) {
        api_->CommDestroy(*comm);
        *comm = nullptr;
      }
    }
    AbortNccl();  // whatever was not finalized
  }
  for (cudaStream_t s : {stream_, barrier_stream_}) {
    if (s != nullptr) {
      cudaStreamSynchronize(s);
      cudaStreamDestroy(s);
    }
  }
  if (event_ != nullptr) cudaEventDestroy(event_);
  if (barrier_event_ != nullptr) cudaEventDestroy(barrier_event_);
  if (dev_ctrl_ != nullptr) cudaFree(dev_ctrl_);
  if (host_ctrl_ != nullptr) cudaFreeHost(host_ctrl_);
  if (barrier_value_ != nullptr) cudaFree(barrier_value_);
  cudaGetLastError();
}

// ---- posting, waiting -------------------------------------------------------------

absl::Status NcclComm::CheckDeviceBuffer(const void* ptr, const char* name) const {
  const std::string arg = absl::StrCat("rank ", rank_, ": SendRecv: ", name);
  cudaPointerAttributes attr;
  std::memset(&attr, 0, sizeof(attr));
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();  // unregistered host memory, on older runtimes
    attr.type = cudaMemoryTypeUnregistered;
  }
  const std::string expected =
      absl::StrCat("device memory of GPU ", device_, " (the nccl communicator moves device buffers)");
  switch (attr.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged:
      if (attr.device != device_) {
        return ArgError(arg, expected, absl::StrCat("memory of GPU ", attr.device));
      }
      return absl::OkStatus();
    case cudaMemoryTypeHost: return ArgError(arg, expected, "pinned host memory");
    default: return ArgError(arg, expected, "host memory");
  }
}

absl::StatusOr<std::unique_ptr<Request>> NcclComm::SendRecv(const void* send, int64_t send_bytes,
                                                            int to, const MessageMeta& send_meta,
                                                            void* recv, int64_t recv_bytes,
                                                            int from,
                                                            const MessageMeta& recv_meta) {
  return Post(/*ordered=*/false, nullptr, send, send_bytes, to, send_meta, recv, recv_bytes, from,
              recv_meta);
}

absl::StatusOr<std::unique_ptr<Request>> NcclComm::SendRecvOnStream(
    void* stream, const void* send, int64_t send_bytes, int to, const MessageMeta& send_meta,
    void* recv, int64_t recv_bytes, int from, const MessageMeta& recv_meta) {
  return Post(/*ordered=*/true, stream, send, send_bytes, to, send_meta, recv, recv_bytes, from,
              recv_meta);
}

absl::StatusOr<std::unique_ptr<Request>> NcclComm::Post(bool ordered, void* stream,
                                                        const void* send, int64_t send_bytes, int to,
                                                        const MessageMeta& send_meta, void* recv,
                                                        int64_t recv_bytes, int from,
                                                        const MessageMeta& recv_meta) {
  ASSIGN_OR_RETURN(const SendRecvHalves halves,
                   ValidateSendRecv(rank_, size_, send, send_bytes, to, send_meta, recv, recv_bytes,
                                    from, recv_meta));
  const bool want_send = halves.send, want_recv = halves.recv;
  // Zero-byte messages move no payload: any non-null pointer will do.
  if (want_send && send_bytes > 0) RETURN_IF_ERROR(CheckDeviceBuffer(send, "send buffer"));
  if (want_recv && recv_bytes > 0) RETURN_IF_ERROR(CheckDeviceBuffer(recv, "receive buffer"));
  if (!want_send && !want_recv) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!abort_status_.ok()) return abort_status_;
    return std::unique_ptr<Request>(new NcclRequest(this, nullptr));
  }
  auto op = std::make_shared<Op>();
  op->has_send = want_send;
  op->has_recv = want_recv;
  if (want_send) {
    op->to = to;
    op->send_buf = send;
    op->send_header.src_rank = rank_;
    op->send_header.dst_rank = to;
    op->send_header.bytes = send_bytes;
    op->send_header.meta = send_meta;
    op->peers.push_back(to);
  }
  if (want_recv) {
    op->from = from;
    op->recv_buf = recv;
    op->recv_header.src_rank = from;
    op->recv_header.dst_rank = rank_;
    op->recv_header.bytes = recv_bytes;
    op->recv_header.meta = recv_meta;
    if (!want_send || from != to) op->peers.push_back(from);
  }
  if (ordered) {
    // On this rank's device, whatever the calling thread's current one is.
    const cudaError_t e = RecordNewEvent(device_, static_cast<cudaStream_t>(stream), &op->ready);
    if (e != cudaSuccess) {
      return CudaStatus(e, __FILE__, __LINE__,
                        absl::StrCat("rank ", rank_, ": recording the stream's event for ",
                                     DescribeRound(*op)));
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!abort_status_.ok()) return abort_status_;
    queue_.push_back(op);
    cmd_cv_.notify_all();
  }
  return std::unique_ptr<Request>(new NcclRequest(this, std::move(op)));
}

std::string NcclComm::DescribePending(const Op& op, absl::Duration timeout) const {
  std::vector<std::string> parts;
  if (op.has_recv) {
    parts.push_back(absl::StrCat("no message from rank ", op.from, " for ", Describe(op.recv_header)));
  }
  if (op.has_send) {
    parts.push_back(absl::StrCat("rank ", op.to, " did not receive the message for ",
                                 Describe(op.send_header)));
  }
  std::string why;
  switch (op.phase) {
    case Phase::kQueued:
      why = " (not started: an earlier request of this rank still waits for its peers; the nccl "
            "backend runs a rank's requests in posting order)";
      break;
    case Phase::kControl:
      why = " (no matching request from the peer yet)";
      break;
    default:
      why = " (the payload is still moving)";
      break;
  }
  return absl::StrCat("rank ", rank_, ": ", absl::StrJoin(parts, "; "), " within ",
                      absl::FormatDuration(timeout), why);
}

absl::StatusOr<bool> NcclComm::TestOp(const Op& op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (op.complete) {
    if (!op.status.ok()) return op.status;
    return true;
  }
  if (!abort_status_.ok()) return abort_status_;
  return false;
}

absl::Status NcclComm::WaitOp(const Op& op, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!WaitFor(cv_, lock, timeout, [&] { return op.complete || !abort_status_.ok(); })) {
    return absl::DeadlineExceededError(DescribePending(op, timeout));
  }
  return op.complete ? op.status : abort_status_;
}

// The host waits for the payload group to be on the communication stream
// (the control round trip and the header check), not for this round's
// bytes; rounds run one after another, so that is once the previous
// round's bytes have landed.
absl::Status NcclComm::WaitOpOnStream(const Op& op, void* stream, absl::Duration timeout) {
  cudaEvent_t done = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!WaitFor(cv_, lock, timeout,
                 [&] { return op.complete || op.on_stream || !abort_status_.ok(); })) {
      return absl::DeadlineExceededError(DescribePending(op, timeout));
    }
    if (op.complete) return op.status;
    if (!abort_status_.ok()) return abort_status_;
    done = op.done;  // recorded once, destroyed with the op, which the request holds
  }
  RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), done, 0), "nccl");
  return absl::OkStatus();
}

void NcclComm::ReleaseOp(const std::shared_ptr<Op>& op) {
  std::unique_lock<std::mutex> lock(mu_);
  auto done = [&] { return op->complete || !abort_status_.ok(); };
  if (!done()) WaitFor(cv_, lock, timeout_, done);
  if (!op->complete && abort_status_.ok()) {
    const std::string what = absl::StrCat(
        "rank ", rank_, ": a request for ",
        Describe(op->has_send ? op->send_header : op->recv_header),
        " was destroyed while pending");
    if (op->phase == Phase::kQueued) {
      // Never given to NCCL: it simply goes.
      op->dropped = true;
      op->complete = true;
      op->settled = true;
      op->status = absl::CancelledError(what);
      queue_.erase(std::remove(queue_.begin(), queue_.end(), op), queue_.end());
    } else if (op->phase == Phase::kControl && !op->has_send) {
      // Control messages live in the communicator's staging; if the sender
      // turns up, the payload goes to a scratch buffer.
      op->orphaned = true;
      return;
    } else {
      RequestAbortLocked(absl::CancelledError(
          absl::StrCat(what, " (NCCL cannot cancel a transfer it was given)")));
    }
  }
  // Bounded: a stuck NCCL abort must not hang the process.
  WaitFor(cv_, lock, timeout_ + absl::Seconds(5), [&] { return op->settled; });
}

NcclRequest::~NcclRequest() {
  if (op_) comm_->ReleaseOp(op_);
}

absl::StatusOr<bool> NcclRequest::Test() {
  if (!op_) return true;
  return comm_->TestOp(*op_);
}

absl::Status NcclRequest::Wait(absl::Duration timeout) {
  if (!op_) return absl::OkStatus();
  return comm_->WaitOp(*op_, timeout);
}

absl::Status NcclRequest::WaitOnStream(void* stream, absl::Duration timeout) {
  if (!op_) return absl::OkStatus();
  return comm_->WaitOpOnStream(*op_, stream, timeout);
}

absl::Status NcclComm::Barrier(absl::Duration timeout) {
  std::lock_guard<std::mutex> serial(barrier_mu_);
  auto op = std::make_shared<BarrierOp>();
  std::unique_lock<std::mutex> lock(mu_);
  if (!abort_status_.ok()) return abort_status_;
  if (!barrier_broken_.ok()) return barrier_broken_;
  if (size_ == 1) return absl::OkStatus();
  barrier_queue_.push_back(op);
  cmd_cv_.notify_all();
  if (WaitFor(cv_, lock, timeout, [&] { return op->done || !abort_status_.ok(); })) {
    return op->done ? op->status : abort_status_;
  }
  barrier_broken_ = absl::FailedPreconditionError(absl::StrCat(
      "rank ", rank_, ": an earlier barrier timed out after ", absl::FormatDuration(timeout),
      ", so this communicator's barriers are out of step"));
  return absl::DeadlineExceededError(
      absl::StrCat("rank ", rank_, ": barrier: not every rank arrived within ",
                   absl::FormatDuration(timeout), " (NCCL does not say which rank is missing)"));
}

void NcclComm::RequestAbortLocked(const absl::Status& status) {
  if (!abort_status_.ok()) return;
  abort_status_ = status;
  abort_pending_ = true;
  cv_.notify_all();
  cmd_cv_.notify_all();
}

void NcclComm::Abort(const absl::Status& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string why =
      reason.ok() ? std::string("no reason given")
                  : absl::StrCat(absl::StatusCodeToString(reason.code()), ": ", reason.message());
  RequestAbortLocked(absl::AbortedError(absl::StrCat("rank ", rank_, " aborted: ", why)));
}

// ---- the progress thread ---------------------------------------------------------

void NcclComm::Loop() {
  if (cudaSetDevice(device_) != cudaSuccess) {
    Fail(absl::InternalError(absl::StrCat("rank ", rank_, ": nccl progress thread: cannot use GPU ",
                                          device_)));
  }
  absl::Duration backoff = absl::Microseconds(10);
  for (;;) {
    bool abort = false;
    absl::Status abort_status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
      abort = abort_pending_;
      abort_pending_ = false;
      abort_status = abort_status_;
    }
    if (abort) Fail(abort_status);
    bool progressed = StepRound();
    progressed = StepBarrier() || progressed;
    if (progressed) {
      backoff = absl::Microseconds(10);
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    auto wake = [this] {
      return stopping_ || abort_pending_ || (current_ == nullptr && !queue_.empty()) ||
             (barrier_current_ == nullptr && !barrier_queue_.empty());
    };
    if (current_ == nullptr && barrier_current_ == nullptr) {
      cmd_cv_.wait(lock, wake);
    } else {
      // Something is on the GPU: poll it, backing off to 200 us.
      cmd_cv_.wait_for(lock, absl::ToChronoNanoseconds(backoff), wake);
      backoff = std::min(backoff * 2, absl::Microseconds(200));
    }
  }
}

std::string NcclComm::DescribeRound(const Op& op) const {
  std::vector<std::string> parts;
  if (op.has_send) {
    parts.push_back(absl::StrCat("the message for ", Describe(op.send_header), " to rank ", op.to));
  }
  if (op.has_recv) {
    parts.push_back(
        absl::StrCat("the message for ", Describe(op.recv_header), " from rank ", op.from));
  }
  return absl::StrJoin(parts, " and ");
}

bool NcclComm::StepRound() {
  if (nccl_aborted_) {
    // After an abort whose streams did not drain at once: settle the
    // round in flight when they have.
    if (current_ != nullptr && cudaStreamQuery(stream_) != cudaErrorNotReady) {
      std::lock_guard<std::mutex> lock(mu_);
      current_->settled = true;
      current_ = nullptr;
      cv_.notify_all();
    }
    cudaGetLastError();
    return false;
  }
  if (current_ == nullptr) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (!queue_.empty() && current_ == nullptr) {
        std::shared_ptr<Op> op = std::move(queue_.front());
        queue_.pop_front();
        if (op->dropped) continue;
        op->phase = Phase::kControl;
        current_ = std::move(op);
      }
    }
    if (current_ == nullptr) return false;
    const absl::Status started = StartControl(*current_);
    if (!started.ok()) Fail(started);
    return true;
  }
  // Held here: CompleteRound drops current_, maybe the last reference.
  const std::shared_ptr<Op> hold = current_;
  Op& op = *hold;
  if (!op.enqueued) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = api_->CommGetAsyncError(data_comm_, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      Fail(absl::UnavailableError(absl::StrCat(
          "rank ", rank_, ": NCCL failed while posting ", DescribeRound(op), ": ",
          RINGATTN_NCCL_FAIL(*api_, r != ncclSuccess ? r : state, "ncclCommGetAsyncError")
              .message())));
      return true;
    }
    if (state == ncclInProgress) return false;
    Phase phase;
    {
      std::lock_guard<std::mutex> lock(mu_);
      phase = op.phase;
    }
    const absl::Status after =
        phase == Phase::kControl ? AfterControlGroup(op) : AfterPayloadGroup(op);
    if (!after.ok()) Fail(after);
    return true;
  }
  const cudaError_t q = cudaEventQuery(event_);
  if (q == cudaErrorNotReady) {
    cudaGetLastError();
    // Still on the GPU: has NCCL seen a failure (a network peer gone)?
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = api_->CommGetAsyncError(data_comm_, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      Fail(absl::UnavailableError(absl::StrCat(
          "rank ", rank_, ": NCCL failed during ", DescribeRound(op), ": ",
          RINGATTN_NCCL_FAIL(*api_, r != ncclSuccess ? r : state, "ncclCommGetAsyncError")
              .message())));
      return true;
    }
    return false;
  }
  if (q != cudaSuccess) {
    Fail(CudaStatus(q, __FILE__, __LINE__, "cudaEventQuery (nccl round)"));
    return true;
  }
  Phase phase;
  {
    std::lock_guard<std::mutex> lock(mu_);
    phase = op.phase;
  }
  if (phase == Phase::kControl) {
    const absl::Status s = FinishControl(op);
    if (!s.ok()) Fail(s);
  } else {
    CompleteRound(op);
  }
  return true;
}

absl::Status NcclComm::StartControl(Op& op) {
  const int n = static_cast<int>(op.peers.size());
  ControlMsg* out = host_ctrl_;
  for (int i = 0; i < n; ++i) {
    const int p = op.peers[i];
    ControlMsg m;
    m.sender = rank_;
    if (op.has_send && op.to == p) {
      m.has_sent = 1;
      m.sent = op.send_header;
    }
    if (op.has_recv && op.from == p) {
      m.has_expected = 1;
      m.expected = op.recv_header;
    }
    out[i] = m;
  }
  RINGATTN_CUDA_CHECK(cudaMemcpyAsync(dev_ctrl_, host_ctrl_, n * sizeof(ControlMsg),
                                      cudaMemcpyHostToDevice, stream_),
                      "nccl");
  ncclResult_t r = api_->GroupStart();
  for (int i = 0; i < n && r == ncclSuccess; ++i) {
    r = api_->Send(dev_ctrl_ + i, sizeof(ControlMsg), ncclUint8, op.peers[i], data_comm_, stream_);
    if (r == ncclSuccess) {
      r = api_->Recv(dev_ctrl_ + kMaxPeersPerRound + i, sizeof(ControlMsg), ncclUint8, op.peers[i],
                     data_comm_, stream_);
    }
  }
  const ncclResult_t end = api_->GroupEnd();
  if (r == ncclSuccess) r = end;
  if (r != ncclSuccess && r != ncclInProgress) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", rank_, ": posting the headers of ", DescribeRound(op), ": ",
        RINGATTN_NCCL_FAIL(*api_, r, "ncclGroupEnd").message()));
  }
  op.enqueued = false;
  if (r == ncclSuccess) return AfterControlGroup(op);
  return absl::OkStatus();  // ncclInProgress: StepRound polls until it is on the stream
}

absl::Status NcclComm::AfterControlGroup(Op& op) {
  const size_t n = op.peers.size();
  RINGATTN_CUDA_CHECK(cudaMemcpyAsync(host_ctrl_ + kMaxPeersPerRound, dev_ctrl_ + kMaxPeersPerRound,
                                      n * sizeof(ControlMsg), cudaMemcpyDeviceToHost, stream_),
                      "nccl");
  RINGATTN_CUDA_CHECK(cudaEventRecord(event_, stream_), "nccl");
  op.enqueued = true;
  return absl::OkStatus();
}

absl::Status NcclComm::FinishControl(Op& op) {
  const ControlMsg* in = host_ctrl_ + kMaxPeersPerRound;
  std::vector<std::string> errors;
  auto fail = [&](const std::string& text) { errors.push_back(absl::StrCat("rank ", rank_, ": ", text)); };
  for (size_t i = 0; i < op.peers.size(); ++i) {
    const int p = op.peers[i];
    const ControlMsg& m = in[i];
    if (m.magic != kControlMagic || m.sender != p) {
      // NCCL matched something else with this control message: the
      // ranks' streams of operations are out of step; nothing is safe now.
      return absl::InternalError(absl::StrCat(
          "rank ", rank_, ": malformed control message from rank ", p, " at ", DescribeRound(op),
          " (magic 0x", absl::Hex(m.magic), ", sender ", m.sender,
          "): the ranks' NCCL operations are out of step"));
    }
    const bool i_send = op.has_send && op.to == p;
    const bool i_recv = op.has_recv && op.from == p;
    // This rank -> p: decided from (this rank's header, p's expectation),
    // the same pair p decides from.
    if (i_send && !m.has_expected) {
      fail(absl::StrCat("rank ", p, "'s request at this place receives nothing from rank ", rank_,
                        ", which sends ", HeaderToString(op.send_header),
                        ": the ranks posted their SendRecv calls in different orders"));
    } else if (i_send) {
      const absl::Status check = CheckHeader(op.send_header, m.expected);
      if (check.ok()) {
        op.send_payload = op.send_header.bytes > 0;
      } else {
        fail(std::string(check.message()));
      }
    } else if (m.has_expected) {
      fail(absl::StrCat("rank ", p, " expects ", HeaderToString(m.expected), " from rank ", rank_,
                        " at this place, but this request sends nothing to rank ", p));
    }
    // p -> this rank.
    if (i_recv && !m.has_sent) {
      fail(absl::StrCat("rank ", p, "'s request at this place sends nothing to rank ", rank_,
                        ", which expects ", HeaderToString(op.recv_header),
                        ": the ranks posted their SendRecv calls in different orders"));
    } else if (i_recv) {
      const absl::Status check = CheckHeader(m.sent, op.recv_header);
      if (check.ok()) {
        op.recv_payload = op.recv_header.bytes > 0;
      } else {
        fail(std::string(check.message()));
      }
    } else if (m.has_sent) {
      fail(absl::StrCat("rank ", p, " sends ", HeaderToString(m.sent), " to rank ", rank_,
                        " at this place, but this request receives nothing from rank ", p));
    }
  }
  if (!errors.empty()) op.error = absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  if (!op.send_payload && !op.recv_payload) {
    CompleteRound(op);
    return absl::OkStatus();
  }
  return StartPayload(op);
}

absl::Status NcclComm::StartPayload(Op& op) {
  bool orphaned = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    op.phase = Phase::kPayload;
    orphaned = op.orphaned;
  }
  void* recv_into = op.recv_buf;
  if (op.recv_payload && orphaned) {
    // Its owner is gone: the bytes (a size this rank itself expected) go
    // to scratch, freed on the stream after the group.
    RINGATTN_CUDA_CHECK(
        cudaMallocAsync(&op.scratch, static_cast<size_t>(op.recv_header.bytes), stream_), "nccl");
    recv_into = op.scratch;
  }
  // Stream order: the payload waits for the poster's producers.
  if (op.ready != nullptr) RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(stream_, op.ready, 0), "nccl");
  ncclResult_t r = api_->GroupStart();
  if (r == ncclSuccess && op.send_payload) {
    r = api_->Send(op.send_buf, static_cast<size_t>(op.send_header.bytes), ncclUint8, op.to,
                   data_comm_, stream_);
  }
  if (r == ncclSuccess && op.recv_payload) {
    r = api_->Recv(recv_into, static_cast<size_t>(op.recv_header.bytes), ncclUint8, op.from,
                   data_comm_, stream_);
  }
  const ncclResult_t end = api_->GroupEnd();
  if (r == ncclSuccess) r = end;
  if (r != ncclSuccess && r != ncclInProgress) {
    return absl::UnavailableError(absl::StrCat("rank ", rank_, ": posting the payload of ",
                                               DescribeRound(op), ": ",
                                               RINGATTN_NCCL_FAIL(*api_, r, "ncclGroupEnd").message()));
  }
  op.enqueued = false;
  if (r == ncclSuccess) return AfterPayloadGroup(op);
  return absl::OkStatus();
}

absl::Status NcclComm::AfterPayloadGroup(Op& op) {
  if (op.scratch != nullptr) {
    RINGATTN_CUDA_CHECK(cudaFreeAsync(op.scratch, stream_), "nccl");
    op.scratch = nullptr;
  }
  RINGATTN_CUDA_CHECK(cudaEventRecord(event_, stream_), "nccl");
  if (op.done == nullptr) {
    RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&op.done, cudaEventDisableTiming), "nccl");
  }
  RINGATTN_CUDA_CHECK(cudaEventRecord(op.done, stream_), "nccl");
  op.enqueued = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    op.on_stream = true;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void NcclComm::CompleteRound(Op& op) {
  if (op.send_payload) bytes_sent_.fetch_add(op.send_header.bytes, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  op.phase = Phase::kDone;
  op.complete = true;
  op.settled = true;
  op.status = op.error;
  current_ = nullptr;
  cv_.notify_all();
}

bool NcclComm::StepBarrier() {
  if (nccl_aborted_) return false;
  if (barrier_current_ == nullptr) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (barrier_queue_.empty()) return false;
      barrier_current_ = std::move(barrier_queue_.front());
      barrier_queue_.pop_front();
    }
    const absl::Status s = LaunchBarrier(*barrier_current_);
    if (!s.ok()) Fail(s);
    return true;
  }
  BarrierOp& op = *barrier_current_;
  if (!op.enqueued) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = api_->CommGetAsyncError(barrier_comm_, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      Fail(absl::UnavailableError(absl::StrCat(
          "rank ", rank_, ": barrier: ",
          RINGATTN_NCCL_FAIL(*api_, r != ncclSuccess ? r : state, "ncclCommGetAsyncError")
              .message())));
      return true;
    }
    if (state == ncclInProgress) return false;
    const cudaError_t e = cudaEventRecord(barrier_event_, barrier_stream_);
    if (e != cudaSuccess) {
      Fail(CudaStatus(e, __FILE__, __LINE__, "cudaEventRecord (barrier)"));
      return true;
    }
    op.enqueued = true;
    return true;
  }
  const cudaError_t q = cudaEventQuery(barrier_event_);
  if (q == cudaErrorNotReady) {
    cudaGetLastError();
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = api_->CommGetAsyncError(barrier_comm_, &state);
    if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      Fail(absl::UnavailableError(absl::StrCat(
          "rank ", rank_, ": barrier: ",
          RINGATTN_NCCL_FAIL(*api_, r != ncclSuccess ? r : state, "ncclCommGetAsyncError")
              .message())));
      return true;
    }
    return false;
  }
  if (q != cudaSuccess) {
    Fail(CudaStatus(q, __FILE__, __LINE__, "cudaEventQuery (barrier)"));
    return true;
  }
  std::lock_guard<std::mutex> lock(mu_);
  op.done = true;
  barrier_current_ = nullptr;
  cv_.notify_all();
  return true;
}

absl::Status NcclComm::LaunchBarrier(BarrierOp& op) {
  const ncclResult_t r = api_->AllReduce(barrier_value_, barrier_value_, 1, ncclInt32, ncclSum,
                                         barrier_comm_, barrier_stream_);
  if (r != ncclSuccess && r != ncclInProgress) {
    return absl::UnavailableError(absl::StrCat(
        "rank ", rank_, ": barrier: ", RINGATTN_NCCL_FAIL(*api_, r, "ncclAllReduce").message()));
  }
  op.enqueued = false;
  if (r == ncclSuccess) {
    RINGATTN_CUDA_CHECK(cudaEventRecord(barrier_event_, barrier_stream_), "nccl");
    op.enqueued = true;
  }
  return absl::OkStatus();
}

void NcclComm::AbortNccl() {
  // Freeing one communicator's memory may wait for every kernel of the
  // device, the other communicator's stuck one too (NCCL's abort frees):
  // so both are first revoked (their kernels stopped), then aborted. An
  // NCCL without ncclCommRevoke gets the plain aborts.
  if (api_->CommRevoke != nullptr) {
    std::vector<ncclComm_t> revoked;
    for (ncclComm_t comm : {data_comm_, barrier_comm_}) {
      if (comm == nullptr) continue;
      const ncclResult_t r = api_->CommRevoke(comm, 0);
      if (r == ncclSuccess || r == ncclInProgress) revoked.push_back(comm);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    for (ncclComm_t comm : revoked) {
      ncclResult_t state = ncclInProgress;
      while (absl::Now() < deadline && api_->CommGetAsyncError(comm, &state) == ncclSuccess &&
             state == ncclInProgress) {
        absl::SleepFor(absl::Microseconds(200));
      }
    }
  }
  if (data_comm_ != nullptr) api_->CommAbort(data_comm_);
  if (barrier_comm_ != nullptr) api_->CommAbort(barrier_comm_);
  data_comm_ = nullptr;
  barrier_comm_ = nullptr;
}

void NcclComm::Fail(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (abort_status_.ok()) abort_status_ = status;
    abort_pending_ = false;
    cv_.notify_all();
  }
  if (!nccl_aborted_) {
    nccl_aborted_ = true;
    // Stops NCCL's kernels and frees the communicators; the streams then
    // drain (bounded), after which no user buffer is touched any more.
    AbortNccl();
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  bool drained = false;
  while (absl::Now() < deadline) {
    const cudaError_t a = cudaStreamQuery(stream_);
    const cudaError_t b = cudaStreamQuery(barrier_stream_);
    if (a != cudaErrorNotReady && b != cudaErrorNotReady) {
      drained = true;
      break;
    }
    absl::SleepFor(absl::Microseconds(200));
  }
  cudaGetLastError();
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Status final_status = abort_status_;
  auto end = [&](Op& op) {
    if (!op.complete) {
      op.complete = true;
      op.status = final_status;
    }
    if (drained || op.phase == Phase::kQueued) op.settled = true;
  };
  if (current_ != nullptr) end(*current_);
  for (const std::shared_ptr<Op>& op : queue_) end(*op);
  queue_.clear();
  if (drained) current_ = nullptr;
  for (const std::shared_ptr<BarrierOp>& b : barrier_queue_) {
    b->done = true;
    b->status = final_status;
  }
  barrier_queue_.clear();
  if (barrier_current_ != nullptr) {
    barrier_current_->done = true;
    barrier_current_->status = final_status;
    barrier_current_ = nullptr;
  }
  cv_.notify_all();
}

// ---- setup helpers -------------------------------------------------------------------

// The CUDA devices of this process (CUDA_VISIBLE_DEVICES applies).
int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

std::string Hex(const uint8_t* bytes, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) absl::StrAppend(&out, absl::Hex(bytes[i], absl::kZeroPad2));
  return out;
}

// Polls a non-blocking communicator's setup until it is ready.
absl::Status AwaitReady(const NcclApi& api, ncclComm_t comm, int rank, absl::Duration timeout,
                        const char* what) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = api.CommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return RINGATTN_NCCL_FAIL(api, r, "ncclCommGetAsyncError");
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return absl::UnavailableError(absl::StrCat("rank ", rank, ": NCCL setup of the ", what,
                                                 " communicator failed: ",
                                                 RINGATTN_NCCL_FAIL(api, state, "ncclCommInitRankConfig").message()));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", rank, ": NCCL setup of the ", what, " communicator: not every rank joined within ",
          absl::FormatDuration(timeout),
          " (a rank failed or never started; NCCL_DEBUG=WARN says more)"));
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
}

absl::StatusOr<ncclComm_t> MakeNcclComm(const NcclApi& api, int size, const ncclUniqueId& id,
                                        int rank, absl::Duration timeout, const char* what) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = what;
  ncclComm_t comm = nullptr;
  const ncclResult_t r = api.CommInitRankConfig(&comm, size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) api.CommAbort(comm);
    return absl::UnavailableError(absl::StrCat(
        "rank ", rank, ": NCCL setup of the ", what, " communicator: ",
        RINGATTN_NCCL_FAIL(api, r, "ncclCommInitRankConfig").message()));
  }
  const absl::Status ready = AwaitReady(api, comm, rank, timeout, what);
  if (!ready.ok()) {
    api.CommAbort(comm);
    return ready;
  }
  return comm;
}

}  // namespace

bool NcclBuilt() { return true; }

int VisibleGpuCount() { return DeviceCount(); }

std::string NcclDescription() {
  absl::StatusOr<const NcclApi*> api = Nccl();
  if (!api.ok()) return std::string(api.status().message());
  return absl::StrCat("NCCL ", VersionString((*api)->version), " (", (*api)->library,
                      "), device buffers");
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> CreateNcclCommunicator(
    Bootstrap* bootstrap, const NcclOptions& options) {
  if (bootstrap == nullptr) return absl::InvalidArgumentError("CreateNcclCommunicator: no bootstrap");
  ASSIGN_OR_RETURN(const absl::Duration timeout,
                   ResolveTimeout(options.timeout, "NcclOptions timeout"));
  const int rank = bootstrap->Rank();
  const int size = bootstrap->Size();

  // Round 1: host names. A rank that cannot go on still takes part, so
  // that every rank reports the same error instead of waiting for it.
  HostBlob mine;
  auto refuse = [](auto& blob, const absl::Status& s) {
    blob.ok = 0;
    CopyText(blob.error, std::string(s.message()));
  };
  int device_count = 0;
  {
    absl::StatusOr<const NcclApi*> api = Nccl();
    absl::StatusOr<LaunchInfo> launch = DetectLaunch();
    device_count = DeviceCount();
    if (!api.ok()) {
      refuse(mine, api.status());
    } else if (!launch.ok()) {
      refuse(mine, launch.status());
    } else if (device_count == 0) {
      refuse(mine, absl::FailedPreconditionError(
                       "nccl: no CUDA device (none visible, or no driver; CUDA_VISIBLE_DEVICES?)"));
    } else {
      mine.launcher_local_rank = launch->local_rank;
    }
    char host[256] = {0};
    if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "?");
    CopyText(mine.host, host);
  }
  ASSIGN_OR_RETURN(const std::vector<std::string> host_blobs,
                   bootstrap->AllGather(ToBlob(mine), timeout));
  ASSIGN_OR_RETURN(const std::vector<HostBlob> hosts, FromBlobs<HostBlob>(host_blobs, "host blob"));
  if (static_cast<int>(hosts.size()) != size) {
    return absl::InternalError("nccl setup: the bootstrap returned the wrong number of ranks");
  }
  for (int r = 0; r < size; ++r) {
    if (!hosts[r].ok) {
      return absl::FailedPreconditionError(absl::StrCat("rank ", r, ": ", Text(hosts[r].error)));
    }
  }
  const NcclApi* api = Nccl().value();
  int local_rank = 0, local_size = 0;
  for (int r = 0; r < size; ++r) {
    if (Text(hosts[r].host) != Text(hosts[rank].host)) continue;
    if (r < rank) ++local_rank;
    ++local_size;
  }
  if (hosts[rank].launcher_local_rank >= 0) local_rank = hosts[rank].launcher_local_rank;

  // Round 2: the GPU each rank takes, and rank 0's NCCL ids.
  GpuBlob gpu;
  gpu.device_count = device_count;
  {
    absl::Status chosen;
    int device = options.device;
    if (device < 0) {
      // RINGATTN_DEVICE, else the local rank: the launcher's, else the
      // rank's place among the ranks of its host.
      LaunchInfo where;
      where.local_rank = local_rank;
      absl::StatusOr<int> picked = ChooseDevice(where, device_count);
      if (picked.ok()) {
        device = *picked;
      } else {
        chosen = picked.status();
      }
    } else if (device >= device_count) {
      chosen = ArgError("NcclOptions device", absl::StrCat("0..", device_count - 1), device);
    }
    cudaDeviceProp prop;
    if (chosen.ok()) {
      const cudaError_t e = cudaSetDevice(device);
      const cudaError_t p = e == cudaSuccess ? cudaGetDeviceProperties(&prop, device) : e;
      if (p != cudaSuccess) {
        chosen = CudaStatus(p, __FILE__, __LINE__, "cudaSetDevice/cudaGetDeviceProperties");
      }
    }
    if (chosen.ok() && rank == 0) {
      for (ncclUniqueId& id : gpu.ids) {
        const ncclResult_t r = api->GetUniqueId(&id);
        if (r != ncclSuccess) {
          chosen = RINGATTN_NCCL_FAIL(*api, r, "ncclGetUniqueId");
          break;
        }
      }
    }
    if (chosen.ok()) {
      gpu.device = device;
      std::memcpy(gpu.uuid, prop.uuid.bytes, sizeof(gpu.uuid));
      CopyText(gpu.gpu, prop.name);
    } else {
      refuse(gpu, chosen);
    }
  }
  ASSIGN_OR_RETURN(const std::vector<std::string> gpu_blobs,
                   bootstrap->AllGather(ToBlob(gpu), timeout));
  ASSIGN_OR_RETURN(const std::vector<GpuBlob> gpus, FromBlobs<GpuBlob>(gpu_blobs, "GPU blob"));
  for (int r = 0; r < size; ++r) {
    if (!gpus[r].ok) {
      return absl::FailedPreconditionError(absl::StrCat("rank ", r, ": ", Text(gpus[r].error)));
    }
  }
  // NCCL cannot put two ranks on one GPU: every rank finds the same pair.
  for (int a = 0; a < size; ++a) {
    for (int b = 0; b < a; ++b) {
      if (Text(hosts[a].host) != Text(hosts[b].host) ||
          std::memcmp(gpus[a].uuid, gpus[b].uuid, sizeof(gpus[a].uuid)) != 0) {
        continue;
      }
      int on_host = 0;
      for (int r = 0; r < size; ++r) on_host += Text(hosts[r].host) == Text(hosts[a].host);
      return absl::FailedPreconditionError(absl::StrCat(
          "nccl: ranks ", b, " and ", a, " would share GPU ", gpus[a].device, " (",
          Text(gpus[a].gpu), ", uuid ", Hex(gpus[a].uuid, 16), ") on host ", Text(hosts[a].host),
          ": ", on_host, " ranks run there and rank ", a, " sees ", gpus[a].device_count,
          " GPU(s); NCCL needs one GPU per rank: launch at most as many processes per host as it "
          "has GPUs, or give each process its own (CUDA_VISIBLE_DEVICES, RINGATTN_DEVICE)"));
    }
  }

  ASSIGN_OR_RETURN(ncclComm_t data, MakeNcclComm(*api, size, gpus[0].ids[0], rank, timeout, "message"));
  absl::StatusOr<ncclComm_t> barrier = MakeNcclComm(*api, size, gpus[0].ids[1], rank, timeout, "barrier");
  if (!barrier.ok()) {
    api->CommAbort(data);
    return barrier.status();
  }
  const std::string description = absl::StrCat(
      "NCCL ", VersionString(api->version), ", GPU ", gpu.device, " (", Text(gpu.gpu),
      "), local rank ", local_rank, " of ", local_size, " on host ", Text(hosts[rank].host));
  auto comm = std::make_unique<NcclComm>(api, rank, size, gpu.device, timeout, description);
  RETURN_IF_ERROR(comm->Init(data, *barrier));
  return std::unique_ptr<NcclCommunicator>(std::move(comm));
}

}  // namespace ringattn::comm
