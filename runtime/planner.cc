// The planner: see planner.h and docs/PLANNER.md.
#include "runtime/planner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "runtime/plan.h"
#include "runtime/strategy.h"

namespace ringattn {
namespace {

// Keys of a row's masked tiles the kernels compute anyway (about one and a
// half 64-key tiles; layout.cc's balanced sharding counts the same).
constexpr double kRowOverhead = 96;
constexpr double kBackwardFlopsRatio = 2.5;  // 5 GEMMs against 2

// Visible pairs of the queries of `pos` (one head; a per-head block mask
// averaged over its heads), plus the per-row allowance.
double Pairs(const PositionMap& pos, const Mask& mask, int64_t seqlen) {
  const double heads = mask.HasBlocks() ? static_cast<double>(std::max<int64_t>(mask.block_heads, 1)) : 1;
  double sum = 0;
  const PositionMap::Segment* seg = pos.Segments();
  for (int64_t s = 0; s < pos.num_segments; ++s) {
    for (int64_t o = 0; o < seg[s].length; ++o) {
      const int64_t q = pos.Global(seg[s].local_begin + o);
      sum += static_cast<double>(mask.VisibleKeys(q, seqlen)) / heads + kRowOverhead;
    }
  }
  return sum;
}

// The most query heads and KV heads any member of a Ulysses group of U
// gets (the strategy's own split).
std::pair<int64_t, int64_t> MaxHeads(int64_t H, int64_t Hk, int U) {
  int64_t nq = 0, nkv = 0;
  for (const HeadRange& r : SplitHeads(H, Hk, U)) {
    nq = std::max(nq, r.nq);
    nkv = std::max(nkv, r.nkv);
  }
  return {nq, nkv};
}

// Seconds to move `bytes` to `peers` peers, `cross` of them across nodes.
double Move(const PlanCosts& c, double bytes_each, int peers, int cross) {
  if (peers <= 0) return 0;
  const double node_bw = c.node_bytes_per_s > 0 ? c.node_bytes_per_s : c.bytes_per_s;
  const double inner = (peers - cross) * bytes_each / node_bw;
  const double outer = cross * bytes_each / c.bytes_per_s;
  return std::max(inner, outer) + c.latency_s;
}

// Whether the ranks lo..hi (consecutive) span more than one node.
bool Crosses(const PlanCosts& c, int lo, int hi) {
  return c.node_size > 0 && lo / c.node_size != hi / c.node_size;
}

struct RingFigures {
  double fwd = 0, bwd = 0, compute = 0, comm = 0, bytes = 0;
  double pairs = 0;  // the busiest rank's (one head)
};

// The ring over `layout` (its ranks may be groups), each rank's work scaled
// by `head_frac` (the share of heads it computes), KV blocks of
// `kv_row_bytes` per row; links between neighbours `cross` (across nodes)
// or not.
RingFigures RingModel(const Layout& layout, const Mask& mask, double flops_per_pair_head,
                      double heads, double kv_row_bytes, const PlanCosts& c, bool cross) {
  RingFigures f;
  const int w = layout.world();
  double max_pairs = 0;
  int steps = 1;
  int64_t max_rows = 0;
  for (int r = 0; r < w; ++r) {
    max_pairs = std::max(max_pairs, Pairs(layout.Shard(r), mask, layout.seqlen()));
    max_rows = std::max(max_rows, layout.ShardLength(r));
    steps = std::max(steps, RingPlan(layout, mask, r).NumSteps());
  }
  const double fwd_work = max_pairs * heads * flops_per_pair_head;
  const double block = max_rows * kv_row_bytes;
  PlanCosts link = c;
  if (!cross && c.node_bytes_per_s > 0) link.bytes_per_s = c.node_bytes_per_s;
  const double m_fwd = block / link.bytes_per_s + link.latency_s;
  // dK/dV travel in fp32 beside the KV blocks in the backward.
  const double m_bwd = m_fwd + block * 2 / link.bytes_per_s;  // fp32 dK/dV ~ 2x a 16-bit block
  auto ring_time = [&](double compute, double m) {
    const double per_step = compute / steps;
    if (!c.overlap) return compute + (steps - 1) * m;
    return (steps - 1) * std::max(per_step, m) + per_step;
  };
  f.compute = fwd_work / c.forward_flops_per_s;
  f.fwd = ring_time(f.compute, m_fwd);
  f.bwd = ring_time(fwd_work * kBackwardFlopsRatio / c.backward_flops_per_s, m_bwd);
  f.comm = f.fwd - f.compute;
  f.bytes = (steps - 1) * block;
  f.pairs = max_pairs;
  return f;
}

std::map<std::string, PlanCosts>& Cache() {
  static auto* cache = new std::map<std::string, PlanCosts>;
  return *cache;
}
std::mutex cache_mu;

}  // namespace

std::vector<PlanEntry> PredictAll(Sharding sharding, int64_t seqlen, int64_t stripe,
                                  const Mask& mask, int world, const PlanShape& s,
                                  const PlanCosts& c) {
  std::vector<PlanEntry> out;
  auto layout_or = Layout::Create(sharding, seqlen, world, stripe, mask);
  if (!layout_or.ok()) return out;
  const Layout& layout = *layout_or;
  const double es = DTypeSize(s.dtype);
  const double per_pair_head = 4.0 * s.head_dim * s.batch;
  const double kv_row = 2.0 * s.batch * s.kv_heads * s.head_dim * es;
  const bool spans_nodes = Crosses(c, 0, world - 1);

  RingFigures ring;
  {  // the ring
    PlanEntry e;
    e.strategy = Strategy::kRing;
    e.name = "ring";
    const RingFigures& f = ring = RingModel(layout, mask, per_pair_head, s.heads, kv_row, c,
                                            spans_nodes);
    e.forward_s = f.fwd;
    e.backward_s = f.bwd;
    e.compute_s = f.compute;
    e.comm_s = f.comm;
    e.bytes_per_rank = f.bytes;
    out.push_back(e);
  }
  {  // all-gather: the visible rows of every other rank, then one compute
    PlanEntry e;
    e.strategy = Strategy::kAllGather;
    e.name = "allgather";
    const double max_pairs = ring.pairs;  // the same queries, the same keys
    double max_bytes = 0;
    // Rows received: the key ranges the rank's queries see (what the
    // strategy gathers), less its own rows.
    for (int r = 0; r < world; ++r) {
      int64_t rows = 0;
      for (const auto& [lo, hi] : VisibleKeyRanges(layout, mask, r)) rows += hi - lo;
      rows = std::max<int64_t>(0, rows - layout.ShardLength(r));
      max_bytes = std::max(max_bytes, rows * kv_row);
    }
    const int peers = world - 1;
    const int cross = spans_nodes ? world - c.node_size : 0;
    const double per_peer = peers > 0 ? max_bytes / peers : 0;
    e.compute_s = max_pairs * s.heads * per_pair_head / c.forward_flops_per_s;
    e.comm_s = Move(c, per_peer, peers, cross);
    e.forward_s = e.compute_s + e.comm_s;
    // Backward: the gather again, the compute, dK/dV back in fp32.
    e.backward_s = e.comm_s + max_pairs * s.heads * per_pair_head * kBackwardFlopsRatio /
                                  c.backward_flops_per_s +
                   Move(c, per_peer * 4 / es, peers, cross);
    e.bytes_per_rank = max_bytes;
    out.push_back(e);
  }
  // Ulysses (U = W) and hybrid (1 < U < W, U | W).
  for (int U = 2; U <= world; ++U) {
    if (world % U != 0) continue;
    PlanEntry e;
    e.strategy = U == world ? Strategy::kUlysses : Strategy::kHybrid;
    e.ulysses = U == world ? 0 : U;
    e.name = StrategySpecName(e.strategy, U, world);
    if (s.heads < U) {
      e.feasible = false;
      e.why_not = absl::StrCat("H = ", s.heads, " < U = ", U);
      out.push_back(e);
      continue;
    }
    const auto [nq, nkv] = MaxHeads(s.heads, s.kv_heads, U);
    const Layout groups = Layout::Grouped(layout, U);
    const bool group_cross = Crosses(c, 0, U - 1);
    const bool ring_cross = spans_nodes && world / U > 1;
    const RingFigures inner =
        RingModel(groups, mask, per_pair_head, static_cast<double>(nq),
                  2.0 * s.batch * nkv * s.head_dim * es, c, ring_cross);
    // The all-to-alls: in, q/k/v of the peer's heads for my rows; out, fp32
    // out and lse of my heads for the peer's rows.
    const double rows = static_cast<double>(layout.MaxShardLength());
    const double in = rows * s.batch * (nq + 2 * nkv) * s.head_dim * es;
    const double back = rows * s.batch * nq * (s.head_dim + 1) * 4.0;
    const int cross = group_cross ? U - std::min(U, c.node_size) : 0;
    const double a2a_fwd = Move(c, in, U - 1, cross) + Move(c, back, U - 1, cross);
    // Backward: q, k, v, out, dout, lse in; fp32 dq, dk, dv back.
    const double in_b = rows * s.batch * ((3 * nq + 2 * nkv) * s.head_dim * es + nq * 4.0);
    const double back_b = rows * s.batch * (nq + 2 * nkv) * s.head_dim * 4.0;
    const double a2a_bwd = Move(c, in_b, U - 1, cross) + Move(c, back_b, U - 1, cross);
    e.compute_s = inner.compute;
    e.comm_s = inner.comm + a2a_fwd;
    e.forward_s = inner.fwd + a2a_fwd;
    e.backward_s = inner.bwd + a2a_bwd;
    e.bytes_per_rank = inner.bytes + (U - 1) * (in + back);
    out.push_back(e);
  }
  return out;
}

PlanCosts PlanCosts::Given(double tflops, double bwd_tflops, double link_gbps,
                           double latency_us) {
  PlanCosts c;
  c.forward_flops_per_s = tflops * 1e12;
  c.backward_flops_per_s = bwd_tflops > 0 ? bwd_tflops * 1e12 : 0.8 * c.forward_flops_per_s;
  c.bytes_per_s = link_gbps * 1e9;
  c.latency_s = latency_us * 1e-6;
  return c;
}

const PlanEntry& Choose(const std::vector<PlanEntry>& entries, bool backward) {
  const PlanEntry* best = &entries.front();  // the ring is always feasible
  auto t = [&](const PlanEntry& e) { return e.forward_s + (backward ? e.backward_s : 0); };
  for (const PlanEntry& e : entries) {
    if (e.feasible && t(e) < t(*best)) best = &e;
  }
  return *best;
}

absl::StatusOr<PlanCosts> Calibrate(comm::Communicator* comm, KernelBackend* be, DType dtype,
                                    int64_t D, int64_t bytes, absl::Duration timeout) {
  const std::string key = absl::StrCat(be->Name(), "/", comm->Name(), "/", comm->Size(), "/",
                                       static_cast<int>(dtype), "/", D, "/", bytes);
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = Cache().find(key);
    if (it != Cache().end()) return it->second;
  }
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  // The kernels: one causal-free block pair of 2048 x 2048, four heads (a
  // block too small for the cache, as a long context's are; 1024 x 1024
  // ran 20% faster than the ring's own blocks).
  constexpr int64_t S = 2048, H = 4;
  const int64_t elems = S * H * D, es = DTypeSize(dtype);
  std::vector<void*> bufs;
  auto alloc = [&](int64_t b) -> absl::StatusOr<float*> {
    ASSIGN_OR_RETURN(void* p, be->Allocate(b));
    bufs.push_back(p);
    RETURN_IF_ERROR(be->Fill(static_cast<float*>(p), b / 4, 0.01f));
    return static_cast<float*>(p);
  };
  auto release = [&] {
    for (void* p : bufs) be->Free(p);
    bufs.clear();
  };
  PlanCosts c;
  absl::Status s = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(float* q, alloc(elems * es));
    ASSIGN_OR_RETURN(float* k, alloc(elems * es));
    ASSIGN_OR_RETURN(float* v, alloc(elems * es));
    ASSIGN_OR_RETURN(float* o, alloc(elems * 4));
    ASSIGN_OR_RETURN(float* lse, alloc(H * S * 4));
    ASSIGN_OR_RETURN(float* dq, alloc(elems * 4));
    ASSIGN_OR_RETURN(float* dk, alloc(elems * 4));
    ASSIGN_OR_RETURN(float* dv, alloc(elems * 4));
    AttnParams p;
    p.q = q;
    p.k = k;
    p.v = v;
    p.q_stride = p.k_stride = p.v_stride = p.out_stride = p.dout_stride =
        TensorStrides::Contiguous(S, H, D);
    p.dtype = dtype;
    p.out = o;
    p.out_dtype = DType::kFloat32;
    p.lse = lse;
    p.lse_batch_stride = H * S;
    p.lse_head_stride = S;
    p.batch = 1;
    p.seqlen_q = p.seqlen_k = S;
    p.num_heads = p.num_heads_k = H;
    p.head_dim = D;
    p.scale = DefaultScale(D);
    p.q_pos = p.k_pos = PositionMap::Contiguous(0, S);
    const double flops = 4.0 * S * S * H * D;
    // Every rank runs its kernels at once, between two barriers, and the
    // span is what counts: ranks that share cores (more ranks than cores)
    // see each other's load, as in a real call. One untimed call first.
    constexpr int kReps = 2;
    auto timed = [&](auto&& call) -> absl::StatusOr<double> {
      RETURN_IF_ERROR(call());
      RETURN_IF_ERROR(be->Synchronize(timeout));
      if (comm->Size() > 1) RETURN_IF_ERROR(comm->Barrier(timeout));
      auto t0 = Clock::now();
      for (int rep = 0; rep < kReps; ++rep) RETURN_IF_ERROR(call());
      RETURN_IF_ERROR(be->Synchronize(timeout));
      if (comm->Size() > 1) RETURN_IF_ERROR(comm->Barrier(timeout));
      return seconds(t0) / kReps;
    };
    ASSIGN_OR_RETURN(const double best_f, timed([&] { return be->Forward(p); }));
    AttnParams b = p;
    b.dout = q;
    b.dsum = lse;
    b.dq_accum = dq;
    b.dk_accum = dk;
    b.dv_accum = dv;
    ASSIGN_OR_RETURN(const double best_b, timed([&] { return be->Backward(b); }));
    c.forward_flops_per_s = flops / best_f;
    c.backward_flops_per_s = flops * kBackwardFlopsRatio / best_b;
    c.overlap = be->Stream() != nullptr;  // a GPU's transfers run beside its kernels
    release();
    // The link: a small and a large message around the ring.
    const int w = comm->Size(), r = comm->Rank();
    c.bytes_per_s = 1e30;
    c.latency_s = 0;
    if (w > 1) {
      const int64_t big = std::clamp<int64_t>(bytes, 1 << 16, int64_t{64} << 20);
      ASSIGN_OR_RETURN(float* a, alloc(big));
      ASSIGN_OR_RETURN(float* z, alloc(big));
      auto ring = [&](int64_t n, int step) -> absl::StatusOr<double> {
        comm::MessageMeta m;
        m.step = step;
        m.kind = 98;
        m.ndim = 1;
        m.shape[0] = n;
        RETURN_IF_ERROR(comm->Barrier(timeout));
        auto t0 = Clock::now();
        ASSIGN_OR_RETURN(auto req, comm->SendRecv(a, n, (r + 1) % w, m, z, n, (r + w - 1) % w, m));
        RETURN_IF_ERROR(req->Wait(timeout));
        return seconds(t0);
      };
      double lat = 1e30, t_big = 1e30;
      for (int rep = 0; rep < 4; ++rep) {
        ASSIGN_OR_RETURN(double t, ring(8, rep));
        lat = std::min(lat, t);
        ASSIGN_OR_RETURN(t, ring(big, 10 + rep));
        t_big = std::min(t_big, t);
      }
      c.latency_s = lat;
      c.bytes_per_s = big / std::max(t_big - lat, 1e-9);
      // Rank 0's figures for everyone, so that every rank plans alike.
      const double mine[4] = {c.forward_flops_per_s, c.backward_flops_per_s, c.bytes_per_s,
                              c.latency_s};
      RETURN_IF_ERROR(be->CopyFromHost(a, mine, sizeof(mine)));
      std::vector<void*> recv(w);
      std::vector<int64_t> sizes(w, sizeof(mine));
      ASSIGN_OR_RETURN(float* all, alloc(w * sizeof(mine)));
      for (int j = 0; j < w; ++j) recv[j] = reinterpret_cast<char*>(all) + j * sizeof(mine);
      RETURN_IF_ERROR(comm->AllGather(a, sizeof(mine), recv, sizes, 0, 97, timeout));
      double agreed[4];
      RETURN_IF_ERROR(be->CopyToHost(agreed, recv[0], sizeof(agreed)));
      c.forward_flops_per_s = agreed[0];
      c.backward_flops_per_s = agreed[1];
      c.bytes_per_s = agreed[2];
      c.latency_s = agreed[3];
    }
    return absl::OkStatus();
  }();
  release();
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("calibrating the planner: ", s.message()));
  }
  std::lock_guard<std::mutex> lock(cache_mu);
  Cache()[key] = c;
  return c;
}

}  // namespace ringattn
