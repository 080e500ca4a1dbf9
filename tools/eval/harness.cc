// Runs the ring's ranks (local threads, or this process's one rank)
// through the public API; see harness.h.
#include "tools/eval/harness.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "comm/world.h"
#include "runtime/ringattn.h"
#include "runtime/tensor.h"
#include "tools/gather.h"

namespace ringattn::eval {

const char* FaultName(Fault f) {
  switch (f) {
    case Fault::kNone:
      return "none";
    case Fault::kBrokenMask:
      return "broken-mask";
    case Fault::kDropRingStep:
      return "drop-ring-step";
  }
  return "?";
}

Mask BrokenMask(const Mask& m) {
  if (m.IsNone()) return Mask{true, -1, -1};
  Mask b;
  b.causal = false;
  b.window_left = m.HasLeft() ? m.window_left + 1 : -1;
  b.window_right = m.HasRight() ? m.RightOffset() + 1 : -1;
  return b;
}

int64_t ShardTensorBytes(const RunSpec& spec, int64_t shard_len) {
  const int64_t es = DTypeSize(spec.dtype);
  const int64_t per_q = shard_len * spec.heads * spec.head_dim * es;
  const int64_t per_k = shard_len * spec.kv_heads * spec.head_dim * es;
  const int64_t lse = shard_len * spec.heads * 4;
  // Forward: q, k, v, out, lse; backward adds dout, dq, dk, dv.
  return spec.backward ? 4 * per_q + 4 * per_k + lse : 2 * per_q + 2 * per_k + lse;
}

namespace {

int64_t StatusField(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, n, key) == 0) {
      return std::strtoll(line.c_str() + n, nullptr, 10) * 1024;  // "VmRSS:   1234 kB"
    }
  }
  return -1;
}

}  // namespace

int64_t CurrentRss() { return StatusField("VmRSS:"); }
int64_t PeakRss() { return StatusField("VmHWM:"); }
bool ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

namespace {

// A request whose receive buffer is zeroed once it completed: the block it
// carried is lost, as if a ring step had been dropped.
class ZeroingRequest final : public comm::Request {
 public:
  ZeroingRequest(std::unique_ptr<comm::Request> inner, void* recv, int64_t bytes)
      : inner_(std::move(inner)), recv_(recv), bytes_(bytes) {}
  absl::StatusOr<bool> Test() override {
    auto r = inner_->Test();
    if (r.ok() && *r) Zero();
    return r;
  }
  absl::Status Wait(absl::Duration timeout) override {
    absl::Status s = inner_->Wait(timeout);
    if (s.ok()) Zero();
    return s;
  }

