// The exactness check of ringattn-eval: the ring's forward and backward
// against the float64 reference (attention/reference.h) on a sample of rows,
// at any length, in O(S * D) per sampled row.
//
// What is compared, per sampled row and head:
//   out, lse   query rows: ReferenceForwardRow (float64, the whole row)
//   dq         query rows: the float64 gradient of loss = sum(dout * out)
//              built on the reference row's own lse and out (end to end)
//   dk, dv     key rows: a float64 sum over EVERY query row that sees the
//              key, given the forward's saved (out, lse), which are the
//              backward's own inputs; the forward itself is checked above.
//              (The end-to-end float64 lse of every query would cost
//              O(S^2 D); the backward as a function of its inputs is
//              exactly what Backward computes.)
// Tolerance, flash-attn's rule (docs/ARCHITECTURE.md): error <= 2 x the error of a
// naive implementation in the same precision on the same rows + atol
// (fp32 1e-5, bf16 1e-3); the naive baseline is computed here row-wise too.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "attention/dtype.h"
#include "attention/mask.h"
#include "tools/eval/harness.h"

namespace ringattn::eval {

// Random normal inputs of one length and dtype (batch 1, values rounded to
// the dtype), shared by every mask, layout and ring size at that length.
struct Problem {
  int64_t S = 0, H = 1, Hk = 1, D = 64;
  DType dtype = DType::kFloat32;
  float scale = 0;
  FullTensors in;
};
Problem MakeProblem(int64_t S, int64_t H, int64_t Hk, int64_t D, DType dtype, uint64_t seed);

// Float64 reference and naive same-precision results on sampled query rows
// for one mask: [row][head][d] and [row][head].
struct QueryRef {
  Mask mask;
  std::vector<int64_t> rows;  // global positions, sorted
  std::vector<double> out, lse, dq;
  std::vector<float> naive_out, naive_lse, naive_dq;
};
QueryRef ComputeQueryRef(const Problem& p, const Mask& mask, const std::vector<int64_t>& rows,
                         int threads);

struct ErrorStat {
  double max_abs = 0;        // max |ring - ref| over sampled elements
  double naive_max_abs = 0;  // the same for the naive baseline
  double tol = 0;            // 2 * naive_max_abs + atol
  double rel_max = 0;        // max|ring - ref| / max|ref| over the sample
  double rel_mean = 0;       // mean|ring - ref| / mean|ref| over the sample
  int64_t rows = 0;          // sampled rows x heads
  bool finite = true;
  bool pass() const { return finite && max_abs <= tol; }
};

struct Errors {
  ErrorStat out, lse, dq, dk, dv;
  bool has_backward = false;
  bool pass() const {
    return out.pass() && lse.pass() && (!has_backward || (dq.pass() && dk.pass() && dv.pass()));
  }
};

// Compares a ring run's gathered outputs with the references. `keys` are
// the sampled key rows for dk/dv (global positions).
Errors CheckRun(const Problem& p, const QueryRef& ref, const std::vector<int64_t>& keys,
                const FullOutputs& ring, bool backward, int threads);

// atol of flash-attn's rule for a storage dtype.
double AbsTolerance(DType t);

// n standard normal values times `stddev`, rounded to `t`; the same for a
// given seed whatever the thread count.
std::vector<float> NormalValues(int64_t n, DType t, uint64_t seed, float stddev = 1.0f);

// Runs fn(i) for i in [0, n) on `threads` threads.
void ParallelFor(int64_t n, int threads, const std::function<void(int64_t)>& fn);

}  // namespace ringattn::eval
