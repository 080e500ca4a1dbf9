// Float64 naive attention; see reference.h. Straightforward loops, no tiling:
// this file is meant to be obviously right, not fast.
#include "attention/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ringattn {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// The document index of position x: how many boundaries after the first lie
// at or before it.
int64_t DocIndex(const Mask& m, int64_t x) {
  return std::upper_bound(m.cu_seqlens + 1, m.cu_seqlens + m.num_docs, x) - (m.cu_seqlens + 1);
}

template <typename T>
struct Views {
  const RefProblem& p;
  const T* q;
  const T* k;
  const T* v;
  double Q(int64_t b, int64_t i, int64_t h, int64_t d) const {
    return q[((b * p.seqlen_q + i) * p.num_heads + h) * p.head_dim + d];
  }
  double K(int64_t b, int64_t j, int64_t hk, int64_t d) const {
    return k[((b * p.seqlen_k + j) * p.num_heads_k + hk) * p.head_dim + d];
  }
  double V(int64_t b, int64_t j, int64_t hk, int64_t d) const {
    return v[((b * p.seqlen_k + j) * p.num_heads_k + hk) * p.head_dim + d];
  }
};

// Scores x_j (after softcap, masked entries -inf) and, when tanh_out is not
// null, the tanh value of the softcap for the backward.
template <typename T>
void RowScores(const Views<T>& t, int64_t b, int64_t h, int64_t i, std::vector<double>* x,
               std::vector<double>* tanh_out) {
  const RefProblem& p = t.p;
  const int64_t hk = h / (p.num_heads / p.num_heads_k);
  x->assign(p.seqlen_k, kNegInf);
  if (tanh_out) tanh_out->assign(p.seqlen_k, 0.0);
  for (int64_t j = 0; j < p.seqlen_k; ++j) {
    if (!ReferenceVisible(p.mask, p.QPos(i), p.KPos(j), h)) continue;
    double s = 0;
    for (int64_t d = 0; d < p.head_dim; ++d) s += t.Q(b, i, h, d) * t.K(b, j, hk, d);
    s *= p.scale;
    if (p.softcap > 0) {
      const double th = std::tanh(s / p.softcap);
      if (tanh_out) (*tanh_out)[j] = th;
      s = p.softcap * th;
    }
    (*x)[j] = s;
  }
}

double RowLse(const std::vector<double>& x) {
  double m = kNegInf;
  for (double s : x) m = std::max(m, s);
  if (m == kNegInf) return kNegInf;
  double l = 0;
  for (double s : x) l += std::exp(s - m);
  return m + std::log(l);
}

template <typename T>
void ForwardImpl(const RefProblem& p, const T* q, const T* k, const T* v,
                 std::vector<double>* out, std::vector<double>* lse) {
  const Views<T> t{p, q, k, v};
  out->assign(p.batch * p.seqlen_q * p.num_heads * p.head_dim, 0.0);
  lse->assign(p.batch * p.num_heads * p.seqlen_q, kNegInf);
  std::vector<double> x;
  const int64_t group = p.num_heads / p.num_heads_k;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.num_heads; ++h)
      for (int64_t i = 0; i < p.seqlen_q; ++i) {
        RowScores(t, b, h, i, &x, nullptr);
        const double row_lse = RowLse(x);
        (*lse)[(b * p.num_heads + h) * p.seqlen_q + i] = row_lse;
        if (row_lse == kNegInf) continue;
        double* o = &(*out)[((b * p.seqlen_q + i) * p.num_heads + h) * p.head_dim];
        for (int64_t j = 0; j < p.seqlen_k; ++j) {
          if (x[j] == kNegInf) continue;
          const double pj = std::exp(x[j] - row_lse);
          for (int64_t d = 0; d < p.head_dim; ++d) o[d] += pj * t.V(b, j, h / group, d);
        }
      }
}