 private:
  void Zero() {
    if (!zeroed_ && recv_ != nullptr) std::memset(recv_, 0, bytes_);
    zeroed_ = true;
  }
  std::unique_ptr<comm::Request> inner_;
  void* recv_;
  int64_t bytes_;
  bool zeroed_ = false;
};

// Zeroes the KV block (message kind 0) received for ring step `drop_step`,
// i.e. the transfer posted at step drop_step - 1.
class DroppingComm final : public comm::Communicator {
 public:
  DroppingComm(comm::Communicator* inner, int drop_step) : inner_(inner), drop_step_(drop_step) {}
  int Rank() const override { return inner_->Rank(); }
  int Size() const override { return inner_->Size(); }
  std::string Name() const override { return absl::StrCat(inner_->Name(), "+drop"); }
  absl::StatusOr<std::unique_ptr<comm::Request>> SendRecv(
      const void* send, int64_t send_bytes, int to, const comm::MessageMeta& send_meta, void* recv,
      int64_t recv_bytes, int from, const comm::MessageMeta& recv_meta) override {
    auto r = inner_->SendRecv(send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
    if (!r.ok() || recv_meta.kind != 0 || recv_meta.step != drop_step_ - 1) return r;
    return std::unique_ptr<comm::Request>(
        new ZeroingRequest(std::move(r).value(), recv, recv_bytes));
  }
  absl::Status Barrier(absl::Duration timeout) override { return inner_->Barrier(timeout); }
  void Abort(const absl::Status& reason) override { inner_->Abort(reason); }
  int64_t BytesSent() const override { return inner_->BytesSent(); }

 private:
  comm::Communicator* inner_;
  int drop_step_;
};

// Storage of `n` floats in `t`, written to `dst`.
void Store(const float* src, int64_t n, DType t, uint8_t* dst) {
  if (t == DType::kFloat32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t w = FloatToBF16(src[i]);
    std::memcpy(dst + 2 * i, &w, 2);
  }
}
void Load(const uint8_t* src, int64_t n, DType t, float* dst) {
  if (t == DType::kFloat32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t w;
    std::memcpy(&w, src + 2 * i, 2);
    dst[i] = BF16ToFloat(w);
  }
}

struct Shard {
  int64_t len = 0;
  std::vector<int64_t> pos;  // global position of each local row
  std::vector<uint8_t> q, k, v, dout, out, dq, dk, dv;
  std::vector<float> lse;  // [H, S_r]
};

using FillFn = std::function<void(int rank, Shard* s)>;
// Null: nothing to collect (and, one rank per process, nothing gathered).
using DrainFn = std::function<void(int rank, const Shard& s)>;

// Kinds of the eval's own messages (GatherToRoot adds 1000; Broadcast
// uses kBroadcastKind), apart from the ring's.
constexpr int kStatsTag = 1, kShardTag = 2, kSizeTag = 3, kTextTag = 4;
constexpr int kBroadcastKind = 1100;

// Rank `r`'s part of one run on `cm`: its ring and shard, filled by `fill`,
// the forward (and backward) and its stats.
StrategySpec EffectiveStrategy(Strategy s, int ulysses, int world, int64_t heads) {
  StrategySpec ring;
  if (world == 1) return ring;
  switch (s) {
    case Strategy::kUlysses:
      return heads >= world ? StrategySpec{s, 0, 0} : ring;
    case Strategy::kHybrid:
      return ulysses >= 1 && world % ulysses == 0 && heads >= ulysses
                 ? StrategySpec{s, ulysses, world / ulysses}
                 : ring;
    case Strategy::kAllGather:
    case Strategy::kAuto:
      return StrategySpec{s, 0, 0};
    default:
      return ring;
  }
}

absl::Status RunRank(const RunSpec& spec, comm::Communicator* cm, int r, const FillFn& fill,
                     Shard* shard, RunStats* stats) {
  std::unique_ptr<DroppingComm> dropping;
  if (spec.fault == Fault::kDropRingStep) {
    dropping = std::make_unique<DroppingComm>(cm, spec.drop_step);
    cm = dropping.get();
  }
  RingOptions opt;
  opt.seqlen = spec.seqlen;
  opt.sharding = spec.sharding;
  opt.stripe = spec.stripe;
  const Mask m = spec.fault == Fault::kBrokenMask ? BrokenMask(spec.mask) : spec.mask;
  opt.mask = m;
  opt.dtype = spec.dtype;
  opt.num_threads = spec.threads;
  const StrategySpec strategy =
      EffectiveStrategy(spec.strategy, spec.ulysses, spec.world, spec.heads);
  opt.strategy = strategy.strategy;
  opt.ulysses = strategy.ulysses;
  auto ring_or = RingAttention::Create(cm, opt);
  if (!ring_or.ok()) {
    cm->Abort(ring_or.status());
    return ring_or.status();
  }
  auto& ring = *ring_or;
  Shard& s = *shard;
  s.len = ring->ShardLength();
  s.pos = ring->layout().Positions(r);
  const int64_t es = DTypeSize(spec.dtype), H = spec.heads, Hk = spec.kv_heads, D = spec.head_dim,
                Sr = s.len;
  s.q.resize(Sr * H * D * es);
  s.k.resize(Sr * Hk * D * es);
  s.v.resize(s.k.size());
  s.out.resize(s.q.size());
  s.lse.resize(H * Sr);
  if (spec.backward) {
    s.dout.resize(s.q.size());
    s.dq.resize(s.q.size());
    s.dk.resize(s.k.size());
    s.dv.resize(s.k.size());
  }
  fill(r, &s);
  auto V = [&](std::vector<uint8_t>& x, int64_t heads) {
    return TensorView::Contiguous(x.data(), spec.dtype, {1, Sr, heads, D});
  };
  const TensorView lv = TensorView::Contiguous(s.lse.data(), DType::kFloat32, {1, H, Sr});
  RunStats& st = *stats;
  RETURN_IF_ERROR(cm->Barrier(spec.arrive_timeout));
  RETURN_IF_ERROR(ring->Forward(V(s.q, H), V(s.k, Hk), V(s.v, Hk), V(s.out, H), lv));
  const RingStats fs = ring->LastStats();
  st.fwd_seconds = fs.wall_seconds;
  st.fwd_compute_seconds = fs.compute_seconds;
  st.steps = fs.steps;
  st.bytes_sent = fs.bytes_sent;
  st.workspace_bytes = fs.workspace_bytes;
  if (spec.backward) {
    // The ranks come straight from the forward: the ring's own timeout.
    ASSIGN_OR_RETURN(const absl::Duration timeout, comm::DefaultTimeout());
    RETURN_IF_ERROR(cm->Barrier(timeout));
    RETURN_IF_ERROR(ring->Backward(V(s.q, H), V(s.k, Hk), V(s.v, Hk), V(s.out, H), lv,
                                   V(s.dout, H), V(s.dq, H), V(s.dk, Hk), V(s.dv, Hk)));
    const RingStats bs = ring->LastStats();
    st.bwd_seconds = bs.wall_seconds;
    st.bwd_compute_seconds = bs.compute_seconds;
    st.workspace_bytes = std::max(st.workspace_bytes, bs.workspace_bytes);
  }
  st.tensor_bytes = ShardTensorBytes(spec, Sr);
  st.rank_bytes = st.tensor_bytes + st.workspace_bytes;
  return absl::OkStatus();
}

// Times and bytes: max over ranks; steps: rank 0's.
RunStats Reduce(const std::vector<RunStats>& per) {
  RunStats res;
  res.steps = per[0].steps;
  for (const RunStats& p : per) {
    res.fwd_seconds = std::max(res.fwd_seconds, p.fwd_seconds);
    res.bwd_seconds = std::max(res.bwd_seconds, p.bwd_seconds);
    res.fwd_compute_seconds = std::max(res.fwd_compute_seconds, p.fwd_compute_seconds);
    res.bwd_compute_seconds = std::max(res.bwd_compute_seconds, p.bwd_compute_seconds);
    res.tensor_bytes = std::max(res.tensor_bytes, p.tensor_bytes);
    res.workspace_bytes = std::max(res.workspace_bytes, p.workspace_bytes);
    res.rank_bytes = std::max(res.rank_bytes, p.rank_bytes);
    res.bytes_sent = std::max(res.bytes_sent, p.bytes_sent);
  }
  return res;
}

// RunStats as doubles for the gather (every field is an integer below
// 2^53 or a time).
constexpr int kStatsFields = 11;
void PackStats(const RunStats& s, double* d) {
  const double v[kStatsFields] = {s.fwd_seconds,
                                  s.bwd_seconds,
                                  s.fwd_compute_seconds,
                                  s.bwd_compute_seconds,
                                  static_cast<double>(s.tensor_bytes),
                                  static_cast<double>(s.workspace_bytes),
                                  static_cast<double>(s.rank_bytes),
                                  static_cast<double>(s.steps),
                                  static_cast<double>(s.bytes_sent),
                                  static_cast<double>(s.rss_before),
                                  static_cast<double>(s.rss_peak_delta)};
  std::copy(v, v + kStatsFields, d);
}
RunStats UnpackStats(const double* d) {
  RunStats s;
  s.fwd_seconds = d[0];
  s.bwd_seconds = d[1];
  s.fwd_compute_seconds = d[2];
  s.bwd_compute_seconds = d[3];
  s.tensor_bytes = static_cast<int64_t>(d[4]);
  s.workspace_bytes = static_cast<int64_t>(d[5]);
  s.rank_bytes = static_cast<int64_t>(d[6]);
  s.steps = static_cast<int>(d[7]);
  s.bytes_sent = static_cast<int64_t>(d[8]);
  s.rss_before = static_cast<int64_t>(d[9]);
  s.rss_peak_delta = static_cast<int64_t>(d[10]);
  return s;
}

// A shard's outputs in one buffer, for the gather: out, lse, then (with a
// backward) dq, dk, dv.
int64_t OutputBytes(const RunSpec& spec, int64_t shard_len) {
  const int64_t es = DTypeSize(spec.dtype);
  const int64_t q = shard_len * spec.heads * spec.head_dim * es;
  const int64_t k = shard_len * spec.kv_heads * spec.head_dim * es;
  return q + shard_len * spec.heads * 4 + (spec.backward ? q + 2 * k : 0);
}
void PackOutputs(const Shard& s, std::vector<uint8_t>* b) {
  b->clear();
  auto add = [b](const void* p, size_t n) {
    b->insert(b->end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  };
  add(s.out.data(), s.out.size());
  add(s.lse.data(), s.lse.size() * 4);
  add(s.dq.data(), s.dq.size());
  add(s.dk.data(), s.dk.size());
  add(s.dv.data(), s.dv.size());
}
void UnpackOutputs(const RunSpec& spec, const std::vector<uint8_t>& b, Shard* s) {
  const int64_t es = DTypeSize(spec.dtype), Sr = s->len;
  const uint8_t* p = b.data();
  auto take = [&p](std::vector<uint8_t>* x, int64_t n) {
    x->assign(p, p + n);
    p += n;
  };
  take(&s->out, Sr * spec.heads * spec.head_dim * es);
  s->lse.resize(Sr * spec.heads);
  std::memcpy(s->lse.data(), p, s->lse.size() * 4);
  p += s->lse.size() * 4;
  if (spec.backward) {
    take(&s->dq, Sr * spec.heads * spec.head_dim * es);
    take(&s->dk, Sr * spec.kv_heads * spec.head_dim * es);
    take(&s->dv, Sr * spec.kv_heads * spec.head_dim * es);
  }
}

// W local ranks as threads, a fresh local world for the run.
absl::StatusOr<RunStats> RunThreads(const RunSpec& spec, const FillFn& fill, const DrainFn& drain) {
  comm::WorldOptions options;
  options.backend = "local";
  options.ranks = spec.world;
  ASSIGN_OR_RETURN(auto world, comm::World::Create(options));
  std::vector<RunStats> per(spec.world);
  const bool rss_ok = ResetPeakRss();
  const int64_t rss_before = CurrentRss();
  RETURN_IF_ERROR(world->Run([&](comm::Communicator& cm) -> absl::Status {
    Shard s;
    RETURN_IF_ERROR(RunRank(spec, &cm, cm.Rank(), fill, &s, &per[cm.Rank()]));
    if (drain) drain(cm.Rank(), s);
    return absl::OkStatus();
  }));
  RunStats res = Reduce(per);
  if (rss_ok && rss_before > 0) {
    res.rss_before = rss_before;
    res.rss_peak_delta = std::max<int64_t>(0, PeakRss() - rss_before);
  }
  return res;
}

// This process's rank of the run; stats (and, with a drain, the output
// shards) gathered to rank 0, which alone drains and returns figures.
absl::StatusOr<RunStats> RunOwnRank(const RunSpec& spec, const FillFn& fill, const DrainFn& drain) {
  comm::Communicator& c = *spec.comm;
  const int W = spec.world, r = c.Rank();
  if (c.Size() != W) {
    return absl::FailedPreconditionError(absl::StrCat(
        "eval run for W=", W, " on a launched world of ", c.Size(), " processes"));
  }
  const absl::Duration timeout = spec.arrive_timeout;
  std::vector<RunStats> per(W);
  absl::Status status = [&]() -> absl::Status {
    const bool rss_ok = ResetPeakRss();
    const int64_t rss_before = CurrentRss();
    Shard s;
    RETURN_IF_ERROR(RunRank(spec, &c, r, fill, &s, &per[r]));
    if (rss_ok && rss_before > 0) {
      per[r].rss_before = rss_before;
      per[r].rss_peak_delta = std::max<int64_t>(0, PeakRss() - rss_before);
    }
    double mine[kStatsFields];
    PackStats(per[r], mine);
    std::vector<std::vector<double>> inbox(W, std::vector<double>(kStatsFields));
    RETURN_IF_ERROR(tools::GatherToRoot(
        c, kStatsTag, mine, [](int) { return int64_t{kStatsFields} * 8; },
        [&](int from) { return static_cast<void*>(inbox[from].data()); }, timeout));
    for (int from = 1; from < W && r == 0; ++from) per[from] = UnpackStats(inbox[from].data());
    if (!drain) return absl::OkStatus();
    std::vector<uint8_t> packed;
    if (r != 0) PackOutputs(s, &packed);
    ASSIGN_OR_RETURN(const Layout layout,
                     Layout::Create(spec.sharding, spec.seqlen, W, spec.stripe, spec.mask));
    std::vector<std::vector<uint8_t>> shards(W);
    RETURN_IF_ERROR(tools::GatherToRoot(
        c, kShardTag, packed.data(),
        [&](int from) { return OutputBytes(spec, layout.ShardLength(from)); },
        [&](int from) {
          shards[from].resize(OutputBytes(spec, layout.ShardLength(from)));
          return static_cast<void*>(shards[from].data());
        },
        timeout));
    if (r != 0) return absl::OkStatus();
    drain(0, s);
    for (int from = 1; from < W; ++from) {
      Shard o;
      o.len = layout.ShardLength(from);
      o.pos = layout.Positions(from);
      UnpackOutputs(spec, shards[from], &o);
      drain(from, o);
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    c.Abort(status);  // the peers stop at once instead of waiting out their timeouts
    return status;
  }
  if (r != 0) return RunStats{};
  RunStats res = Reduce(per);
  // Memory of all W ranks together, as with local threads in one process.
  for (const RunStats& p : per) {
    if (p.rss_peak_delta < 0) {
      res.rss_before = res.rss_peak_delta = -1;
      break;
    }
    res.rss_before = std::max<int64_t>(res.rss_before, 0) + p.rss_before;
    res.rss_peak_delta = std::max<int64_t>(res.rss_peak_delta, 0) + p.rss_peak_delta;
  }
  return res;
}

absl::StatusOr<RunStats> RunRanks(const RunSpec& spec, const FillFn& fill, const DrainFn& drain) {
  return spec.comm == nullptr ? RunThreads(spec, fill, drain) : RunOwnRank(spec, fill, drain);
}

// Splitmix64: a cheap, well-mixed stream for the synthetic inputs.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

absl::StatusOr<RunStats> RunFull(const RunSpec& spec, const FullTensors& in, FullOutputs* out) {
  const int64_t S = spec.seqlen, H = spec.heads, Hk = spec.kv_heads, D = spec.head_dim;
  const int64_t es = DTypeSize(spec.dtype);
  if (static_cast<int64_t>(in.q.size()) != S * H * D ||
      static_cast<int64_t>(in.k.size()) != S * Hk * D ||
      static_cast<int64_t>(in.v.size()) != S * Hk * D ||
      (spec.backward && static_cast<int64_t>(in.dout.size()) != S * H * D)) {
    return absl::InvalidArgumentError("RunFull: input sizes do not match the spec");
  }
  out->out.assign(S * H * D, 0.0f);
  out->lse.assign(H * S, 0.0f);
  if (spec.backward) {
    out->dq.assign(S * H * D, 0.0f);
    out->dk.assign(S * Hk * D, 0.0f);
    out->dv.assign(S * Hk * D, 0.0f);
  } else {
    out->dq.clear();
    out->dk.clear();
    out->dv.clear();
  }
  auto fill = [&](int, Shard* s) {
    for (int64_t i = 0; i < s->len; ++i) {
      const int64_t g = s->pos[i];
      Store(&in.q[g * H * D], H * D, spec.dtype, &s->q[i * H * D * es]);
      Store(&in.k[g * Hk * D], Hk * D, spec.dtype, &s->k[i * Hk * D * es]);
      Store(&in.v[g * Hk * D], Hk * D, spec.dtype, &s->v[i * Hk * D * es]);
      if (spec.backward) Store(&in.dout[g * H * D], H * D, spec.dtype, &s->dout[i * H * D * es]);
    }
  };
  // Ranks own distinct global rows, so they write the full outputs at once.
  auto drain = [&](int, const Shard& s) {
    for (int64_t i = 0; i < s.len; ++i) {
      const int64_t g = s.pos[i];
      Load(&s.out[i * H * D * es], H * D, spec.dtype, &out->out[g * H * D]);
      for (int64_t h = 0; h < H; ++h) out->lse[h * S + g] = s.lse[h * s.len + i];
      if (spec.backward) {
        Load(&s.dq[i * H * D * es], H * D, spec.dtype, &out->dq[g * H * D]);
        Load(&s.dk[i * Hk * D * es], Hk * D, spec.dtype, &out->dk[g * Hk * D]);
        Load(&s.dv[i * Hk * D * es], Hk * D, spec.dtype, &out->dv[g * Hk * D]);
      }
    }
  };
  return RunRanks(spec, fill, drain);
}

absl::StatusOr<RunStats> RunSynthetic(const RunSpec& spec, uint64_t seed) {
  auto fill = [&](int rank, Shard* s) {
    // Uniform on [-sqrt(3), sqrt(3)]: unit variance, no special values.
    uint64_t state = Mix(seed * 1000003ull + static_cast<uint64_t>(rank));
    auto fill_bytes = [&](std::vector<uint8_t>& b) {
      const int64_t n = static_cast<int64_t>(b.size()) / DTypeSize(spec.dtype);
      std::vector<float> tmp(std::min<int64_t>(n, 1 << 16));
      for (int64_t off = 0; off < n; off += static_cast<int64_t>(tmp.size())) {
        const int64_t m = std::min<int64_t>(tmp.size(), n - off);
        for (int64_t i = 0; i < m; ++i) {
          state = Mix(state);
          tmp[i] = static_cast<float>((static_cast<double>(state >> 11) * 0x1.0p-53 * 2 - 1) *
                                      1.7320508075688772);
        }
        Store(tmp.data(), m, spec.dtype, b.data() + off * DTypeSize(spec.dtype));
      }
    };
    fill_bytes(s->q);
    fill_bytes(s->k);
    fill_bytes(s->v);
    if (spec.backward) fill_bytes(s->dout);
  };
  return RunRanks(spec, fill, nullptr);
}

absl::Status Broadcast(comm::Communicator& c, std::string* text, absl::Duration timeout) {
  comm::MessageMeta meta;
  meta.kind = kBroadcastKind;
  meta.ndim = 1;
  static char empty = 0;
  int64_t size = static_cast<int64_t>(text->size());
  auto one = [&](void* send, void* recv, int64_t bytes, int peer, int step) -> absl::Status {
    meta.step = step;
    meta.shape[0] = bytes;
    void* buf = bytes > 0 ? (send != nullptr ? send : recv) : &empty;
    ASSIGN_OR_RETURN(auto request,
                     send != nullptr
                         ? c.SendRecv(buf, bytes, peer, meta, nullptr, 0, 0, comm::MessageMeta{})
                         : c.SendRecv(nullptr, 0, 0, comm::MessageMeta{}, buf, bytes, peer, meta));
    return request->Wait(timeout);
  };
  if (c.Rank() == 0) {
    for (int r = 1; r < c.Size(); ++r) {
      RETURN_IF_ERROR(one(&size, nullptr, 8, r, 0));
      RETURN_IF_ERROR(one(text->data(), nullptr, size, r, 1));
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(one(nullptr, &size, 8, 0, 0));
  if (size < 0 || size > (int64_t{1} << 30)) {
    return absl::DataLossError(absl::StrCat("broadcast from rank 0: size ", size));
  }
  text->assign(size, '\0');
  return one(nullptr, text->data(), size, 0, 1);
}

absl::StatusOr<std::vector<std::string>> Gather(comm::Communicator& c, const std::string& mine,
                                                absl::Duration timeout) {
  const int W = c.Size();
  const int64_t my_size = static_cast<int64_t>(mine.size());
  std::vector<int64_t> sizes(W, 0);
  sizes[c.Rank()] = my_size;
  RETURN_IF_ERROR(tools::GatherToRoot(
      c, kSizeTag, &my_size, [](int) { return int64_t{8}; },
      [&](int from) { return static_cast<void*>(&sizes[from]); }, timeout));
  std::vector<std::string> all(c.Rank() == 0 ? W : 0);
  if (c.Rank() == 0) all[0] = mine;
  RETURN_IF_ERROR(tools::GatherToRoot(
      c, kTextTag, mine.data(), [&](int from) { return c.Rank() == 0 ? sizes[from] : my_size; },
      [&](int from) {
        all[from].assign(sizes[from], '\0');
        return static_cast<void*>(all[from].data());
      },
      timeout));
  return all;
}

}  // namespace ringattn::eval
