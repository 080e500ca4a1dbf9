// The `ucx` backend (see ucx_comm.h): UCP tag messages driven by one
// progress thread per communicator.
//
// Ownership: an Op (one send or one receive) is shared by its Request and
// the communicator's active list; the progress thread drops it from the
// list once it is settled (no UCP request of it outstanding). Fields
// marked [pt] are touched by the progress thread only; the others are
// guarded by mu_.
#include "comm/ucx/ucx_comm.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "comm/backend_util.h"

namespace ringattn::comm {
namespace {

constexpr int kMaxRanks = 1 << 20;
constexpr size_t kMaxAbortText = 2048;

// Tag: kind (4 bits) | rank (20 bits) | sequence (40 bits).
enum TagKind : uint64_t { kHeader = 1, kReply = 2, kData = 3, kAbortMsg = 4, kBarrierMsg = 5 };
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};
constexpr ucp_tag_t kKindMask = ucp_tag_t{0xF} << 60;

ucp_tag_t Tag(TagKind kind, int rank, uint64_t seq) {
  return (static_cast<ucp_tag_t>(kind) << 60) | (static_cast<ucp_tag_t>(rank) << 40) |
         (seq & ((ucp_tag_t{1} << 40) - 1));
}

absl::Status UcsError(const char* call, ucs_status_t status) {
  return absl::UnavailableError(absl::StrCat("UCX ", call, ": ", ucs_status_string(status)));
}

// The receiver's answer to a header.
struct Reply {
  int32_t ok = 0;
  int32_t reserved = 0;
  MessageHeader expected;
};


class UcxComm;

struct Op {
  UcxComm* comm = nullptr;
  bool is_send = false;
  int peer = 0;
  uint64_t seq = 0;
  MessageHeader header;  // send: the one sent; receive: the one expected
  MessageHeader got;     // [pt] receive: the header that came
  Reply reply;           // [pt] send: the answer; receive: the answer sent
  const void* send_buf = nullptr;
  void* recv_buf = nullptr;
  int64_t bytes = 0;
  int outstanding = 0;          // [pt] UCP requests of this op in flight
  void* recv_handle = nullptr;  // [pt] the receive in flight (for cancel)
  bool header_arrived = false;  // receive: got the header
  bool complete = false;        // succeeded or failed
  bool settled = false;         // complete and nothing in flight
  absl::Status status;
};

struct BarrierState;
// user_data of barrier and control callbacks.
struct Slot {
  UcxComm* comm = nullptr;
  BarrierState* barrier = nullptr;
  int peer = 0;
};

struct BarrierState {
  UcxComm* comm = nullptr;
  uint64_t generation = 0;
  std::vector<uint8_t> arrived;  // [rank]
  int remaining = 0;
  int outstanding = 0;              // [pt]
  std::vector<void*> recv_handles;  // [pt] [rank]
  uint64_t token = 0;               // the 8 bytes sent
  std::vector<Slot> slots;          // [rank] callback arguments
  std::vector<uint64_t> inbox;      // [rank]
  bool settled = false;
};

struct Command {
  enum Kind { kPostSend, kPostRecv, kCancel, kBarrier, kCancelBarrier, kAbort, kStop } kind;
  std::shared_ptr<Op> op;
  std::shared_ptr<BarrierState> barrier;
};

class UcxRequest;

class UcxComm final : public Communicator {
 public:
  UcxComm(int rank, int size, absl::Duration timeout)
      : rank_(rank), size_(size), timeout_(timeout) {
    send_seq_.assign(size, 0);
    recv_seq_.assign(size, 0);
    peer_failed_.assign(size, absl::OkStatus());
  }
  ~UcxComm() override;

  absl::Status Init(ucp_context_h context, Bootstrap* bootstrap, absl::Duration timeout);

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Name() const override { return "ucx"; }

  absl::StatusOr<std::unique_ptr<Request>> SendRecv(const void* send, int64_t send_bytes, int to,
                                                    const MessageMeta& send_meta, void* recv,
                                                    int64_t recv_bytes, int from,
                                                    const MessageMeta& recv_meta) override;
  absl::Status Barrier(absl::Duration timeout) override;
  void Abort(const absl::Status& reason) override;
  int64_t BytesSent() const override { return bytes_sent_.load(std::memory_order_relaxed); }

  // For requests.
  std::mutex& mu() { return mu_; }
  std::condition_variable& cv() { return cv_; }
  absl::Duration timeout() const { return timeout_; }
  bool aborted_locked() const { return !abort_status_.ok(); }
  void Push(Command command);

