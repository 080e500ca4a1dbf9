// The public API's implementation (ringattn.h): one object per rank that
// validates every call, orders it after the caller's stream, runs it
// through the chosen strategy (strategy.h) and keeps the stats.
//
// A call: validate the tensors (nothing allocated or sent yet); at the
// first call, compare the options with the neighbouring ranks (a
// difference fails every rank, naming the option and both values); settle the
// transfers a previous call on a caller's stream left in flight; let the
// strategy grow its workspace; make the rank's stream wait for the caller's
// (Begin); run the strategy; then either make the caller's stream wait for
// the rank's (a call on a caller's stream: no host wait) or wait for the
// rank's stream on the host within the timeout (Finish). A call that fails
// after enqueueing work leaves the caller's stream (or the host) waiting
// for that work, which still reads the caller's tensors (Settled).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "runtime/backend.h"
#include "runtime/planner.h"
#include "runtime/ringattn.h"
#include "runtime/strategy.h"
#include "runtime/transfers.h"
#include "runtime/validate.h"

namespace ringattn {
namespace {

// MessageMeta::kind of the options message (the ring's own are 0..2).
constexpr int kKindOptions = 7;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

class Engine final : public RingAttention {
 public:
  Engine(comm::Communicator* comm, const RingOptions& opt, Layout layout,
         std::unique_ptr<KernelBackend> backend, absl::Duration timeout)
      : comm_(comm),
        opt_(opt),
        layout_(std::move(layout)),
        backend_(std::move(backend)),
        timeout_(timeout),
        rank_(comm->Rank()),
        transfers_(comm, backend_.get(), timeout, &stats_) {
    // The mask views the caller's cu_seqlens; the engine keeps its own copy.
    if (opt_.mask.HasDocuments()) {
      cu_seqlens_.assign(opt_.mask.cu_seqlens, opt_.mask.cu_seqlens + opt_.mask.num_docs + 1);
      opt_.mask.cu_seqlens = cu_seqlens_.data();
    }
    if (opt_.mask.HasBlocks()) {  // and its block mask, as 0/1
      const Mask& m = opt_.mask;
      blocks_.resize(m.block_heads * m.block_rows * m.block_cols);
      for (size_t x = 0; x < blocks_.size(); ++x) blocks_[x] = m.blocks[x] != 0;
      opt_.mask.blocks = blocks_.data();
    }
    StrategyContext ctx;
    ctx.options = &opt_;
    ctx.layout = &layout_;
    ctx.rank = rank_;
    ctx.world = comm->Size();
    ctx.backend = backend_.get();
    ctx.transfers = &transfers_;
    ctx.stats = &stats_;
    ctx.comm = comm;
    ctx.timeout = timeout;
    ctx_ = ctx;
    if (opt_.strategy != Strategy::kAuto) strategy_ = MakeStrategy(ctx);
  }

  absl::Status Forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse) override {
    return ForwardOnStream(nullptr, q, k, v, out, lse);
  }
  absl::Status Backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk,
                        const TensorView& dv) override {
    return BackwardOnStream(nullptr, q, k, v, out, lse, dout, dq, dk, dv);
  }
  absl::Status ForwardOnStream(void* stream, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out,
                               const TensorView& lse) override {
    return Settled(stream, RunForward(stream, q, k, v, out, lse));
  }
  absl::Status BackwardOnStream(void* stream, const TensorView& q, const TensorView& k,
                                const TensorView& v, const TensorView& out,
                                const TensorView& lse, const TensorView& dout,
                                const TensorView& dq, const TensorView& dk,
                                const TensorView& dv) override {
    return Settled(stream, RunBackward(stream, q, k, v, out, lse, dout, dq, dk, dv));
  }
  const RingStats& LastStats() const override {
    if (timing_pending_) {  // a call on a caller's stream: its kernels' time is known now
      timing_pending_ = false;
      auto seconds = backend_->TimedSeconds(timeout_);
      stats_.compute_seconds = seconds.ok() ? *seconds : NAN;  // NaN: not known in time
    }
    return stats_;
  }
  const Layout& layout() const override { return layout_; }
  int64_t ShardLength() const override { return layout_.ShardLength(rank_); }
  std::string StrategyInUse() const override {
    return StrategySpecName(opt_.strategy, opt_.ulysses, comm_->Size());
  }
  std::string BackendDescription() const override {
    if (backend_->Stream() == nullptr) return backend_->Describe();
    return absl::StrCat(backend_->Describe(), "; ", comm_->Name(),
                        comm_->StreamOrdered()
                            ? " transfers ordered on the stream both ways (events, no host "
                              "wait per step for the step's own bytes)"
                            : " transfers after a stream synchronize (not stream ordered)");
  }

