// Merge of partial attention results. Two partial results over disjoint key
// sets, (o_a, lse_a) and (o_b, lse_b), combine exactly into
//   lse = log(exp(lse_a) + exp(lse_b)),
//   o   = o_a * exp(lse_a - lse) + o_b * exp(lse_b - lse).
// lse = -inf means "no contribution" and never produces NaN; a NaN lse (a
// non-finite value at a visible position) makes the row NaN. All fp32.
// The rule is shared by the CPU merge (merge.cc) and the CUDA one
// (cuda/merge.cu).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "attention/hd.h"

namespace ringattn {

// How one row of an accumulated result (o_a, lse_a) takes in a partial
// (o_b, lse_b) -- the one rule of the CPU and CUDA merges:
//   kNaN    either lse is NaN: a NaN or Inf stood at a VISIBLE position, and
//           the row is NaN everywhere, as on one device (where the row's
//           softmax sum is NaN); never dropped for the other side
//   kZero   both -inf: nothing seen yet, out 0
//   kKeep   lse_b = -inf: the partial saw nothing, o_a stays
//   kTake   lse_a = -inf: o = o_b
//   kBlend  o = w_a o_a + w_b o_b; a weight that underflows to 0 still
//           multiplies (0 * NaN = NaN, as in the one-device kernel)
enum class MergeKind : uint8_t { kNaN, kZero, kKeep, kTake, kBlend };
struct RowMerge {
  MergeKind kind;
  float lse, w_a, w_b;
};

RINGATTN_HD inline RowMerge MergeRow(float lse_a, float lse_b) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (lse_a != lse_a || lse_b != lse_b) return {MergeKind::kNaN, nan, nan, nan};
  if (lse_b == -inf) return {lse_a == -inf ? MergeKind::kZero : MergeKind::kKeep, lse_a, 1, 0};
  if (lse_a == -inf) return {MergeKind::kTake, lse_b, 0, 1};
  const float m = lse_a > lse_b ? lse_a : lse_b;
  const float ea = expf(lse_a - m), eb = expf(lse_b - m);
  const float sum = ea + eb;
  return {MergeKind::kBlend, m + logf(sum), ea / sum, eb / sum};
}

// One element of the merged row.
RINGATTN_HD inline float MergeValue(const RowMerge& r, float o_a, float o_b) {
  switch (r.kind) {
    case MergeKind::kNaN: return r.lse;
    case MergeKind::kZero: return 0.0f;
    case MergeKind::kKeep: return o_a;
    case MergeKind::kTake: return o_b;
    case MergeKind::kBlend: break;
  }
  return r.w_a * o_a + r.w_b * o_b;
}

// acc_out [B, S, H, D], part_out [B, S, H, D] contiguous fp32;
// acc_lse, part_lse [B, H, S] contiguous fp32. acc <- merge(acc, part).
// Parallel over rows with `num_threads`; the result does not depend on it.
void MergePartial(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                  int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim,
                  int num_threads);

}  // namespace ringattn