 private:
  friend class UcxRequest;
  // Progress thread.
  void ProgressLoop();
  void Execute(Command& command);
  bool Admit(const std::shared_ptr<Op>& op);
  void StartSend(const std::shared_ptr<Op>& op);
  void StartRecv(const std::shared_ptr<Op>& op);
  void StartBarrier(const std::shared_ptr<BarrierState>& state);
  void StartAbortSends();
  void PostAbortRecv();
  void CancelOp(Op* op);
  void CancelBarrier(BarrierState* state);
  void FailAll(const absl::Status& status);
  void FailPeer(int peer, const absl::Status& status);
  void Finish(Op* op, const absl::Status& status);  // [pt], takes mu_
  void Release(Op* op);                             // [pt] one request of op done
  void ReleaseBarrier(BarrierState* state);
  void Sweep();  // [pt] drops settled ops
  ucs_status_ptr_t Send(int peer, const void* buf, size_t bytes, ucp_tag_t tag,
                        ucp_send_nbx_callback_t cb, void* user_data);
  ucs_status_ptr_t Recv(void* buf, size_t bytes, ucp_tag_t tag, ucp_tag_t mask,
                        ucp_tag_recv_nbx_callback_t cb, void* user_data);

  // UCP callbacks.
  static void OnHeaderSent(void* request, ucs_status_t status, void* user_data);
  static void OnReplyRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                          void* user_data);
  static void OnDataSent(void* request, ucs_status_t status, void* user_data);
  static void OnHeaderRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                           void* user_data);
  static void OnReplySent(void* request, ucs_status_t status, void* user_data);
  static void OnDataRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                         void* user_data);
  static void OnBarrierSent(void* request, ucs_status_t status, void* user_data);
  static void OnBarrierRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                            void* user_data);
  static void OnAbortSent(void* request, ucs_status_t status, void* user_data);
  static void OnAbortRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                          void* user_data);
  static void OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status);

  const int rank_;
  const int size_;
  const absl::Duration timeout_;
  ucp_worker_h worker_ = nullptr;
  std::vector<ucp_ep_h> eps_;
  std::vector<Slot> ep_slots_;
  std::thread progress_;
  std::atomic<int64_t> bytes_sent_{0};

  std::mutex mu_;
  std::condition_variable cv_;      // requests, barriers
  std::condition_variable cmd_cv_;  // the progress thread (without wakeup fds)
  // The progress thread sleeps in ppoll on the worker's event fd (traffic
  // wakes it at once) and on wake_fd_ (a command was pushed); -1 when the
  // transports offer no event fd, and then it sleeps on cmd_cv_.
  int worker_fd_ = -1;
  int wake_fd_ = -1;
  void Wake();                      // mu_ held
  std::deque<Command> commands_;
  std::vector<uint64_t> send_seq_;  // [peer]
  std::vector<uint64_t> recv_seq_;  // [peer]
  uint64_t barrier_generation_ = 0;
  absl::Status abort_status_;
  std::vector<absl::Status> peer_failed_;  // [peer]
  bool stopping_ = false;

  // [pt]
  std::list<std::shared_ptr<Op>> active_;
  std::list<std::shared_ptr<BarrierState>> barriers_;
  std::vector<Slot> abort_slots_;
  std::string abort_text_;
  char abort_inbox_[kMaxAbortText] = {0};
  void* abort_recv_ = nullptr;
  int abort_sends_ = 0;
  Slot abort_slot_;
  bool abort_sent_ = false;
  // After an abort (sent or received) and a grace period for the ABORT
  // messages to get out, the endpoints are closed by force: that fails
  // whatever UCP operation still waits on a peer that stopped (a payload
  // whose receive the peer cancelled), so every request settles promptly.
  absl::Time aborted_at_ = absl::InfiniteFuture();
  std::vector<ucs_status_ptr_t> closing_;
  void CloseEndpoints();
};

class UcxRequest final : public Request {
 public:
  UcxRequest(UcxComm* comm, std::shared_ptr<Op> send, std::shared_ptr<Op> recv)
      : comm_(comm), send_(std::move(send)), recv_(std::move(recv)) {}

  ~UcxRequest() override {
    std::unique_lock<std::mutex> lock(comm_->mu());
    auto complete = [this] { return Done(send_.get()) && Done(recv_.get()); };
    if (!timed_out_ && !comm_->aborted_locked())
      WaitFor(comm_->cv(), lock, comm_->timeout(), complete);
    for (const std::shared_ptr<Op>& op : {send_, recv_}) {
      if (op && !op->complete) {
        Command command{Command::kCancel, op, nullptr};
        lock.unlock();
        comm_->Push(std::move(command));
        lock.lock();
      }
    }
    auto settled = [this] { return (!send_ || send_->settled) && (!recv_ || recv_->settled); };
    // A matched transfer finishes, or its peer's endpoint fails; bounded so
    // that a lost peer never hangs the process.
    WaitFor(comm_->cv(), lock, comm_->timeout() + absl::Seconds(5), settled);
  }

  absl::StatusOr<bool> Test() override {
    std::lock_guard<std::mutex> lock(comm_->mu());
    const absl::Status status = FirstError();
    if (!status.ok()) return status;
    return Done(send_.get()) && Done(recv_.get());
  }

  absl::Status Wait(absl::Duration timeout) override {
    std::unique_lock<std::mutex> lock(comm_->mu());
    auto done = [this] { return (Done(send_.get()) && Done(recv_.get())) || !FirstError().ok(); };
    if (!WaitFor(comm_->cv(), lock, timeout, done)) {
      timed_out_ = true;
      return absl::DeadlineExceededError(DescribePending(timeout));
    }
    return FirstError();
  }

