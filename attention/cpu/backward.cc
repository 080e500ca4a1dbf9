// CPU flash attention backward (FlashAttention-2 algorithm). A work item is
// one (batch, kv head, key-tile class c mod C); it owns the dK/dV rows of its
// key tiles, so those need no reduction. For each key tile and each query
// head of the group and each visible query tile it recomputes P from the
// global lse and accumulates
//   dV += P^T dO,  dP = dO V^T,  dS = P * (dP - dsum) [* (1 - tanh^2)] * scale,
//   dK += dS^T Q,  dQ += dS K.
// The work runs in the transposed score domain (S^T is [keys][queries]) so
// that all five GEMMs read packed panels without a transpose:
//   S^T  = K (Q^T panel)        dV += dO^T-free: dV^T = dO P      (col-major)
//   dP^T = V (dO^T panel)       dK^T = Q dS      dQ^T += dS^T K^T (K^T panel)
// dQ is accumulated per item in a transposed buffer; when the key tiles of a
// kv head are split over C > 1 items (few heads, many threads), each class
// has its own buffer and they are summed in class order: deterministic.
// Non-finite K or V inside a partial tile switches dP and dQ to loops over
// the visible entries only (see forward.cc for why).
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "attention/cpu/gemm.h"
#include "attention/cpu/kernels.h"
#include "attention/cpu/pack.h"
#include "attention/cpu/scratch.h"
#include "base/status.h"

namespace ringattn::cpu {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

}  // namespace

