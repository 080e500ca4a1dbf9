// MakeStrategy and the params every strategy's kernels share: see strategy.h.
#include "runtime/strategy.h"

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
