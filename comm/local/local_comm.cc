// The `local` backend (see local_comm.h): W ranks as threads, one copy
// thread per rank that memcpys (or copies through the world's LocalCopier)
// matched messages into that rank's receive buffers while the ranks compute.
//
// All shared state (posted operations, copy queues, barrier, abort) lives
// under one mutex; the copy threads drop it while they copy. Waiters block
// on condition variables, never spin. (std::mutex rather than absl::Mutex:
// thread sanitizers see through it, also with an uninstrumented Abseil.)
#include "comm/local/local_comm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "comm/backend_util.h"

namespace ringattn::comm {
namespace {

// The copy thread checks for an abort between chunks of this size, so an
// abort does not wait for a long copy to finish.
constexpr int64_t kCopyChunkBytes = int64_t{4} << 20;

enum class OpState { kPosted, kMatched, kCopying, kDone };


class LocalRequest;

// One half of a SendRecv: a send or a receive.
struct Op {
  LocalRequest* request = nullptr;
  bool used = false;
  bool is_send = false;
  MessageHeader header;  // send: the header sent; receive: the header expected
  const void* send_buf = nullptr;
  void* recv_buf = nullptr;
  const void* mark = nullptr;  // stream order: the posting rank's mark (held by the request)
  std::shared_ptr<void> landed;  // stream order: the copier's mark after the copy is queued
  OpState state = OpState::kPosted;
};

// A matched send and receive, waiting for the receiver's copy thread.
struct Job {
  Op* send = nullptr;
  Op* recv = nullptr;
};

class LocalComm;

}  // namespace

struct LocalWorld::Impl {
  Impl(int world_size, absl::Duration wait_timeout, const LocalWorldOptions& options);

  // All of these require `mu`.
  void Post(Op* op);
  void Match(Op* send, Op* recv);
  void Complete(Op* op, const absl::Status& status);
  void Cancel(Op* op);

  void CopyLoop(int rank);
  void Abort(int rank, const absl::Status& reason);
  absl::Status Barrier(int rank, absl::Duration timeout);

  const int size;
  const absl::Duration timeout;
  const std::string name;
  const std::function<absl::StatusOr<std::shared_ptr<void>>(void*)> mark_stream;
  const std::function<absl::Status(void*, const void*)> wait_mark;
  std::vector<std::unique_ptr<LocalComm>> comms;
  // [rank]: the receiving rank's copier; null: memcpy. Used only by that
  // rank's copy thread.
  std::vector<std::unique_ptr<LocalCopier>> copiers;
  std::vector<std::thread> copy_threads;

  std::mutex mu;
  std::vector<std::condition_variable> rank_cv;  // [rank]: its requests and barrier
  std::vector<std::condition_variable> copy_cv;  // [rank]: its copy thread
  // [src * size + dst]: posted sends / receives not matched yet, in posting
  // order. At most one of the two queues of a channel is non-empty. Only
  // the channels in use exist (a ring uses 2 W of the W x W; a dense table
  // took gigabytes at thousands of ranks).
  std::unordered_map<uint64_t, std::deque<Op*>> sends;
  std::unordered_map<uint64_t, std::deque<Op*>> recvs;
  std::vector<std::deque<Job>> jobs;  // [receiving rank]
  bool shutdown = false;
  absl::Status abort_status;         // OK until some rank aborts
  std::atomic<bool> aborted{false};  // mirrors !abort_status.ok() for the copy loop
  int64_t barrier_generation = 0;
  int barrier_count = 0;
  std::vector<bool> barrier_arrived;  // came to the current barrier (may have left)
};

namespace {

class LocalRequest final : public Request {
 public:
  LocalRequest(LocalWorld::Impl* world, int rank) : world_(world), rank_(rank) {
    send_.request = this;
    recv_.request = this;
    send_.is_send = true;
  }

  ~LocalRequest() override {
    std::unique_lock<std::mutex> lock(world_->mu);
    if (pending_ == 0) return;
    std::condition_variable& cv = world_->rank_cv[rank_];
    auto settled = [this] { return pending_ == 0; };
    if (!timed_out_ && world_->abort_status.ok()) WaitFor(cv, lock, world_->timeout, settled);
    for (Op* op : {&send_, &recv_}) {
      if (op->used && op->state == OpState::kPosted) world_->Cancel(op);
    }
    // A copy that already started finishes (or stops at an abort) soon.
    cv.wait(lock, settled);
  }