 private:
  static bool Done(const Op* op) { return op == nullptr || op->complete; }

  absl::Status FirstError() const {
    if (recv_ && recv_->complete && !recv_->status.ok()) return recv_->status;
    if (send_ && send_->complete && !send_->status.ok()) return send_->status;
    return absl::OkStatus();
  }

  std::string DescribePending(absl::Duration timeout) const {
    std::vector<std::string> parts;
    if (recv_ && !recv_->complete) {
      const MessageHeader& h = recv_->header;
      parts.push_back(!recv_->header_arrived
                          ? absl::StrCat("no message from rank ", h.src_rank, " for ", Describe(h))
                          : absl::StrCat("the message from rank ", h.src_rank, " for ", Describe(h),
                                         " is still arriving"));
    }
    if (send_ && !send_->complete) {
      const MessageHeader& h = send_->header;
      parts.push_back(
          absl::StrCat("rank ", h.dst_rank, " did not receive the message for ", Describe(h)));
    }
    return absl::StrCat("rank ", comm_->Rank(), ": ", absl::StrJoin(parts, "; "), " within ",
                        absl::FormatDuration(timeout));
  }

  UcxComm* const comm_;
  std::shared_ptr<Op> send_;
  std::shared_ptr<Op> recv_;
  bool timed_out_ = false;
};


// ---- setup and teardown ---------------------------------------------------

absl::Status UcxComm::Init(ucp_context_h context, Bootstrap* bootstrap, absl::Duration timeout) {
  ucp_worker_params_t wp;
  std::memset(&wp, 0, sizeof(wp));
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread uses it
  ucs_status_t st = ucp_worker_create(context, &wp, &worker_);
  if (st != UCS_OK) return UcsError("ucp_worker_create", st);
  if (ucp_worker_get_efd(worker_, &worker_fd_) != UCS_OK) worker_fd_ = -1;
  if (worker_fd_ >= 0) {
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) worker_fd_ = -1;
  }
  ucp_address_t* address = nullptr;
  size_t length = 0;
  st = ucp_worker_get_address(worker_, &address, &length);
  if (st != UCS_OK) return UcsError("ucp_worker_get_address", st);
  const std::string mine(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(worker_, address);
  absl::StatusOr<std::vector<std::string>> all = bootstrap->AllGather(mine, timeout);
  if (!all.ok()) return all.status();
  eps_.assign(size_, nullptr);
  ep_slots_.resize(size_);
  for (int p = 0; p < size_; ++p) {
    ep_slots_[p] = Slot{this, nullptr, p};
    ucp_ep_params_t ep;
    std::memset(&ep, 0, sizeof(ep));
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>((*all)[p].data());
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &UcxComm::OnEndpointError;
    ep.err_handler.arg = &ep_slots_[p];
    st = ucp_ep_create(worker_, &ep, &eps_[p]);
    if (st != UCS_OK) {
      return absl::UnavailableError(
          absl::StrCat("rank ", rank_, ": UCX endpoint to rank ", p, ": ", ucs_status_string(st)));
    }
  }
  abort_slots_.resize(size_);
  for (int p = 0; p < size_; ++p) abort_slots_[p] = Slot{this, nullptr, p};
  abort_slot_ = Slot{this, nullptr, -1};
  PostAbortRecv();
  progress_ = std::thread([this] { ProgressLoop(); });
  return absl::OkStatus();
}

