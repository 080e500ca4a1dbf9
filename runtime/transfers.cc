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

}  // namespace ringattn
