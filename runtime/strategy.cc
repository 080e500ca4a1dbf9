// MakeStrategy and the params every strategy's kernels share: see strategy.h.
#include "runtime/strategy.h"

#include <algorithm>

#include "base/status.h"

namespace ringattn {

std::unique_ptr<AttentionStrategy> MakeStrategy(const StrategyContext& ctx) {
  switch (ctx.options->strategy) {
    case Strategy::kLocal: return MakeLocalStrategy(ctx);
    case Strategy::kAllGather: return MakeAllGatherStrategy(ctx);
    case Strategy::kUlysses: return MakeUlyssesStrategy(ctx, ctx.world);
    case Strategy::kHybrid: return MakeUlyssesStrategy(ctx, ctx.options->ulysses);
    case Strategy::kRing:
    case Strategy::kAuto:  // resolved by the engine before it makes the strategy
      break;
  }
  return MakeRingStrategy(ctx);
}

namespace {

// Start of part c of n near-equal parts of `total`.
int64_t PartStart(int64_t c, int64_t n, int64_t total) {
  return c * (total / n) + std::min(c, total % n);
}

}  // namespace

std::vector<HeadRange> SplitHeads(int64_t H, int64_t Hk, int U) {
  std::vector<HeadRange> out(U);
  const int64_t G = H / Hk;
  if (Hk >= U) {
    for (int u = 0; u < U; ++u) {
      HeadRange& r = out[u];
      r.kv0 = PartStart(u, U, Hk);
      r.nkv = PartStart(u + 1, U, Hk) - r.kv0;
      r.q0 = r.kv0 * G;
      r.nq = r.nkv * G;
    }
    return out;
  }
  for (int64_t kv = 0; kv < Hk; ++kv) {  // members [m0, m1) share KV head kv
    const int64_t m0 = PartStart(kv, Hk, U), m1 = PartStart(kv + 1, Hk, U);
    for (int64_t m = m0; m < m1; ++m) {
      HeadRange& r = out[m];
      r.kv0 = kv;
      r.nkv = 1;
      r.q0 = kv * G + PartStart(m - m0, m1 - m0, G);
      r.nq = kv * G + PartStart(m - m0 + 1, m1 - m0, G) - r.q0;
    }
  }
  return out;
}

std::vector<RowRun> InverseRuns(const std::vector<RowRun>& runs) {
  std::vector<RowRun> inv;
  inv.reserve(runs.size());
  for (const RowRun& r : runs) inv.push_back({r.dst, r.src, r.length});
  return inv;
}

absl::Status EndTimed(KernelBackend* be, const absl::Status& s) {
  absl::Status end = be->EndTimed();
  return s.ok() ? end : s;
}

TensorView RowsView(void* data, DType dtype, Device device, int64_t B, int64_t S, int64_t H,
                    int64_t D) {
  return TensorView::Contiguous(data, dtype, {B, S, H, D}, device);
}

absl::Status CopyRuns(KernelBackend* be, const TensorView& src, const std::vector<RowRun>& runs,
                      int64_t seqlen_dst, void* dst) {
  const int64_t B = src.shape[0], H = src.shape[2], D = src.shape[3];
  const int64_t row = H * D * DTypeSize(src.dtype);
  for (int64_t b = 0; b < B; ++b) {
    for (const RowRun& r : runs) {
      if (r.length == 0) continue;
      TensorView part = src;
      part.shape[0] = 1;
      part.shape[1] = r.length;
      part.data = static_cast<char*>(src.data) +
                  (b * src.strides[0] + r.src * src.strides[1]) * DTypeSize(src.dtype);
      RETURN_IF_ERROR(be->Pack(part, static_cast<char*>(dst) + (b * seqlen_dst + r.dst) * row));
    }
  }
  return absl::OkStatus();
}

AttnParams BaseParams(const StrategyContext& ctx, const ShardDims& d, const TensorView& q) {
  const RingOptions& o = *ctx.options;
  AttnParams p;
  p.q = q.data;
  p.q_stride = BshdStrides(q);
  p.dtype = o.dtype;
  p.batch = d.B;
  p.seqlen_q = d.S;
  p.num_heads = d.H;
  p.num_heads_k = d.Hk;
  p.head_dim = d.D;
  p.scale = o.scale.has_value() ? *o.scale : DefaultScale(d.D);
  p.softcap = o.softcap;
  p.mask = o.mask;
  p.q_pos = ctx.layout->Shard(ctx.rank);
  p.lse_batch_stride = d.H * d.S;
  p.lse_head_stride = d.S;
  return p;
}

}  // namespace ringattn