UcxComm::~UcxComm() {
  if (progress_.joinable()) {
    Push(Command{Command::kStop, nullptr, nullptr});
    progress_.join();
  }
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void UcxComm::Wake() {
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  cmd_cv_.notify_one();
}

void UcxComm::Push(Command command) {
  std::lock_guard<std::mutex> lock(mu_);
  commands_.push_back(std::move(command));
  Wake();
}

// ---- the progress thread ----------------------------------------------------

void UcxComm::ProgressLoop() {
  absl::Duration backoff = absl::Microseconds(10);
  for (;;) {
    std::deque<Command> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(commands_);
    }
    bool stop = false;
    for (Command& command : batch) {
      if (command.kind == Command::kStop) {
        stop = true;
      } else {
        Execute(command);
      }
    }
    if (stop) break;
    const unsigned events = ucp_worker_progress(worker_);
    if (absl::Now() > aborted_at_ + absl::Milliseconds(300)) {
      aborted_at_ = absl::InfiniteFuture();
      CloseEndpoints();
      absl::Status status;
      {
        std::lock_guard<std::mutex> lock(mu_);
        status = abort_status_;
      }
      FailAll(status);
    }
    Sweep();
    if (events > 0 || !batch.empty()) {
      backoff = absl::Microseconds(10);
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    const bool busy = !active_.empty() || !barriers_.empty();
    backoff = std::min(backoff * 2, busy ? absl::Microseconds(200) : absl::Milliseconds(2));
    if (worker_fd_ < 0) {
      cmd_cv_.wait_for(lock, absl::ToChronoNanoseconds(backoff),
                       [this] { return !commands_.empty(); });
      continue;
    }
    // Sleep until traffic, a command, or the backoff (for the timers of
    // Sweep and the abort). ucp_worker_arm answers BUSY when events are
    // already pending: then progress again at once. A command pushed after
    // this check leaves wake_fd_ readable, so it is never missed.
    if (!commands_.empty()) continue;
    lock.unlock();
    if (ucp_worker_arm(worker_) == UCS_ERR_BUSY) {
      backoff = absl::Microseconds(10);
      continue;
    }
    pollfd fds[2] = {{worker_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const timespec ts = absl::ToTimespec(backoff);
    if (ppoll(fds, 2, &ts, nullptr) > 0) {
      if (fds[1].revents & POLLIN) {
        uint64_t n;
        (void)!read(wake_fd_, &n, sizeof(n));
      }
      backoff = absl::Microseconds(10);
    }
  }

  // Teardown: let what is in flight finish (bounded), then close.
  bool failed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    failed = !abort_status_.ok();
    for (const absl::Status& s : peer_failed_) failed = failed || !s.ok();
  }
  const absl::Time deadline = absl::Now() + std::min(timeout_, absl::Seconds(2));
  if (failed) {
    // Nothing more is expected from the peers: end what still waits on them.
    CloseEndpoints();
    FailAll(absl::CancelledError("communicator destroyed"));
  }
  while ((!active_.empty() || !barriers_.empty() || abort_sends_ > 0) && absl::Now() < deadline) {
    ucp_worker_progress(worker_);
    Sweep();
  }
  if (!failed) {
    ucp_request_param_t param;
    std::memset(&param, 0, sizeof(param));
    ucs_status_ptr_t flush = ucp_worker_flush_nbx(worker_, &param);
    if (UCS_PTR_IS_PTR(flush)) {
      while (ucp_request_check_status(flush) == UCS_INPROGRESS && absl::Now() < deadline) {
        ucp_worker_progress(worker_);
      }
      if (ucp_request_check_status(flush) == UCS_INPROGRESS) ucp_request_cancel(worker_, flush);
      ucp_request_free(flush);
    }
  }
  if (abort_recv_ != nullptr) ucp_request_cancel(worker_, abort_recv_);
  CloseEndpoints();
  const absl::Time close_deadline = absl::Now() + absl::Seconds(1);
  for (ucs_status_ptr_t r : closing_) {
    while (ucp_request_check_status(r) == UCS_INPROGRESS && absl::Now() < close_deadline) {
      ucp_worker_progress(worker_);
    }
    ucp_request_free(r);
  }
  closing_.clear();
  for (int i = 0; i < 100 && abort_recv_ != nullptr; ++i) ucp_worker_progress(worker_);
}

void UcxComm::CloseEndpoints() {
  for (ucp_ep_h& ep : eps_) {
    if (ep == nullptr) continue;
    ucp_request_param_t param;
    std::memset(&param, 0, sizeof(param));
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &param);
    if (UCS_PTR_IS_PTR(r)) closing_.push_back(r);
    ep = nullptr;
  }
}

void UcxComm::Execute(Command& command) {
  switch (command.kind) {
    case Command::kPostSend:
      StartSend(command.op);
      break;
    case Command::kPostRecv:
      StartRecv(command.op);
      break;
    case Command::kCancel:
      CancelOp(command.op.get());
      break;
    case Command::kBarrier:
      StartBarrier(command.barrier);
      break;
    case Command::kCancelBarrier:
      CancelBarrier(command.barrier.get());
      break;
    case Command::kAbort: {
      absl::Status status;
      {
        std::lock_guard<std::mutex> lock(mu_);
        status = abort_status_;
      }
      StartAbortSends();
      FailAll(status);
      if (aborted_at_ == absl::InfiniteFuture()) aborted_at_ = absl::Now();
      break;
    }
    case Command::kStop:
      break;
  }
}

ucs_status_ptr_t UcxComm::Send(int peer, const void* buf, size_t bytes, ucp_tag_t tag,
                               ucp_send_nbx_callback_t cb, void* user_data) {
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  param.cb.send = cb;
  param.user_data = user_data;
  if (eps_[peer] == nullptr) return UCS_STATUS_PTR(UCS_ERR_CANCELED);  // closed after an abort
  return ucp_tag_send_nbx(eps_[peer], buf, bytes, tag, &param);
}

ucs_status_ptr_t UcxComm::Recv(void* buf, size_t bytes, ucp_tag_t tag, ucp_tag_t mask,
                               ucp_tag_recv_nbx_callback_t cb, void* user_data) {
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  param.cb.recv = cb;
  param.user_data = user_data;
  return ucp_tag_recv_nbx(worker_, buf, bytes, tag, mask, &param);
}

void UcxComm::Finish(Op* op, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (op->complete) return;
  op->complete = true;
  op->status = status;
  cv_.notify_all();
}

void UcxComm::Release(Op* op) { --op->outstanding; }

void UcxComm::Sweep() {
  std::lock_guard<std::mutex> lock(mu_);
  bool changed = false;
  for (auto it = active_.begin(); it != active_.end();) {
    Op* op = it->get();
    if (op->outstanding == 0 && op->complete) {
      op->settled = true;
      changed = true;
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = barriers_.begin(); it != barriers_.end();) {
    if ((*it)->outstanding == 0) {
      (*it)->settled = true;
      changed = true;
      it = barriers_.erase(it);
    } else {
      ++it;
    }
  }
  if (changed) cv_.notify_all();
}

absl::Status PeerFailure(int me, const Op& op, const char* what, ucs_status_t status) {
  return absl::UnavailableError(absl::StrCat("rank ", me, ": peer rank ", op.peer, " failed (",
                                             what, ": ", ucs_status_string(status), ") at ",
                                             Describe(op.header)));
}

// "rank 0: peer rank 1 failed at step 5 (kind 0): endpoint to rank 1 ...".
absl::Status PeerFailed(int me, const Op& op, const absl::Status& failure) {
  return absl::UnavailableError(absl::StrCat("rank ", me, ": peer rank ", op.peer, " failed at ",
                                             Describe(op.header), ": ", failure.message()));
}

// Registers `op` and settles it at once when the world was aborted or its
// peer already failed; false then (nothing is posted).
bool UcxComm::Admit(const std::shared_ptr<Op>& op) {
  active_.push_back(op);
  std::lock_guard<std::mutex> lock(mu_);
  if (!abort_status_.ok()) {
    op->complete = true;
    op->status = abort_status_;
    return false;
  }
  if (!peer_failed_[op->peer].ok()) {
    op->complete = true;
    op->status = PeerFailed(rank_, *op, peer_failed_[op->peer]);
    cv_.notify_all();
    return false;
  }
  return true;
}

void UcxComm::StartSend(const std::shared_ptr<Op>& op) {
  if (!Admit(op)) return;
  // The reply receive first, then the header.
  ucs_status_ptr_t r = Recv(&op->reply, sizeof(op->reply), Tag(kReply, op->peer, op->seq),
                            kFullMask, &UcxComm::OnReplyRecv, op.get());
  if (UCS_PTR_IS_ERR(r)) {
    Finish(op.get(), PeerFailure(rank_, *op, "reply receive", UCS_PTR_STATUS(r)));
    return;
  }
  op->recv_handle = r;
  ++op->outstanding;
  r = Send(op->peer, &op->header, sizeof(op->header), Tag(kHeader, rank_, op->seq),
           &UcxComm::OnHeaderSent, op.get());
  if (UCS_PTR_IS_ERR(r)) {
    Finish(op.get(), PeerFailure(rank_, *op, "header send", UCS_PTR_STATUS(r)));
    CancelOp(op.get());
    return;
  }
  ++op->outstanding;
}

void UcxComm::StartRecv(const std::shared_ptr<Op>& op) {
  if (!Admit(op)) return;
  ucs_status_ptr_t r = Recv(&op->got, sizeof(op->got), Tag(kHeader, op->peer, op->seq), kFullMask,
                            &UcxComm::OnHeaderRecv, op.get());
  if (UCS_PTR_IS_ERR(r)) {
    Finish(op.get(), PeerFailure(rank_, *op, "header receive", UCS_PTR_STATUS(r)));
    return;
  }
  op->recv_handle = r;
  ++op->outstanding;
}

void UcxComm::CancelOp(Op* op) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!op->complete) {
      op->complete = true;
      op->status = absl::CancelledError(absl::StrCat("rank ", rank_, ": request destroyed before ",
                                                     Describe(op->header), " completed"));
      cv_.notify_all();
    }
  }
  if (op->recv_handle != nullptr) ucp_request_cancel(worker_, op->recv_handle);
}

