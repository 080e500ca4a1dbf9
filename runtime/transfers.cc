// Transfers and Buffer: see transfers.h.
#include "runtime/transfers.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace ringattn {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

absl::Status Buffer::Reserve(KernelBackend* backend, int64_t bytes) {
  if (bytes <= bytes_ && ptr_ != nullptr) return absl::OkStatus();
  Reset();
  ASSIGN_OR_RETURN(ptr_, backend->Allocate(std::max<int64_t>(bytes, 64)));
  backend_ = backend;
  bytes_ = bytes;
  return absl::OkStatus();
}

void Buffer::Reset() {
  if (ptr_ != nullptr) backend_->Free(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::Status Transfers::Fail(const absl::Status& s, int step, const char* what) {
  absl::Status wrapped(s.code(), absl::StrCat("rank ", comm_->Rank(), ", ring step ", step, " (",
                                              what, "): ", s.message()));
  comm_->Abort(wrapped);
  aborted_ = true;
  return wrapped;
}

absl::Status Transfers::WaitFor(comm::Request* req, int step, const char* what) {
  const double t0 = Now();
  absl::Status s = req->Wait(timeout_);
  stats_->wait_seconds += Now() - t0;
  if (!s.ok()) return Fail(s, step, what);
  return absl::OkStatus();
}

absl::Status Transfers::Arrive(std::unique_ptr<comm::Request> req, int step, const char* what) {
  void* stream = backend_->Stream();
  if (stream == nullptr || !comm_->StreamOrdered()) return WaitFor(req.get(), step, what);
  const double t0 = Now();
  absl::Status s = req->WaitOnStream(stream, timeout_);
  stats_->wait_seconds += Now() - t0;
  if (!s.ok()) return Fail(s, step, what);
  inflight_.push_back(Inflight{std::move(req), step, what});
  // Forget those that completed (in order), and fail early on a failed one.
  size_t done = 0;
  for (; done < inflight_.size(); ++done) {
    absl::StatusOr<bool> test = inflight_[done].req->Test();
    if (!test.ok()) return Fail(test.status(), inflight_[done].step, inflight_[done].what);
    if (!*test) break;
  }
  inflight_.erase(inflight_.begin(), inflight_.begin() + static_cast<std::ptrdiff_t>(done));
  return absl::OkStatus();
}

absl::Status Transfers::Drain() {
  absl::Status first;
  for (Inflight& f : inflight_) {
    if (first.ok()) first = WaitFor(f.req.get(), f.step, f.what);
  }
  inflight_.clear();
  return first;
}

absl::StatusOr<std::unique_ptr<comm::Request>> Transfers::Post(
    int step, const char* what, const void* send, int64_t send_bytes, int to,
    const comm::MessageMeta& send_meta, void* recv, int64_t recv_bytes, int from,
    const comm::MessageMeta& recv_meta) {
  void* stream = backend_->Stream();
  absl::StatusOr<std::unique_ptr<comm::Request>> r;
  if (stream != nullptr && comm_->StreamOrdered()) {
    r = comm_->SendRecvOnStream(stream, send, send_bytes, to, send_meta, recv, recv_bytes, from,
                                recv_meta);
  } else {
    if (stream != nullptr) {
      absl::Status s = backend_->Synchronize(timeout_);
      if (!s.ok()) return Fail(s, step, what);
    }
    r = comm_->SendRecv(send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
  }
  if (!r.ok()) return Fail(r.status(), step, what);
  stats_->bytes_sent += send_bytes;
  return r;
}

absl::Status Transfers::AllToAll(int step, const char* what, int kind, int32_t dtype,
                                 const std::vector<const void*>& send,
                                 const std::vector<int64_t>& send_bytes,
                                 const std::vector<void*>& recv,
                                 const std::vector<int64_t>& recv_bytes) {
  static char empty[1];  // a zero-byte message's buffer
  const int w = comm_->Size(), r = comm_->Rank();
  auto meta = [&](int64_t bytes) {
    comm::MessageMeta m;
    m.step = step;
    m.kind = kind;
    m.dtype = dtype;
    m.ndim = 1;
    m.shape[0] = bytes;
    return m;
  };
  std::vector<std::unique_ptr<comm::Request>> reqs;
  for (int i = 0; i < w; ++i) {
    const int to = (r + i) % w, from = (r - i + w) % w;
    ASSIGN_OR_RETURN(auto req,
                     Post(step, what, send_bytes[to] > 0 ? send[to] : empty, send_bytes[to], to,
                          meta(send_bytes[to]), recv_bytes[from] > 0 ? recv[from] : empty,
                          recv_bytes[from], from, meta(recv_bytes[from])));
    reqs.push_back(std::move(req));
  }
  for (auto& req : reqs) RETURN_IF_ERROR(Arrive(std::move(req), step, what));
  return absl::OkStatus();
}

}  // namespace ringattn
