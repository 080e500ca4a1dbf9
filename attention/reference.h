// Float64 naive attention, forward and backward: the ground truth for the
// tests and the eval tool. Inputs are contiguous bshd float tensors (values
// already rounded to the storage dtype), outputs are double. Row-wise entry
// points let the eval tool check a sample of rows at any length in O(S*D).
#pragma once

#include <cstdint>
#include <vector>

#include "attention/mask.h"

namespace ringattn {

struct RefProblem {
  int64_t batch = 1, seqlen_q = 0, seqlen_k = 0, num_heads = 1, num_heads_k = 1, head_dim = 0;
  double scale = 0.0;
  double softcap = 0.0;
  Mask mask;
  std::vector<int64_t> q_pos;  // [S_q] global positions; empty = 0..S_q-1
  std::vector<int64_t> k_pos;  // [S_k] global positions; empty = 0..S_k-1

  int64_t QPos(int64_t i) const { return q_pos.empty() ? i : q_pos[i]; }
  int64_t KPos(int64_t j) const { return k_pos.empty() ? j : k_pos[j]; }
};

// Whether the query at position i sees the key at position j, from the
// rules' definitions (causal, window, prefix-LM, documents, sinks, the
// block mask of query head h) rather than from Mask's bounds, so that the
// tests check those bounds. For a SinkPart() mask: the pairs only the sink
// makes visible.
bool ReferenceVisible(const Mask& m, int64_t i, int64_t j, int64_t h = 0);

// One query row (b, h, i): out_row [D] and its lse (natural log; -inf when
// the row sees no key, with out_row = 0).
void ReferenceForwardRow(const RefProblem& p, const float* q, const float* k, const float* v,
                         int64_t b, int64_t h, int64_t i, double* out_row, double* lse);

// out [B, S_q, H, D], lse [B, H, S_q].
void ReferenceForward(const RefProblem& p, const float* q, const float* k, const float* v,
                      std::vector<double>* out, std::vector<double>* lse);

// dq [B, S_q, H, D], dk and dv [B, S_k, Hkv, D], for loss = sum(dout * out).
void ReferenceBackward(const RefProblem& p, const float* q, const float* k, const float* v,
                       const float* dout, std::vector<double>* dq, std::vector<double>* dk,
                       std::vector<double>* dv);

// The same math on double inputs (the finite-difference test; the Python
// package's float64 path, which torch.autograd.gradcheck drives).
void ReferenceForwardF64(const RefProblem& p, const double* q, const double* k, const double* v,
                         std::vector<double>* out, std::vector<double>* lse);
void ReferenceBackwardF64(const RefProblem& p, const double* q, const double* k, const double* v,
                          const double* dout, std::vector<double>* dq, std::vector<double>* dk,
                          std::vector<double>* dv);

}  // namespace ringattn
