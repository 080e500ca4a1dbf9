// MakeStrategy and the params every strategy's kernels share: see strategy.h.
#include "runtime/strategy.h"

namespace ringattn {

std::unique_ptr<AttentionStrategy> MakeStrategy(const StrategyContext& ctx) {
  switch (ctx.options->strategy) {
    case Strategy::kLocal: return MakeLocalStrategy(ctx);
    case Strategy::kRing: break;
  }
  return MakeRingStrategy(ctx);  // ValidateOptions admits no other value
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