absl::Status Backward(const AttnParams& p, int num_threads) {
  RETURN_IF_ERROR(CheckParams(p, /*backward=*/true));
  ASSIGN_OR_RETURN(const TileOps* const ops, ChooseTileOps());
  if (p.mask.HasSink()) {
    // The two parts' gradients add up (disjoint keys, the same global lse).
    AttnParams part = p;
    part.mask = p.mask.MainPart();
    RETURN_IF_ERROR(Backward(part, num_threads));
    if (!p.HasSinkKeys()) return absl::OkStatus();
    part.mask = p.mask.SinkPart();
    return Backward(part, num_threads);
  }
  constexpr int64_t kM = BackwardTraits::kBlockM;  // queries per tile
  constexpr int64_t kN = BackwardTraits::kBlockN;  // keys per tile
  const int64_t B = p.batch, Sq = p.seqlen_q, Sk = p.seqlen_k, H = p.num_heads,
                Hk = p.num_heads_k, D = p.head_dim, G = p.GroupSize();
  const int64_t ntq = CeilDiv(Sq, kM), ntk = CeilDiv(Sk, kN);
  if (ntq == 0 || ntk == 0) return absl::OkStatus();
  const bool has_softcap = p.softcap > 0.0f;
  const float q_mul = has_softcap ? p.scale / p.softcap : p.scale * kLog2e;
  const float cap2 = p.softcap * kLog2e;
  const std::vector<int64_t> qpos = ExpandPositions(p.q_pos, Sq, ntq * kM);
  const std::vector<int64_t> kpos = ExpandPositions(p.k_pos, Sk, ntk * kN);

  // Query side, per (b, h): Q rows, scaled Q^T panels, dO rows, dO^T panels,
  // lse in base 2 (+inf for padding and fully masked rows, so P = 0) and dsum.
  const int64_t qrows = B * H * ntq * kM;
  auto qn = Uninit<float>(qrows * D);
  auto qt = Uninit<float>(qrows * D);
  auto don = Uninit<float>(qrows * D);
  auto dot = Uninit<float>(qrows * D);
  auto lse2 = Uninit<float>(qrows);
  auto dsum = Uninit<float>(qrows);
  // Key side, per (b, hk): K rows, K^T panels, V rows, a non-finite flag.
  const int64_t panels = B * Hk * ntk;
  auto kn = Uninit<float>(panels * kN * D);
  auto ktp = Uninit<float>(panels * D * kN);
  auto vn = Uninit<float>(panels * kN * D);
  auto nonfinite = Uninit<uint8_t>(panels);

  // Key tiles of one kv head are dealt round-robin to `classes` items.
  const int64_t classes = std::clamp<int64_t>(CeilDiv(num_threads, B * Hk), 1, ntk);
  // dQ^T per class: [classes][B*H*ntq][D][kM].
  auto dqt = Uninit<float>(classes * qrows * D);

#pragma omp parallel num_threads(num_threads)
  {
#pragma omp for schedule(static) nowait
    for (int64_t it = 0; it < B * H * ntq; ++it) {
      const int64_t b = it / (H * ntq), h = (it / ntq) % H, t = it % ntq;
      const int64_t rows = std::min(kM, Sq - t * kM);
      float* qrow = qn.get() + it * kM * D;
      float* drow = don.get() + it * kM * D;
      for (int64_t r = 0; r < kM; ++r) {
        const int64_t i = t * kM + r;
        float* lse_r = lse2.get() + it * kM + r;
        if (r < rows) {
          LoadRow(p.q, p.dtype, Offset(p.q_stride, b, i, h), D, 1.0f, qrow + r * D);
          LoadRow(p.dout, p.dtype, Offset(p.dout_stride, b, i, h), D, 1.0f, drow + r * D);
          const int64_t li = b * p.lse_batch_stride + h * p.lse_head_stride + i;
          const float lse = p.lse[li];
          *lse_r = lse == -INFINITY ? INFINITY : lse * kLog2e;
          dsum[it * kM + r] = p.dsum[li];
        } else {
          std::fill(qrow + r * D, qrow + (r + 1) * D, 0.0f);
          std::fill(drow + r * D, drow + (r + 1) * D, 0.0f);
          *lse_r = INFINITY;
          dsum[it * kM + r] = 0.0f;
        }
      }
      float* qpanel = qt.get() + it * D * kM;
      Transpose(qrow, kM, D, D, qpanel, kM);
      for (int64_t x = 0; x < D * kM; ++x) qpanel[x] *= q_mul;
      Transpose(drow, kM, D, D, dot.get() + it * D * kM, kM);
    }
#pragma omp for schedule(static)
    for (int64_t it = 0; it < panels; ++it) {
      const int64_t b = it / (Hk * ntk), hk = (it / ntk) % Hk, t = it % ntk;
      const int64_t n = std::min(kN, Sk - t * kN);
      nonfinite[it] = PackKeyTile(p, b, hk, t * kN, n, kN, kn.get() + it * kN * D,
                                  vn.get() + it * kN * D, ktp.get() + it * D * kN);
    }
  }
  std::fill(dqt.get(), dqt.get() + classes * qrows * D, 0.0f);

  // Column-major GEMMs (see the file comment for the operand layouts).
  const SmallGemm gemm_st(kM, kN, D, kM, D, kM, 0.0f);   // S^T  [kN][kM]
  const SmallGemm gemm_dpt(kM, kN, D, kM, D, kM, 0.0f);  // dP^T [kN][kM]
  const SmallGemm gemm_dkv(D, kN, kM, D, kM, D, 1.0f);   // dV, dK [kN][D]
  const SmallGemm gemm_dqt(kM, D, kN, kM, kN, kM, 1.0f); // dQ^T [D][kM]
  const int64_t items = B * Hk * classes;
  // Key tiles per pass over the query side: each (head, query tile)'s five
  // panels (Q, Q^T, dO, dO^T, dQ^T: 160 KiB at D = 128) are read once for
  // `pass` key tiles instead of once per tile, while the pass's key side
  // (K, K^T, V, dK, dV: 160 KiB per tile at D = 128) stays in two thirds of
  // L2: 8 tiles on a 2 MiB L2 (docs/PERF.md). Every dQ^T and dK/dV tile sums
  // its terms in the same order whatever the pass, so results do not depend
  // on it.
  const int64_t pass = std::clamp<int64_t>(
      L2CacheBytes() * 2 / 3 / (5 * kN * D * int64_t{sizeof(float)}), 1, 16);
#pragma omp parallel num_threads(num_threads)
  {
    auto st = Uninit<float>(kN * kM);   // scores, then P^T
    auto th = Uninit<float>(kN * kM);   // tanh of the softcap
    auto dpt = Uninit<float>(kN * kM);  // dP^T, then dS^T
    auto dk_pass = Uninit<float>(pass * kN * D);
    auto dv_pass = Uninit<float>(pass * kN * D);
    int64_t ib[kN], ie[kN];
    int64_t qblock[kM];  // a block-masked partial tile: each query's block row
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / (Hk * classes), hk = (item / classes) % Hk, c = item % classes;
      float* dq_class = dqt.get() + c * qrows * D;
      // The item's key tiles c, c + classes, ... in passes of `pass` tiles.
      for (int64_t first = c; first < ntk; first += pass * classes) {
        const int64_t in_pass = std::min(pass, CeilDiv(ntk - first, classes));
        std::fill(dk_pass.get(), dk_pass.get() + in_pass * kN * D, 0.0f);
        std::fill(dv_pass.get(), dv_pass.get() + in_pass * kN * D, 0.0f);
        for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
          const Mask mask = p.mask.ForHead(h);
          for (int64_t tq = 0; tq < ntq; ++tq) {
            for (int64_t u = 0; u < in_pass; ++u) {
              const int64_t t = first + u * classes;
              const int64_t j0 = t * kN, n = std::min(kN, Sk - j0);
              const int64_t panel = (b * Hk + hk) * ntk + t;
              const float* krow = kn.get() + panel * kN * D;
              const float* vrow = vn.get() + panel * kN * D;
              const float* kpanel = ktp.get() + panel * D * kN;
              float* dk = dk_pass.get() + u * kN * D;
              float* dv = dv_pass.get() + u * kN * D;
              const int64_t i0 = tq * kM, rows = std::min(kM, Sq - i0);
              const TileClass cls =
                  mask.Classify(qpos[i0], qpos[i0 + rows - 1], kpos[j0], kpos[j0 + n - 1]);
              if (cls == TileClass::kEmpty) continue;
              const bool by_block = cls == TileClass::kPartial && mask.HasBlocks();
              if (by_block) {
                for (int64_t i = 0; i < rows; ++i) {
                  qblock[i] = qpos[i0 + i] / mask.block_size * mask.block_cols;
                }
              }
              // Whether the pair (row i, column j) of this tile is in an on block.
              auto block_on = [&](int64_t i, int64_t j) {
                return mask.blocks[qblock[i] + kpos[j0 + j] / mask.block_size] != 0;
              };
              const int64_t qi = (b * H + h) * ntq + tq;
              const float* lse_t = lse2.get() + qi * kM;
              const float* dsum_t = dsum.get() + qi * kM;
              const bool safe = cls == TileClass::kPartial && nonfinite[panel];
              gemm_st(qt.get() + qi * D * kM, krow, st.get());
              if (!safe) gemm_dpt(dot.get() + qi * D * kM, vrow, dpt.get());
              if (has_softcap) ops->softcap(st.get(), th.get(), kN * kM, cap2);
              for (int64_t j = 0; j < kN; ++j) {
                float* dj = dpt.get() + j * kM;
                ib[j] = 0;
                ie[j] = j < n ? kM : 0;
                if (j < n && cls == TileClass::kPartial) {
                  LocalInterval(mask.QueryBounds(kpos[j0 + j]), qpos.data() + i0, rows, &ib[j],
                                &ie[j]);
                }
                if (safe) {
                  for (int64_t i = ib[j]; i < ie[j]; ++i) {
                    const float* dorow = don.get() + (qi * kM + i) * D;
                    float acc = 0.0f;
                    for (int64_t d = 0; d < D; ++d) acc += dorow[d] * vrow[j * D + d];
                    dj[i] = acc;
                  }
                }
              }
              // P = exp2(s2 - lse2); dS = P * (dP - dsum) [* (1 - tanh^2)] * scale.
              // Entries outside [ib, ie) are then set to 0 by select, not by
              // multiplication, so NaN there stays out.
              ops->probs_and_grads(st.get(), dpt.get(), has_softcap ? th.get() : nullptr,
                                   lse_t, dsum_t, kN, kM, p.scale);
              for (int64_t j = 0; j < kN; ++j) {
                float* sj = st.get() + j * kM;
                float* dj = dpt.get() + j * kM;
                if (ib[j] > 0 || ie[j] < kM) {
                  for (int64_t i = 0; i < kM; ++i) {
                    if (i >= ib[j] && i < ie[j]) continue;
                    sj[i] = 0.0f;
                    dj[i] = 0.0f;
                  }
                }
                if (by_block) {
                  for (int64_t i = ib[j]; i < ie[j]; ++i) {
                    if (block_on(i, j)) continue;
                    sj[i] = 0.0f;
                    dj[i] = 0.0f;
                  }
                }
              }
              gemm_dkv(don.get() + qi * kM * D, st.get(), dv);
              gemm_dkv(qn.get() + qi * kM * D, dpt.get(), dk);
              float* dq_t = dq_class + qi * D * kM;
              if (safe) {
                for (int64_t j = 0; j < n; ++j)
                  for (int64_t i = ib[j]; i < ie[j]; ++i) {
                    if (by_block && !block_on(i, j)) continue;
                    const float ds = dpt[j * kM + i];
                    for (int64_t d = 0; d < D; ++d) dq_t[d * kM + i] += ds * krow[j * D + d];
                  }
              } else {
                gemm_dqt(dpt.get(), kpanel, dq_t);
              }
            }
          }
        }
        for (int64_t u = 0; u < in_pass; ++u) {
          const int64_t j0 = (first + u * classes) * kN, n = std::min(kN, Sk - j0);
          const float* dk = dk_pass.get() + u * kN * D;
          const float* dv = dv_pass.get() + u * kN * D;
          for (int64_t j = 0; j < n; ++j) {
            const int64_t off = ((b * Sk + j0 + j) * Hk + hk) * D;
            for (int64_t d = 0; d < D; ++d) {
              p.dk_accum[off + d] += dk[j * D + d];
              p.dv_accum[off + d] += dv[j * D + d];
            }
          }
        }
      }
    }
  }

  // dq_accum[b, i, h, :] += sum over classes (in order) of dQ^T.
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t it = 0; it < B * H * ntq; ++it) {
    const int64_t b = it / (H * ntq), h = (it / ntq) % H, t = it % ntq;
    const int64_t rows = std::min(kM, Sq - t * kM);
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = p.dq_accum + ((b * Sq + t * kM + r) * H + h) * D;
      for (int64_t d = 0; d < D; ++d) {
        float acc = 0.0f;
        for (int64_t c = 0; c < classes; ++c) acc += dqt[c * qrows * D + it * D * kM + d * kM + r];
        dst[d] += acc;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace ringattn::cpu