  absl::StatusOr<bool> Test() override {
    std::lock_guard<std::mutex> lock(world_->mu);
    if (!status_.ok()) return status_;
    return pending_ == 0;
  }

  absl::Status Wait(absl::Duration timeout) override {
    std::unique_lock<std::mutex> lock(world_->mu);
    auto done = [this] { return pending_ == 0 || !status_.ok(); };
    if (!WaitFor(world_->rank_cv[rank_], lock, timeout, done)) {
      timed_out_ = true;
      return absl::DeadlineExceededError(DescribePending(timeout));
    }
    return status_;
  }

  absl::Status WaitOnStream(void* stream, absl::Duration timeout) override {
    if (!world_->wait_mark) return Wait(timeout);
    std::vector<std::shared_ptr<void>> marks;
    {
      std::unique_lock<std::mutex> lock(world_->mu);
      // Each half: done (landed; the host saw it), or its copy queued.
      auto queued = [](const Op& op) {
        return !op.used || op.state == OpState::kDone || op.landed != nullptr;
      };
      auto ready = [&] { return !status_.ok() || (queued(send_) && queued(recv_)); };
      if (!WaitFor(world_->rank_cv[rank_], lock, timeout, ready)) {
        timed_out_ = true;
        return absl::DeadlineExceededError(DescribePending(timeout));
      }
      if (!status_.ok()) return status_;
      for (const Op* op : {&send_, &recv_}) {
        if (op->used && op->state != OpState::kDone) marks.push_back(op->landed);
      }
    }
    for (const std::shared_ptr<void>& mark : marks) {
      RETURN_IF_ERROR(world_->wait_mark(stream, mark.get()));
    }
    return absl::OkStatus();
  }

  // Guarded by world_->mu once posted.
  LocalWorld::Impl* const world_;
  const int rank_;
  Op send_;
  Op recv_;
  std::shared_ptr<void> mark_;  // stream order: what both halves wait for
  int pending_ = 0;      // halves not done
  absl::Status status_;  // the first error of either half
  bool timed_out_ = false;

 private:
  std::string DescribePending(absl::Duration timeout) const {
    std::vector<std::string> parts;
    if (recv_.used && recv_.state != OpState::kDone) {
      const MessageHeader& h = recv_.header;
      parts.push_back(recv_.state == OpState::kPosted
                          ? absl::StrCat("no message from rank ", h.src_rank, " for ", Describe(h))
                          : absl::StrCat("the message from rank ", h.src_rank, " for ", Describe(h),
                                         " is still being copied"));
    }
    if (send_.used && send_.state != OpState::kDone) {
      const MessageHeader& h = send_.header;
      parts.push_back(
          send_.state == OpState::kPosted
              ? absl::StrCat("rank ", h.dst_rank, " did not receive the message for ", Describe(h))
              : absl::StrCat("the message to rank ", h.dst_rank, " for ", Describe(h),
                             " is still being copied"));
    }
    return absl::StrCat("rank ", rank_, ": ", absl::StrJoin(parts, "; "), " within ",
                        absl::FormatDuration(timeout));
  }
};


class LocalComm final : public Communicator {
 public:
  LocalComm(LocalWorld::Impl* world, int rank) : world_(world), rank_(rank) {}

  int Rank() const override { return rank_; }
  int Size() const override { return world_->size; }
  std::string Name() const override { return world_->name; }