template <typename T>
void BackwardImpl(const RefProblem& p, const T* q, const T* k, const T* v, const T* dout,
                  std::vector<double>* dq, std::vector<double>* dk, std::vector<double>* dv) {
  const Views<T> t{p, q, k, v};
  const int64_t D = p.head_dim;
  const int64_t group = p.num_heads / p.num_heads_k;
  dq->assign(p.batch * p.seqlen_q * p.num_heads * D, 0.0);
  dk->assign(p.batch * p.seqlen_k * p.num_heads_k * D, 0.0);
  dv->assign(p.batch * p.seqlen_k * p.num_heads_k * D, 0.0);
  std::vector<double> x, th, prob, out_row(D);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < p.seqlen_q; ++i) {
        RowScores(t, b, h, i, &x, &th);
        const double row_lse = RowLse(x);
        if (row_lse == kNegInf) continue;
        const T* dO = dout + ((b * p.seqlen_q + i) * p.num_heads + h) * D;
        prob.assign(p.seqlen_k, 0.0);
        std::fill(out_row.begin(), out_row.end(), 0.0);
        for (int64_t j = 0; j < p.seqlen_k; ++j) {
          if (x[j] == kNegInf) continue;
          prob[j] = std::exp(x[j] - row_lse);
          for (int64_t d = 0; d < D; ++d) out_row[d] += prob[j] * t.V(b, j, hk, d);
        }
        double dsum = 0;  // D_i = dO_i . O_i
        for (int64_t d = 0; d < D; ++d) dsum += dO[d] * out_row[d];
        double* dqi = &(*dq)[((b * p.seqlen_q + i) * p.num_heads + h) * D];
        for (int64_t j = 0; j < p.seqlen_k; ++j) {
          if (x[j] == kNegInf) continue;
          double dp = 0;
          for (int64_t d = 0; d < D; ++d) dp += dO[d] * t.V(b, j, hk, d);
          double ds = prob[j] * (dp - dsum);       // d loss / d x_j
          if (p.softcap > 0) ds *= 1.0 - th[j] * th[j];  // through c*tanh(s/c)
          ds *= p.scale;                             // through s = scale * q.k
          double* dkj = &(*dk)[((b * p.seqlen_k + j) * p.num_heads_k + hk) * D];
          double* dvj = &(*dv)[((b * p.seqlen_k + j) * p.num_heads_k + hk) * D];
          for (int64_t d = 0; d < D; ++d) {
            dqi[d] += ds * t.K(b, j, hk, d);
            dkj[d] += ds * t.Q(b, i, h, d);
            dvj[d] += prob[j] * dO[d];
          }
        }
      }
    }
}

}  // namespace

bool ReferenceVisible(const Mask& m, int64_t i, int64_t j, int64_t h) {
  bool right_ok = true;  // the right edge: causal or a right window, lifted by the prefix
  if (m.HasRight()) {
    const int64_t right = m.causal ? (m.window_right < 0 ? 0 : std::min<int64_t>(m.window_right, 0))
                                   : m.window_right;
    right_ok = j - i <= right || j < m.prefix;
  }
  const bool left_ok = !m.HasLeft() || j >= i - m.window_left;
  const bool same_doc = !m.HasDocuments() || DocIndex(m, i) == DocIndex(m, j);
  const bool main = right_ok && left_ok && same_doc;
  const bool sink = j < m.sink && right_ok && same_doc;  // sinks ignore the left window
  bool block_ok = true;  // the block pair, in head h (or the only head)
  if (m.blocks != nullptr) {
    const int64_t head = m.block_heads > 1 ? h : 0;
    block_ok = m.blocks[(head * m.block_rows + i / m.block_size) * m.block_cols +
                        j / m.block_size] != 0;
  }
  if (m.sink_part) return sink && !main && block_ok;
  return (main || sink) && block_ok;
}

void ReferenceForwardRow(const RefProblem& p, const float* q, const float* k, const float* v,
                         int64_t b, int64_t h, int64_t i, double* out_row, double* lse) {
  const Views<float> t{p, q, k, v};
  std::vector<double> x;
  RowScores(t, b, h, i, &x, nullptr);
  *lse = RowLse(x);
  for (int64_t d = 0; d < p.head_dim; ++d) out_row[d] = 0;
  if (*lse == kNegInf) return;
  const int64_t hk = h / (p.num_heads / p.num_heads_k);
  for (int64_t j = 0; j < p.seqlen_k; ++j) {
    if (x[j] == kNegInf) continue;
    const double pj = std::exp(x[j] - *lse);
    for (int64_t d = 0; d < p.head_dim; ++d) out_row[d] += pj * t.V(b, j, hk, d);
  }
}

void ReferenceForward(const RefProblem& p, const float* q, const float* k, const float* v,
                      std::vector<double>* out, std::vector<double>* lse) {
  ForwardImpl(p, q, k, v, out, lse);
}

void ReferenceForwardF64(const RefProblem& p, const double* q, const double* k, const double* v,
                         std::vector<double>* out, std::vector<double>* lse) {
  ForwardImpl(p, q, k, v, out, lse);
}

void ReferenceBackward(const RefProblem& p, const float* q, const float* k, const float* v,
                       const float* dout, std::vector<double>* dq, std::vector<double>* dk,
                       std::vector<double>* dv) {
  BackwardImpl(p, q, k, v, dout, dq, dk, dv);
}

void ReferenceBackwardF64(const RefProblem& p, const double* q, const double* k, const double* v,
                          const double* dout, std::vector<double>* dq, std::vector<double>* dk,
                          std::vector<double>* dv) {
  BackwardImpl(p, q, k, v, dout, dq, dk, dv);
}

}  // namespace ringattn