 private:
  absl::Status RunForward(void* stream, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& out, const TensorView& lse) {
    ASSIGN_OR_RETURN(const ShardDims d,
                     ValidateForwardArgs(layout_, rank_, opt_.dtype, *backend_, q, k, v, out, lse));
    RETURN_IF_ERROR(ValidateMaskHeads(opt_.mask, d.H));
    RETURN_IF_ERROR(Start(stream, d));
    const double t_start = Now();
    RETURN_IF_ERROR(strategy_->ReserveForward(d));
    RETURN_IF_ERROR(Begin(stream));
    RETURN_IF_ERROR(strategy_->Forward(d, q, k, v, out, lse));
    return Finish(stream, t_start);
  }
  absl::Status RunBackward(void* stream, const TensorView& q, const TensorView& k,
                           const TensorView& v, const TensorView& out, const TensorView& lse,
                           const TensorView& dout, const TensorView& dq, const TensorView& dk,
                           const TensorView& dv) {
    ASSIGN_OR_RETURN(const ShardDims d,
                     ValidateForwardArgs(layout_, rank_, opt_.dtype, *backend_, q, k, v, out, lse));
    RETURN_IF_ERROR(ValidateMaskHeads(opt_.mask, d.H));
    RETURN_IF_ERROR(ValidateBackwardArgs(d, opt_.dtype, *backend_, dout, dq, dk, dv));
    RETURN_IF_ERROR(Start(stream, d));
    const double t_start = Now();
    RETURN_IF_ERROR(strategy_->ReserveBackward(d));
    RETURN_IF_ERROR(Begin(stream));
    RETURN_IF_ERROR(strategy_->Backward(d, q, k, v, out, lse, dout, dq, dk, dv));
    return Finish(stream, t_start);
  }

