// The ring plan: for one rank, which ring steps carry work and how many
// steps the ring runs at all. Every rank derives the same plan from the
// layout and the mask, so ranks agree on an early end without talking.
//
// At step t, rank r computes against the key/value block of rank
// (r - t) mod W. A step has work when some query of r may see some key of
// that block (checked per pair of position segments, exact for contiguous
// segments, conservative for striped ones). The ring runs NumSteps() steps:
// one past the last step with work on ANY rank; later blocks are never sent.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/mask.h"
#include "runtime/layout.h"

namespace ringattn {

// Whether any query position of `q` may see any key position of `k`.
bool BlocksInteract(const PositionMap& q, const PositionMap& k, const Mask& mask);

class RingPlan {
 public:
  RingPlan(const Layout& layout, const Mask& mask, int rank);

  int rank() const { return rank_; }
  int world() const { return world_; }
  // Steps the ring runs (>= 1); rotations of KV = NumSteps() - 1.
  int NumSteps() const { return num_steps_; }
  int Source(int step) const { return ((rank_ - step) % world_ + world_) % world_; }
  bool HasWork(int step) const { return work_[step]; }

 private:
  int rank_;
  int world_;
  int num_steps_ = 1;
  std::vector<bool> work_;  // [world] for this rank
};

// Number of (query, key) pairs of the whole sequence that the mask lets
// through: the FLOP basis of the benchmarks (4 * pairs * D * H forward).
int64_t VisiblePairs(int64_t seqlen, const Mask& mask);
// Visible pairs whose query each rank holds: the work of each rank.
std::vector<int64_t> VisiblePairsPerRank(const Layout& layout, const Mask& mask);
// max / mean of per-rank work (1 = balanced; 1 for no work at all).
double Imbalance(const std::vector<int64_t>& work);

}  // namespace ringattn
