// Merge of partial attention results. Two partial results over disjoint key
// sets, (o_a, lse_a) and (o_b, lse_b), combine exactly into
//   lse = log(exp(lse_a) + exp(lse_b)),
//   o   = o_a * exp(lse_a - lse) + o_b * exp(lse_b - lse).
// lse = -inf means "no contribution" and never produces NaN. All fp32.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace ringattn {

// Merged lse and the two weights; safe when either side is -inf.
inline void MergeWeights(float lse_a, float lse_b, float* lse, float* w_a, float* w_b) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const float m = std::fmax(lse_a, lse_b);
  if (m == kNegInf) {
    *lse = kNegInf;
    *w_a = 0.0f;
    *w_b = 0.0f;
    return;
  }
  const float ea = std::exp(lse_a - m);
  const float eb = std::exp(lse_b - m);
  const float sum = ea + eb;
  *lse = m + std::log(sum);
  *w_a = ea / sum;
  *w_b = eb / sum;
}

// acc_out [B, S, H, D], part_out [B, S, H, D] contiguous fp32;
// acc_lse, part_lse [B, H, S] contiguous fp32. acc <- merge(acc, part).
// Parallel over rows with `num_threads`; the result does not depend on it.
void MergePartial(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                  int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim,
                  int num_threads);

}  // namespace ringattn
