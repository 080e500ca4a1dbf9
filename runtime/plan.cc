// RingPlan: see plan.h.
#include "runtime/plan.h"

#include <algorithm>

namespace ringattn {

bool BlocksInteract(const PositionMap& q, const PositionMap& k, const Mask& mask) {
  for (int64_t a = 0; a < q.num_segments; ++a)
    for (int64_t b = 0; b < k.num_segments; ++b) {
      const auto& qs = q.Segments()[a];
      const auto& ks = k.Segments()[b];
      const int64_t q_min = q.Global(qs.local_begin), q_max = q.Global(qs.local_begin + qs.length - 1);
      const int64_t k_min = k.Global(ks.local_begin), k_max = k.Global(ks.local_begin + ks.length - 1);
      if (mask.Classify(q_min, q_max, k_min, k_max) != TileClass::kEmpty) return true;
    }
  return false;
}

RingPlan::RingPlan(const Layout& layout, const Mask& mask, int rank)
    : rank_(rank), world_(layout.world()), work_(layout.world(), false) {
  std::vector<PositionMap> shards;
  for (int r = 0; r < world_; ++r) shards.push_back(layout.Shard(r));
  int last = 0;
  for (int r = 0; r < world_; ++r)
    for (int t = 0; t < world_; ++t) {
      const int src = ((r - t) % world_ + world_) % world_;
      if (!BlocksInteract(shards[r], shards[src], mask)) continue;
      last = std::max(last, t);
      if (r == rank_) work_[t] = true;
    }
  num_steps_ = last + 1;
}

int64_t VisiblePairs(int64_t seqlen, const Mask& mask) {
  int64_t pairs = 0;
  for (int64_t i = 0; i < seqlen; ++i) pairs += mask.VisibleKeys(i, seqlen);
  return pairs;
}

std::vector<int64_t> VisiblePairsPerRank(const Layout& layout, const Mask& mask) {
  std::vector<int64_t> pairs(layout.world(), 0);
  for (int r = 0; r < layout.world(); ++r) {
    for (int64_t q : layout.Positions(r)) pairs[r] += mask.VisibleKeys(q, layout.seqlen());
  }
  return pairs;
}

double Imbalance(const std::vector<int64_t>& work) {
  if (work.empty()) return 1.0;
  double sum = 0, max = 0;
  for (int64_t w : work) {
    sum += static_cast<double>(w);
    max = std::max(max, static_cast<double>(w));
  }
  return sum > 0 ? max / (sum / static_cast<double>(work.size())) : 1.0;
}

}  // namespace ringattn