  absl::StatusOr<std::unique_ptr<Request>> SendRecv(const void* send, int64_t send_bytes, int to,
                                                    const MessageMeta& send_meta, void* recv,
                                                    int64_t recv_bytes, int from,
                                                    const MessageMeta& recv_meta) override {
    return Post(nullptr, send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
  }

  bool StreamOrdered() const override { return static_cast<bool>(world_->mark_stream); }
  absl::StatusOr<std::unique_ptr<Request>> SendRecvOnStream(
      void* stream, const void* send, int64_t send_bytes, int to, const MessageMeta& send_meta,
      void* recv, int64_t recv_bytes, int from, const MessageMeta& recv_meta) override {
    if (!StreamOrdered()) {
      return Communicator::SendRecvOnStream(stream, send, send_bytes, to, send_meta, recv,
                                            recv_bytes, from, recv_meta);
    }
    ASSIGN_OR_RETURN(std::shared_ptr<void> mark, world_->mark_stream(stream));
    return Post(std::move(mark), send, send_bytes, to, send_meta, recv, recv_bytes, from,
                recv_meta);
  }

  absl::Status Barrier(absl::Duration timeout) override { return world_->Barrier(rank_, timeout); }
  void Abort(const absl::Status& reason) override { world_->Abort(rank_, reason); }
  int64_t BytesSent() const override { return bytes_sent_.load(std::memory_order_relaxed); }

  std::atomic<int64_t> bytes_sent_{0};

 private:
  absl::StatusOr<std::unique_ptr<Request>> Post(std::shared_ptr<void> mark, const void* send,
                                                int64_t send_bytes, int to,
                                                const MessageMeta& send_meta, void* recv,
                                                int64_t recv_bytes, int from,
                                                const MessageMeta& recv_meta) {
    ASSIGN_OR_RETURN(const SendRecvHalves halves,
                     ValidateSendRecv(rank_, world_->size, send, send_bytes, to, send_meta, recv,
                                      recv_bytes, from, recv_meta));
    const bool want_send = halves.send, want_recv = halves.recv;
    auto request = std::make_unique<LocalRequest>(world_, rank_);
    request->mark_ = std::move(mark);
    if (want_send) {
      Op& op = request->send_;
      op.used = true;
      op.send_buf = send;
      op.mark = request->mark_.get();
      op.header.src_rank = rank_;
      op.header.dst_rank = to;
      op.header.bytes = send_bytes;
      op.header.meta = send_meta;
    }
    if (want_recv) {
      Op& op = request->recv_;
      op.used = true;
      op.recv_buf = recv;
      op.mark = request->mark_.get();
      op.header.src_rank = from;
      op.header.dst_rank = rank_;
      op.header.bytes = recv_bytes;
      op.header.meta = recv_meta;
    }
    absl::Status aborted;
    {
      std::lock_guard<std::mutex> lock(world_->mu);
      if (!world_->abort_status.ok()) {
        aborted = world_->abort_status;
      } else {
        // Counted first: Post may complete an op at once (header mismatch).
        request->pending_ = int{want_send} + int{want_recv};
        if (want_send) world_->Post(&request->send_);
        if (want_recv) world_->Post(&request->recv_);
      }
    }
    if (!aborted.ok()) return aborted;
    return std::unique_ptr<Request>(std::move(request));
  }

  LocalWorld::Impl* const world_;
  const int rank_;
};

}  // namespace

LocalWorld::Impl::Impl(int world_size, absl::Duration wait_timeout,
                       const LocalWorldOptions& options)
    : size(world_size),
      timeout(wait_timeout),
      name(options.name),
      mark_stream(options.mark_stream),
      wait_mark(options.mark_stream ? options.wait_mark : nullptr),
      copiers(world_size),
      rank_cv(world_size),
      copy_cv(world_size),
      jobs(world_size),
      barrier_arrived(world_size, false) {
  for (int r = 0; r < size; ++r) comms.push_back(std::make_unique<LocalComm>(this, r));
}

void LocalWorld::Impl::Post(Op* op) {
  const uint64_t channel = static_cast<uint64_t>(op->header.src_rank) * size + op->header.dst_rank;
  std::deque<Op*>& peers = op->is_send ? recvs[channel] : sends[channel];
  if (!peers.empty()) {
    Op* peer = peers.front();
    peers.pop_front();
    if (op->is_send) {
      Match(op, peer);
    } else {
      Match(peer, op);
    }
    return;
  }
  (op->is_send ? sends[channel] : recvs[channel]).push_back(op);
}

void LocalWorld::Impl::Match(Op* send, Op* recv) {
  const absl::Status check = CheckHeader(send->header, recv->header);
  if (!check.ok()) {
    // Nothing is copied; both sides learn what the other one had.
    Complete(recv, absl::InvalidArgumentError(
                       absl::StrCat("rank ", recv->header.dst_rank, ": ", check.message())));
    Complete(send, absl::InvalidArgumentError(
                       absl::StrCat("rank ", send->header.src_rank, ": ", check.message())));
    return;
  }
  send->state = OpState::kMatched;
  recv->state = OpState::kMatched;
  jobs[recv->header.dst_rank].push_back(Job{send, recv});
  copy_cv[recv->header.dst_rank].notify_one();
}

void LocalWorld::Impl::Complete(Op* op, const absl::Status& status) {
  op->state = OpState::kDone;
  LocalRequest* request = op->request;
  --request->pending_;
  if (!status.ok() && request->status_.ok()) request->status_ = status;
  rank_cv[request->rank_].notify_all();
}

void LocalWorld::Impl::Cancel(Op* op) {
  const uint64_t channel = static_cast<uint64_t>(op->header.src_rank) * size + op->header.dst_rank;
  std::deque<Op*>& queue = op->is_send ? sends[channel] : recvs[channel];
  queue.erase(std::remove(queue.begin(), queue.end(), op), queue.end());
  Complete(op, absl::CancelledError(absl::StrCat("rank ", op->request->rank_,
                                                 ": request destroyed before ",
                                                 Describe(op->header), " completed")));
}

void LocalWorld::Impl::CopyLoop(int rank) {
  std::deque<Job>& queue = jobs[rank];
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    copy_cv[rank].wait(lock, [&] { return shutdown || !queue.empty(); });
    if (queue.empty()) return;  // shutdown
    const Job job = queue.front();
    queue.pop_front();
    job.send->state = OpState::kCopying;
    job.recv->state = OpState::kCopying;
    lock.unlock();

    // The lock is not held here: both requests wait for kDone, and nobody
    // else touches their buffers.
    const auto* src = static_cast<const char*>(job.send->send_buf);
    auto* dst = static_cast<char*>(job.recv->recv_buf);
    const int64_t bytes = job.recv->header.bytes;
    LocalCopier* copier = copiers[rank].get();
    int64_t copied = 0;
    absl::Status copy_status;
    if (copier != nullptr && (job.send->mark != nullptr || job.recv->mark != nullptr)) {
      copy_status = copier->After(job.send->mark, job.recv->mark, aborted, timeout);
    }
    while (copy_status.ok() && copied < bytes && !aborted.load(std::memory_order_relaxed)) {
      const int64_t chunk =
          std::min(copier == nullptr ? kCopyChunkBytes : copier->MaxChunkBytes(), bytes - copied);
      if (copier == nullptr) {
        std::memcpy(dst + copied, src + copied, static_cast<size_t>(chunk));
      } else {
        copy_status = copier->Copy(dst + copied, src + copied, chunk);
        if (!copy_status.ok()) break;
      }
      copied += chunk;
    }
    if (copier != nullptr && copied > 0) {
      // Stream order: once the whole message is queued, the ranks' streams
      // may wait for it on the device (Request::WaitOnStream); the host
      // still learns of completion below.
      const bool ordered = job.send->mark != nullptr || job.recv->mark != nullptr;
      if (wait_mark && ordered && copy_status.ok() && copied == bytes) {
        absl::StatusOr<std::shared_ptr<void>> landed = copier->Mark();
        if (!landed.ok()) {
          copy_status = landed.status();
        } else if (*landed != nullptr) {
          std::lock_guard<std::mutex> published(mu);
          job.send->landed = *landed;
          job.recv->landed = std::move(landed).value();
          rank_cv[job.send->request->rank_].notify_all();
          rank_cv[job.recv->request->rank_].notify_all();
        }
      }
      // Whatever was queued lands before the requests complete.
      const absl::Status flushed = copier->Flush();
      if (copy_status.ok()) copy_status = flushed;
    }

    lock.lock();
    if (copy_status.ok() && copied == bytes) {
      comms[job.send->header.src_rank]->bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
      Complete(job.send, absl::OkStatus());
      Complete(job.recv, absl::OkStatus());
    } else if (!copy_status.ok() && !aborted.load(std::memory_order_relaxed)) {
      const absl::Status failed(
          copy_status.code(),
          absl::StrCat(name, ": copying the message from rank ", job.send->header.src_rank,
                       " to rank ", rank, " for ", Describe(job.recv->header), " (", bytes,
                       " bytes): ", copy_status.message()));
      Complete(job.send, failed);
      Complete(job.recv, failed);
    } else {
      Complete(job.send, abort_status);
      Complete(job.recv, abort_status);
    }
  }
}

void LocalWorld::Impl::Abort(int rank, const absl::Status& reason) {
  std::lock_guard<std::mutex> lock(mu);
  if (!abort_status.ok()) return;
  const std::string why =
      reason.ok() ? std::string("no reason given")
                  : absl::StrCat(absl::StatusCodeToString(reason.code()), ": ", reason.message());
  abort_status = absl::AbortedError(absl::StrCat("rank ", rank, " aborted: ", why));
  aborted.store(true, std::memory_order_relaxed);
  // Everything not yet copying fails now; running copies stop at the next
  // chunk. Complete() wakes the requests' ranks; barriers wake here.
  for (auto* queues : {&sends, &recvs}) {
    for (auto& [channel, queue] : *queues) {
      for (Op* op : queue) Complete(op, abort_status);
      queue.clear();
    }
  }
  for (std::deque<Job>& queue : jobs) {
    for (const Job& job : queue) {
      Complete(job.send, abort_status);
      Complete(job.recv, abort_status);
    }
    queue.clear();
  }
  for (std::condition_variable& cv : rank_cv) cv.notify_all();
}

absl::Status LocalWorld::Impl::Barrier(int rank, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu);
  if (!abort_status.ok()) return abort_status;
  const int64_t generation = barrier_generation;
  barrier_arrived[rank] = true;
  if (++barrier_count == size) {
    barrier_count = 0;
    std::fill(barrier_arrived.begin(), barrier_arrived.end(), false);
    ++barrier_generation;
    for (std::condition_variable& cv : rank_cv) cv.notify_all();
    return absl::OkStatus();
  }
  auto released = [&] { return barrier_generation != generation || !abort_status.ok(); };
  WaitFor(rank_cv[rank], lock, timeout, released);
  if (barrier_generation != generation) return absl::OkStatus();
  // Leave, so that a later barrier works; barrier_arrived keeps saying that
  // this rank came, for the other ranks' messages.
  --barrier_count;
  if (!abort_status.ok()) return abort_status;
  std::vector<int> missing;
  for (int r = 0; r < size; ++r) {
    if (!barrier_arrived[r]) missing.push_back(r);
  }
  const std::string who =
      missing.empty() ? std::string("not all ranks were there at once (some left after a timeout)")
                      : absl::StrCat("no arrival from rank", missing.size() == 1 ? " " : "s ",
                                     absl::StrJoin(missing, ", "));
  return absl::DeadlineExceededError(
      absl::StrCat("rank ", rank, ": barrier: ", who, " within ", absl::FormatDuration(timeout)));
}