void UcxComm::OnHeaderSent(void* request, ucs_status_t status, void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  if (status != UCS_OK && status != UCS_ERR_CANCELED) {
    op->comm->Finish(op, PeerFailure(op->comm->rank_, *op, "header send", status));
  }
  op->comm->Release(op);
  ucp_request_free(request);
}

void UcxComm::OnReplyRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                          void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  UcxComm* c = op->comm;
  op->recv_handle = nullptr;
  c->Release(op);
  ucp_request_free(request);
  if (status == UCS_ERR_CANCELED) return;
  if (status != UCS_OK || info->length != sizeof(Reply)) {
    c->Finish(op, PeerFailure(c->rank_, *op, "reply receive", status));
    return;
  }
  bool complete = false;
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    complete = op->complete;
  }
  if (complete) return;
  if (!op->reply.ok) {
    const absl::Status check = CheckHeader(op->header, op->reply.expected);
    c->Finish(op, absl::InvalidArgumentError(
                      absl::StrCat("rank ", c->rank_, ": ",
                                   check.ok() ? std::string("refused by the receiver")
                                              : std::string(check.message()))));
    return;
  }
  if (op->bytes == 0) {
    c->Finish(op, absl::OkStatus());
    return;
  }
  ucs_status_ptr_t r = c->Send(op->peer, op->send_buf, static_cast<size_t>(op->bytes),
                               Tag(kData, c->rank_, op->seq), &UcxComm::OnDataSent, op);
  if (UCS_PTR_IS_ERR(r)) {
    c->Finish(op, PeerFailure(c->rank_, *op, "payload send", UCS_PTR_STATUS(r)));
    return;
  }
  ++op->outstanding;
}