  // After validation: a caller's stream is only for a backend with
  // streams; a previous call on a caller's stream may have left transfers
  // in flight, whose workspace is about to be reused or grown.
  absl::Status Start(void* stream, const ShardDims& d) {
    if (stream != nullptr && backend_->Stream() == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stream: the ", backend_->Name(),
          " backend has no streams (pass null, or use the cuda backend)"));
    }
    RETURN_IF_ERROR(CheckOptionsOnce());
    if (strategy_ == nullptr) RETURN_IF_ERROR(Plan(d));
    RETURN_IF_ERROR(transfers_.Drain());
    if (strategy_ != nullptr) RETURN_IF_ERROR(strategy_->Drain());
    timing_pending_ = false;
    stats_ = RingStats{};
    return absl::OkStatus();
  }
  // strategy = auto, at the first call: the planner's choice for the
  // call's shapes, from costs every rank agrees on (calibrated once per
  // process, or the options'), so every rank makes the same one.
  absl::Status Plan(const ShardDims& d) {
    PlanCosts costs;
    if (opt_.plan_tflops > 0 && opt_.plan_link_gbps > 0 && opt_.plan_latency_us > 0) {
      costs = PlanCosts::Given(opt_.plan_tflops, 0, opt_.plan_link_gbps, opt_.plan_latency_us);
    } else {
      const int64_t block = 2 * d.B * layout_.MaxShardLength() * d.Hk * d.D * DTypeSize(opt_.dtype);
      absl::StatusOr<PlanCosts> c =
          Calibrate(comm_, backend_.get(), opt_.dtype, d.D, block, timeout_);
      if (!c.ok()) return transfers_.Fail(c.status(), 0, "strategy auto");
      costs = *c;
    }
    PlanShape shape;
    shape.batch = d.B;
    shape.heads = d.H;
    shape.kv_heads = d.Hk;
    shape.head_dim = d.D;
    shape.dtype = opt_.dtype;
    const std::vector<PlanEntry> plan = PredictAll(opt_.sharding, opt_.seqlen, opt_.stripe,
                                                   opt_.mask, comm_->Size(), shape, costs);
    if (plan.empty()) return absl::InternalError("strategy auto: the planner has no entry");
    const PlanEntry& choice = Choose(plan, /*backward=*/true);
    opt_.strategy = choice.strategy;
    opt_.ulysses = choice.ulysses;
    strategy_ = MakeStrategy(ctx_);
    return absl::OkStatus();
  }
  // Every rank sends its OptionsDigest to the next and compares the one of
  // the previous: if any two ranks disagree, some two neighbours do, and
  // the rank that sees it fails and aborts the world, so every rank fails
  // (over nccl, whose abort is local, the others within their timeout).
  absl::Status CheckOptionsOnce() {
    if (options_checked_ || comm_->Size() == 1) return absl::OkStatus();
    const int world = comm_->Size();
    const int next = (rank_ + 1) % world, prev = (rank_ - 1 + world) % world;
    const OptionsDigest mine = DigestOf(opt_);
    OptionsDigest theirs;
    theirs.magic = 0;
    constexpr int64_t kBytes = sizeof(OptionsDigest);
    Buffer send, recv;  // the backend's memory: device memory for nccl
    absl::Status s = send.Reserve(backend_.get(), kBytes);
    if (s.ok()) s = recv.Reserve(backend_.get(), kBytes);
    if (s.ok()) s = backend_->CopyFromHost(send.c(), &mine, kBytes);
    if (!s.ok()) return transfers_.Fail(s, 0, "sending the options");
    comm::MessageMeta meta;
    meta.kind = kKindOptions;
    meta.ndim = 1;
    meta.shape[0] = kBytes;
    absl::StatusOr<std::unique_ptr<comm::Request>> req =
        comm_->SendRecv(send.c(), kBytes, next, meta, recv.c(), kBytes, prev, meta);
    s = req.ok() ? (*req)->Wait(timeout_) : req.status();
    if (s.ok()) s = backend_->CopyToHost(&theirs, recv.c(), kBytes);
    if (s.ok()) s = CompareDigests(mine, rank_, theirs, prev);
    if (!s.ok()) {
      return transfers_.Fail(s, 0, absl::StrCat("comparing the options with rank ", prev).c_str());
    }
    options_checked_ = true;
    return absl::OkStatus();
  }
  // After the workspace is reserved (growing it waits for the rank's
  // stream, which must not yet wait for the caller's): the ring's kernels
  // go after the work on the caller's stream, null meaning the legacy
  // default stream (what PyTorch's default stream is).
  absl::Status Begin(void* stream) {
    RETURN_IF_ERROR(backend_->StartTiming());
    if (backend_->Stream() != nullptr) RETURN_IF_ERROR(backend_->WaitForStream(stream));
    return absl::OkStatus();
  }
  // End of a call: the caller's stream waits for the ring, or the host
  // waits for the GPU; then the stats.
  absl::Status Finish(void* stream, double t_start) {
    if (stream != nullptr) {
      RETURN_IF_ERROR(backend_->MakeStreamWait(stream));
      timing_pending_ = true;
    } else {
      absl::Status s = backend_->Synchronize(timeout_);
      if (!s.ok()) return transfers_.Fail(s, stats_.steps - 1, "completing the rank's kernels");
      RETURN_IF_ERROR(transfers_.Drain());
      RETURN_IF_ERROR(strategy_->Drain());
      ASSIGN_OR_RETURN(stats_.compute_seconds, backend_->TimedSeconds(timeout_));
    }
    stats_.workspace_bytes = strategy_->WorkspaceBytes();
    stats_.wall_seconds = Now() - t_start;
    return absl::OkStatus();
  }
  // A call that failed after enqueueing work: that work still reads the
  // caller's tensors, so the caller's stream waits for it (or, on the
  // synchronous API, the host does, within the timeout).
  absl::Status Settled(void* stream, absl::Status s) {
    if (s.ok() || backend_->Stream() == nullptr) return s;
    if (stream != nullptr) {
      (void)backend_->MakeStreamWait(stream);
    } else {
      (void)backend_->Synchronize(timeout_);
    }
    // After an abort they settle promptly; otherwise (a bad argument, a
    // failed enqueue) the next call's Drain waits for them and reports.
    transfers_.ForgetIfAborted();
    if (strategy_ != nullptr) strategy_->ForgetIfAborted();
    return s;
  }

  comm::Communicator* comm_;
  RingOptions opt_;
  std::vector<int64_t> cu_seqlens_;  // opt_.mask's documents
  std::vector<uint8_t> blocks_;      // opt_.mask's block mask
  Layout layout_;
  std::unique_ptr<KernelBackend> backend_;
  absl::Duration timeout_;
  int rank_;
  mutable RingStats stats_;
  mutable bool timing_pending_ = false;
  bool options_checked_ = false;  // CheckOptionsOnce passed
  // Declared in this order so that the transfers in flight (a request
  // waits for its bytes when destroyed) go before the strategy's workspace.
  StrategyContext ctx_;  // what MakeStrategy gets (auto: at the first call)
  std::unique_ptr<AttentionStrategy> strategy_;
  Transfers transfers_;
};

}  // namespace

const char* BackendName(Backend b) {
  switch (b) {
    case Backend::kCpu: return "cpu";
    case Backend::kCuda: return "cuda";
  }
  return "?";
}

absl::StatusOr<Backend> ParseBackend(const std::string& name) {
  for (Backend b : {Backend::kCpu, Backend::kCuda}) {
    if (name == BackendName(b)) return b;
  }
  return ArgError("backend", "cpu or cuda", absl::StrCat("'", name, "'"));
}

bool BackendBuilt(Backend b) { return b == Backend::kCpu || CudaBackendBuilt(); }