LocalWorld::LocalWorld(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<LocalWorld>> LocalWorld::Create(int size,
                                                               const LocalWorldOptions& options) {
  if (size < 1) return ArgError("LocalWorld size", "at least 1 rank", size);
  ASSIGN_OR_RETURN(const absl::Duration timeout,
                   ResolveTimeout(options.timeout, "LocalWorld timeout"));
  auto impl = std::make_unique<Impl>(size, timeout, options);
  if (options.make_copier) {
    for (int r = 0; r < size; ++r) {
      ASSIGN_OR_RETURN(impl->copiers[r], options.make_copier(r));
    }
  }
  Impl* state = impl.get();
  for (int r = 0; r < size; ++r) {
    state->copy_threads.emplace_back([state, r] { state->CopyLoop(r); });
  }
  return std::unique_ptr<LocalWorld>(new LocalWorld(std::move(impl)));
}

LocalWorld::~LocalWorld() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->shutdown = true;
    for (std::condition_variable& cv : impl_->copy_cv) cv.notify_all();
  }
  for (std::thread& t : impl_->copy_threads) t.join();
}

int LocalWorld::Size() const { return impl_->size; }

absl::Duration LocalWorld::timeout() const { return impl_->timeout; }

Communicator& LocalWorld::Comm(int rank) { return *impl_->comms[rank]; }

}  // namespace ringattn::comm