void UcxComm::OnDataSent(void* request, ucs_status_t status, void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  UcxComm* c = op->comm;
  if (status == UCS_OK) {
    c->bytes_sent_.fetch_add(op->bytes, std::memory_order_relaxed);
    c->Finish(op, absl::OkStatus());
  } else {
    c->Finish(op, PeerFailure(c->rank_, *op, "payload send", status));
  }
  c->Release(op);
  ucp_request_free(request);
}

void UcxComm::OnHeaderRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                           void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  UcxComm* c = op->comm;
  op->recv_handle = nullptr;
  c->Release(op);
  ucp_request_free(request);
  if (status == UCS_ERR_CANCELED) return;
  if (status != UCS_OK || info->length != sizeof(MessageHeader)) {
    c->Finish(op, absl::InvalidArgumentError(
                      absl::StrCat("rank ", c->rank_, ": malformed header from rank ", op->peer,
                                   " for ", Describe(op->header), " (", ucs_status_string(status),
                                   ", ", status == UCS_OK ? info->length : 0, " bytes)")));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    op->header_arrived = true;
    if (op->complete) return;  // cancelled meanwhile
  }
  absl::Status check = CheckHeaderIntact(op->got);
  if (check.ok()) check = CheckHeader(op->got, op->header);
  op->reply.expected = op->header;
  op->reply.ok = check.ok() ? 1 : 0;
  if (check.ok() && op->bytes > 0) {
    ucs_status_ptr_t r =
        c->Recv(op->recv_buf, static_cast<size_t>(op->bytes), Tag(kData, op->peer, op->seq),
                kFullMask, &UcxComm::OnDataRecv, op);
    if (UCS_PTR_IS_ERR(r)) {
      c->Finish(op, PeerFailure(c->rank_, *op, "payload receive", UCS_PTR_STATUS(r)));
      op->reply.ok = 0;
    } else {
      op->recv_handle = r;
      ++op->outstanding;
    }
  }
  ucs_status_ptr_t r = c->Send(op->peer, &op->reply, sizeof(op->reply),
                               Tag(kReply, c->rank_, op->seq), &UcxComm::OnReplySent, op);
  if (!UCS_PTR_IS_ERR(r)) ++op->outstanding;
  if (!check.ok()) {
    c->Finish(op, absl::Status(check.code(), absl::StrCat("rank ", c->rank_, ": ", check.message())));
  } else if (op->bytes == 0) {
    c->Finish(op, absl::OkStatus());
  }
}

void UcxComm::OnReplySent(void* request, ucs_status_t, void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  op->comm->Release(op);
  ucp_request_free(request);
}

void UcxComm::OnDataRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                         void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  UcxComm* c = op->comm;
  op->recv_handle = nullptr;
  if (status == UCS_OK && info->length == static_cast<size_t>(op->bytes)) {
    const absl::Status intact = CheckPayloadIntact(op->got, op->recv_buf);
    c->Finish(op, intact.ok() ? intact
                              : absl::DataLossError(absl::StrCat("rank ", c->rank_, ": ", intact.message())));
  } else if (status != UCS_ERR_CANCELED) {
    c->Finish(op, PeerFailure(c->rank_, *op, "payload receive", status));
  }
  c->Release(op);
  ucp_request_free(request);
}

// ---- barrier ------------------------------------------------------------------

void UcxComm::StartBarrier(const std::shared_ptr<BarrierState>& state) {
  barriers_.push_back(state);
  state->recv_handles.assign(size_, nullptr);
  state->inbox.assign(size_, 0);
  state->slots.resize(size_);
  for (int p = 0; p < size_; ++p) state->slots[p] = Slot{this, state.get(), p};
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    ucs_status_ptr_t r =
        Recv(&state->inbox[p], sizeof(uint64_t), Tag(kBarrierMsg, p, state->generation), kFullMask,
             &UcxComm::OnBarrierRecv, &state->slots[p]);
    if (!UCS_PTR_IS_ERR(r)) {
      state->recv_handles[p] = r;
      ++state->outstanding;
    }
    r = Send(p, &state->token, sizeof(uint64_t), Tag(kBarrierMsg, rank_, state->generation),
             &UcxComm::OnBarrierSent, state.get());
    if (!UCS_PTR_IS_ERR(r)) ++state->outstanding;
  }
}

void UcxComm::CancelBarrier(BarrierState* state) {
  for (void*& handle : state->recv_handles) {
    if (handle != nullptr) ucp_request_cancel(worker_, handle);
  }
}

void UcxComm::OnBarrierSent(void* request, ucs_status_t, void* user_data) {
  auto* state = static_cast<BarrierState*>(user_data);
  --state->outstanding;
  ucp_request_free(request);
}

void UcxComm::OnBarrierRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t*,
                            void* user_data) {
  const Slot* slot = static_cast<Slot*>(user_data);
  BarrierState* state = slot->barrier;
  UcxComm* c = state->comm;
  const int peer = slot->peer;
  --state->outstanding;
  state->recv_handles[peer] = nullptr;
  ucp_request_free(request);
  if (status != UCS_OK) return;
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    if (!state->arrived[peer]) {
      state->arrived[peer] = 1;
      --state->remaining;
      c->cv_.notify_all();
    }
  }
}