const char* StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kRing: return "ring";
    case Strategy::kLocal: return "local";
    case Strategy::kAllGather: return "allgather";
    case Strategy::kUlysses: return "ulysses";
    case Strategy::kHybrid: return "hybrid";
    case Strategy::kAuto: return "auto";
  }
  return "?";
}

absl::StatusOr<Strategy> ParseStrategy(const std::string& name) {
  for (Strategy s : {Strategy::kRing, Strategy::kLocal, Strategy::kAllGather, Strategy::kUlysses,
                     Strategy::kHybrid, Strategy::kAuto}) {
    if (name == StrategyName(s)) return s;
  }
  return ArgError("strategy", "ring, allgather, ulysses, hybrid:UxR, auto or local",
                  absl::StrCat("'", name, "'"));
}

absl::StatusOr<StrategySpec> ParseStrategySpec(const std::string& text) {
  StrategySpec spec;
  const size_t colon = text.find(':');
  if (colon == std::string::npos) {
    ASSIGN_OR_RETURN(spec.strategy, ParseStrategy(text));
    if (spec.strategy == Strategy::kHybrid) {
      return ArgError("strategy", "hybrid:UxR (U ranks per Ulysses group, R groups in the ring)",
                      "'hybrid'");
    }
    return spec;
  }
  const std::string head = text.substr(0, colon), shape = text.substr(colon + 1);
  const size_t x = shape.find('x');
  auto positive = [](const std::string& t, int* out) {
    if (t.empty() || t.size() > 6 || t.find_first_not_of("0123456789") != std::string::npos) return false;
    *out = std::stoi(t);
    return *out >= 1;
  };
  if (head != "hybrid" || x == std::string::npos || !positive(shape.substr(0, x), &spec.ulysses) ||
      !positive(shape.substr(x + 1), &spec.ring)) {
    return ArgError("strategy", "hybrid:UxR with positive integers U and R (e.g. hybrid:2x4)",
                    absl::StrCat("'", text, "'"));
  }
  spec.strategy = Strategy::kHybrid;
  return spec;
}

absl::Status CheckStrategy(const StrategySpec& spec, int world, int64_t heads) {
  if (spec.strategy == Strategy::kHybrid && spec.ulysses * spec.ring != world) {
    return ArgError("strategy", absl::StrCat("hybrid:UxR with U x R = the world size ", world),
                    absl::StrCat("hybrid:", spec.ulysses, "x", spec.ring));
  }
  const int group = spec.strategy == Strategy::kUlysses  ? world
                    : spec.strategy == Strategy::kHybrid ? spec.ulysses
                                                         : 1;
  if (heads > 0 && world > 1 && heads < group) {
    return ArgError(absl::StrCat("q heads (", StrategySpecName(spec.strategy, spec.ulysses, world),
                                 " gives each rank of a Ulysses group one at least)"),
                    absl::StrCat(">= ", group), heads);
  }
  return absl::OkStatus();
}

std::string StrategySpecName(Strategy s, int ulysses, int world) {
  if (s != Strategy::kHybrid) return StrategyName(s);
  const int u = std::max(ulysses, 1);
  return absl::StrCat("hybrid:", u, "x", world / u);
}

absl::StatusOr<std::unique_ptr<RingAttention>> RingAttention::Create(comm::Communicator* comm,
                                                                     const RingOptions& options) {
  if (comm == nullptr) return absl::InvalidArgumentError("comm: null communicator");
  RETURN_IF_ERROR(ValidateOptions(options));
  if (options.strategy == Strategy::kLocal && comm->Size() != 1) {
    return ArgError("strategy local: world size", "1 (one device, no communication)",
                    comm->Size());
  }
  if (options.strategy == Strategy::kHybrid &&
      (options.ulysses < 1 || comm->Size() % options.ulysses != 0)) {
    return ArgError("strategy hybrid:UxR: U x R",
                    absl::StrCat("the world size ", comm->Size(), " (U >= 1 dividing it)"),
                    absl::StrCat("U = ", options.ulysses));
  }
  ASSIGN_OR_RETURN(Layout layout,
                   Layout::Create(options.sharding, options.seqlen, comm->Size(),
                                  options.stripe, options.mask));
  ASSIGN_OR_RETURN(const absl::Duration timeout, comm::ResolveTimeout(options.timeout, "timeout"));
  std::unique_ptr<KernelBackend> backend;
  if (options.backend == Backend::kCuda) {
    ASSIGN_OR_RETURN(backend, MakeCudaBackend(options.device_index, options.deterministic));
  } else {
    int threads = options.num_threads;
    if (threads == 0) {
      threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / comm->Size());
    }
    backend = MakeCpuBackend(threads);
  }
  return std::unique_ptr<RingAttention>(
      new Engine(comm, options, std::move(layout), std::move(backend), timeout));
}

}  // namespace ringattn