absl::Status UcxComm::Barrier(absl::Duration timeout) {
  auto state = std::make_shared<BarrierState>();
  state->comm = this;
  state->arrived.assign(size_, 0);
  state->arrived[rank_] = 1;
  state->remaining = size_ - 1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!abort_status_.ok()) return abort_status_;
    state->generation = barrier_generation_++;
    state->token = state->generation;
  }
  if (size_ == 1) return absl::OkStatus();
  Push(Command{Command::kBarrier, nullptr, state});
  std::unique_lock<std::mutex> lock(mu_);
  auto failed_peer = [&]() -> int {
    for (int p = 0; p < size_; ++p) {
      if (!state->arrived[p] && !peer_failed_[p].ok()) return p;
    }
    return -1;
  };
  const bool done = WaitFor(cv_, lock, timeout, [&] {
    return state->remaining == 0 || !abort_status_.ok() || failed_peer() >= 0;
  });
  if (state->remaining == 0) return absl::OkStatus();
  absl::Status status;
  if (!abort_status_.ok()) {
    status = abort_status_;
  } else if (const int p = failed_peer(); p >= 0) {
    status = absl::UnavailableError(absl::StrCat("rank ", rank_, ": barrier: peer rank ", p,
                                                 " failed: ", peer_failed_[p].message()));
  } else {
    std::vector<int> missing;
    for (int p = 0; p < size_; ++p) {
      if (!state->arrived[p]) missing.push_back(p);
    }
    (void)done;
    status = absl::DeadlineExceededError(absl::StrCat(
        "rank ", rank_, ": barrier: no arrival from rank", missing.size() == 1 ? " " : "s ",
        absl::StrJoin(missing, ", "), " within ", absl::FormatDuration(timeout)));
  }
  lock.unlock();
  Push(Command{Command::kCancelBarrier, nullptr, state});
  return status;
}

// ---- abort and failures ------------------------------------------------------

void UcxComm::PostAbortRecv() {
  ucs_status_ptr_t r = Recv(abort_inbox_, sizeof(abort_inbox_), Tag(kAbortMsg, 0, 0), kKindMask,
                            &UcxComm::OnAbortRecv, &abort_slot_);
  if (!UCS_PTR_IS_ERR(r)) abort_recv_ = r;
}

void UcxComm::OnAbortRecv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                          void* user_data) {
  UcxComm* c = static_cast<Slot*>(user_data)->comm;
  c->abort_recv_ = nullptr;
  ucp_request_free(request);
  if (status != UCS_OK) return;
  // The payload: the aborting rank (int32), then its reason.
  const size_t length = std::min(info->length, sizeof(c->abort_inbox_));
  int32_t from = -1;
  if (length >= sizeof(from)) std::memcpy(&from, c->abort_inbox_, sizeof(from));
  const std::string why(c->abort_inbox_ + sizeof(from),
                        length >= sizeof(from) ? length - sizeof(from) : 0);
  absl::Status aborted;
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    if (c->abort_status_.ok()) {
      c->abort_status_ = absl::AbortedError(absl::StrCat("rank ", from, " aborted: ", why));
      c->cv_.notify_all();
    }
    aborted = c->abort_status_;
  }
  c->FailAll(aborted);
  if (c->aborted_at_ == absl::InfiniteFuture()) c->aborted_at_ = absl::Now();
}

void UcxComm::StartAbortSends() {
  if (abort_sent_) return;
  abort_sent_ = true;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!peer_failed_[p].ok()) continue;
    }
    ucs_status_ptr_t r = Send(p, abort_text_.data(), abort_text_.size(), Tag(kAbortMsg, rank_, 0),
                              &UcxComm::OnAbortSent, &abort_slots_[p]);
    if (!UCS_PTR_IS_ERR(r)) ++abort_sends_;
  }
}

void UcxComm::OnAbortSent(void* request, ucs_status_t, void* user_data) {
  --static_cast<Slot*>(user_data)->comm->abort_sends_;
  ucp_request_free(request);
}

void UcxComm::FailAll(const absl::Status& status) {
  for (const std::shared_ptr<Op>& op : active_) {
    Finish(op.get(), status);
    if (op->recv_handle != nullptr) ucp_request_cancel(worker_, op->recv_handle);
  }
  for (const std::shared_ptr<BarrierState>& state : barriers_) CancelBarrier(state.get());
}

void UcxComm::FailPeer(int peer, const absl::Status& status) {
  for (const std::shared_ptr<Op>& op : active_) {
    if (op->peer != peer) continue;
    Finish(op.get(), PeerFailed(rank_, *op, status));
    if (op->recv_handle != nullptr) ucp_request_cancel(worker_, op->recv_handle);
  }
  for (const std::shared_ptr<BarrierState>& state : barriers_) {
    void*& handle = state->recv_handles[peer];
    if (handle != nullptr) ucp_request_cancel(worker_, handle);
  }
}

void UcxComm::OnEndpointError(void* arg, ucp_ep_h, ucs_status_t status) {
  const Slot* slot = static_cast<Slot*>(arg);
  UcxComm* c = slot->comm;
  const absl::Status failure = absl::UnavailableError(
      absl::StrCat("endpoint to rank ", slot->peer, " failed (", ucs_status_string(status),
                   "): the peer died or is unreachable"));
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    if (c->stopping_) return;
    if (c->peer_failed_[slot->peer].ok()) c->peer_failed_[slot->peer] = failure;
    c->cv_.notify_all();
  }
  c->FailPeer(slot->peer, failure);
}

void UcxComm::Abort(const absl::Status& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!abort_status_.ok()) return;
    const std::string why =
        reason.ok() ? std::string("no reason given")
                    : absl::StrCat(absl::StatusCodeToString(reason.code()), ": ", reason.message());
    const std::string text = why.substr(0, kMaxAbortText - sizeof(int32_t));
    const int32_t me = rank_;
    abort_text_.assign(reinterpret_cast<const char*>(&me), sizeof(me));
    abort_text_ += text;
    abort_status_ = absl::AbortedError(absl::StrCat("rank ", rank_, " aborted: ", text));
    cv_.notify_all();
  }
  Push(Command{Command::kAbort, nullptr, nullptr});
}

// ---- posting ----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Request>> UcxComm::SendRecv(const void* send, int64_t send_bytes,
                                                           int to, const MessageMeta& send_meta,
                                                           void* recv, int64_t recv_bytes, int from,
                                                           const MessageMeta& recv_meta) {
  ASSIGN_OR_RETURN(const SendRecvHalves halves,
                   ValidateSendRecv(rank_, size_, send, send_bytes, to, send_meta, recv, recv_bytes,
                                    from, recv_meta));
  const bool want_send = halves.send, want_recv = halves.recv;
  std::shared_ptr<Op> send_op, recv_op;
  if (want_send) {
    send_op = std::make_shared<Op>();
    send_op->comm = this;
    send_op->is_send = true;
    send_op->peer = to;
    send_op->send_buf = send;
    send_op->bytes = send_bytes;
    send_op->header.src_rank = rank_;
    send_op->header.dst_rank = to;
    send_op->header.bytes = send_bytes;
    send_op->header.meta = send_meta;
    // Between processes: CRC-32C of the header and payload, checked on
    // receipt (a corrupted message is DataLoss, not a wrong result).
    SealHeader(&send_op->header, send);
  }
  if (want_recv) {
    recv_op = std::make_shared<Op>();
    recv_op->comm = this;
    recv_op->peer = from;
    recv_op->recv_buf = recv;
    recv_op->bytes = recv_bytes;
    recv_op->header.src_rank = from;
    recv_op->header.dst_rank = rank_;
    recv_op->header.bytes = recv_bytes;
    recv_op->header.meta = recv_meta;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!abort_status_.ok()) return abort_status_;
    if (send_op) {
      send_op->seq = send_seq_[to]++;
      commands_.push_back(Command{Command::kPostSend, send_op, nullptr});
    }
    if (recv_op) {
      recv_op->seq = recv_seq_[from]++;
      commands_.push_back(Command{Command::kPostRecv, recv_op, nullptr});
    }
    Wake();
  }
  return std::unique_ptr<Request>(new UcxRequest(this, std::move(send_op), std::move(recv_op)));
}

// The process's UCP context, made once and kept (workers come and go).
absl::StatusOr<ucp_context_h> Context() {
  static std::once_flag once;
  static ucp_context_h context = nullptr;
  static absl::Status status;
  std::call_once(once, [] {
    ucp_config_t* config = nullptr;
    ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
    if (st != UCS_OK) {
      status = UcsError("ucp_config_read", st);
      return;
    }
    ucp_params_t params;
    std::memset(&params, 0, sizeof(params));
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
    params.mt_workers_shared = 1;
    st = ucp_init(&params, config, &context);
    ucp_config_release(config);
    if (st != UCS_OK) status = UcsError("ucp_init", st);
  });
  if (!status.ok()) return status;
  return context;
}

}  // namespace

bool UcxBuilt() { return true; }

std::string UcxDescription() {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  return absl::StrCat("UCX ", major, ".", minor, ".", release,
                      " tag messages, host memory (device memory would be staged through pinned "
                      "host buffers: this UCX has no CUDA transport)");
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateUcxCommunicator(Bootstrap* bootstrap,
                                                                    const UcxOptions& options) {
  if (bootstrap == nullptr)
    return absl::InvalidArgumentError("CreateUcxCommunicator: no bootstrap");
  if (bootstrap->Size() > kMaxRanks) {
    return ArgError("CreateUcxCommunicator: world size", absl::StrCat("at most ", kMaxRanks),
                    bootstrap->Size());
  }
  ASSIGN_OR_RETURN(const absl::Duration timeout,
                   ResolveTimeout(options.timeout, "UcxOptions timeout"));
  ASSIGN_OR_RETURN(ucp_context_h context, Context());
  auto comm = std::make_unique<UcxComm>(bootstrap->Rank(), bootstrap->Size(), timeout);
  RETURN_IF_ERROR(comm->Init(context, bootstrap, timeout));
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace ringattn::comm
