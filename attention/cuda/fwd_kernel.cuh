// Forward flash attention (FlashAttention-2 loop order) for one query block
// x one key block, as described by AttnParams. A CTA owns FwdTraits::kBlockM
// query rows of one (batch, head); each warp owns 16 * kMTiles of them and
// keeps its scores, probabilities and output accumulator in registers:
//
//   for each non-empty key tile (skipped when no query of the CTA sees it):
//     S  = Q K^T                      mma, K via ldmatrix from swizzled smem
//     softcap, then the mask          only on partial / tail tiles (a block
//                                     mask's bits per element too)
//     m' = max(m, rowmax S); P = 2^(S*c - m'*c); l = l*2^(m-m') + rowsum P
//     O  = O * 2^(m-m') + P V          P packed to 16 bits in registers
//   out = O / l, lse = (m*c + log2 l) * ln 2   (c = scale * log2 e)
//
// K/V tiles are prefetched with cp.async one tile ahead into two stages, with
// one barrier per tile.
// Variants: dtype (bf16, fp16) x D (64, 128, 256) x softcap (template), masked
// tiles as a template branch inside; out_dtype (fp32, bf16, fp16) is read at
// run time in the epilogue. GQA maps head h to kv head h / (H / Hkv).
#pragma once

#include <cmath>
#include <type_traits>

#include "attention/cuda/device.cuh"
#include "attention/cuda/traits.h"

namespace ringattn::cuda::detail {

template <class Tr, DType kT, bool kCap>
RA_DEVICE void ForwardBody(const AttnParams& p, char* smem) {
  constexpr int kD = Tr::kD, kM = Tr::kBlockM, kN = Tr::kBlockN, kMT = Tr::kMTiles;
  constexpr int kThreads = Tr::kThreads;
  constexpr bool kQInRegs = Tr::kQInRegs;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Last query tiles first: under a causal mask they see the most keys, so
  // the longest CTAs start first and the tail of the grid is short.
  const int64_t tq = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t Sq = p.seqlen_q, Sk = p.seqlen_k;
  const int64_t hk = h / (p.num_heads / p.num_heads_k);
  const int64_t i0 = tq * kM;
  const int rows = static_cast<int>(Sq - i0 < kM ? Sq - i0 : kM);
  const Mask& mask = p.mask;
  const int64_t q_min = GlobalPos(p.q_pos, i0);
  const int64_t q_max = GlobalPos(p.q_pos, i0 + rows - 1);

  // The key tiles some row of this CTA may see, and which are unmasked;
  // with a block mask, tiles over off blocks only are skipped and tiles
  // over mixed blocks are partial.
  const TileRange tiles = KeyTiles<kN>(p, q_min, q_max);
  auto key_tile = [&](int t) { return NextKeyTile<kN>(p, tiles, t, h, q_min, q_max); };

  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem);
  auto sK = [&](int s) {
    return reinterpret_cast<uint16_t*>(smem + Tr::kQBytes + s * Tr::kStageBytes);
  };
  auto sV = [&](int s) {
    return reinterpret_cast<uint16_t*>(smem + Tr::kQBytes + s * Tr::kStageBytes + Tr::kTileBytes);
  };
  auto sKpos = [&](int s) {
    return reinterpret_cast<int64_t*>(smem + Tr::kQBytes + s * Tr::kStageBytes +
                                      2 * Tr::kTileBytes);
  };

  const uint16_t* q_ptr = static_cast<const uint16_t*>(p.q) + b * p.q_stride.batch +
                          i0 * p.q_stride.seq + h * p.q_stride.head;
  const uint16_t* k_head =
      static_cast<const uint16_t*>(p.k) + b * p.k_stride.batch + hk * p.k_stride.head;
  const uint16_t* v_head =
      static_cast<const uint16_t*>(p.v) + b * p.v_stride.batch + hk * p.v_stride.head;

  LoadTile<kM, kD, kThreads>(sQ, q_ptr, p.q_stride.seq, tid,
                             FirstRows<kM, kD, kThreads>(tid, rows));

  auto load_kv = [&](const TileStep& st, int s) {
    LoadKeyTile<kN, kD, kThreads>(p, st, k_head, v_head, i0, rows, h, sK(s), sV(s), sKpos(s),
                                  tid);
  };

  const TileStep first = key_tile(tiles.t_begin);
  if (first.t >= 0) load_kv(first, 0);
  CpAsyncCommit();

  // Scores in base 2: without softcap, x * mul with mul = scale * log2(e)
  // folded into the exponent's FFMA; with softcap the scores are turned into
  // cap2 * tanh(x * cap_in) first and mul = 1.
  const float mul = kCap ? 1.0f : p.scale * kLog2e;
  const float cap_in = kCap ? p.scale / p.softcap : 0.0f;
  const float cap2 = kCap ? p.softcap * kLog2e : 0.0f;

  const int warp_row0 = warp * 16 * kMT;
  // Global positions of the CTA's query rows, read by masked tiles only
  // (visible to all threads after the first barrier of the loop).
  int64_t* sQpos = reinterpret_cast<int64_t*>(smem + Tr::kQBytes + Tr::kStages * Tr::kStageBytes);
  for (int r = tid; r < kM; r += kThreads)
    sQpos[r] = GlobalPos(p.q_pos, i0 + (r < rows ? r : rows - 1));

  float acc_o[kMT][kD / 8][4];
  float m_run[kMT][2], l_run[kMT][2];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi) {
#pragma unroll
    for (int nd = 0; nd < kD / 8; ++nd)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc_o[mi][nd][c] = 0.0f;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      m_run[mi][hf] = -INFINITY;
      l_run[mi][hf] = 0.0f;
    }
  }
  uint32_t q_frag[kQInRegs ? kMT : 1][kQInRegs ? kD / 16 : 1][4];
  bool q_loaded = false;

  auto load_q_frag = [&](uint32_t(&a)[4], int mi, int kk) {
    LdMatrixX4(
        a, SmemAddr(sQ + Swz<kD>(warp_row0 + mi * 16 + (lane & 15), kk * 16 + ((lane >> 4) << 3))));
  };

  auto tile = [&](auto masked_tag, const TileStep& st, int s) {
    constexpr bool kMasked = decltype(masked_tag)::value;
    const uint16_t* sKs = sK(s);
    const uint16_t* sVs = sV(s);
    const int64_t j0 = int64_t{st.t} * kN;

    float acc_s[kMT][kN / 8][4];
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc_s[mi][nt][c] = 0.0f;

          // S = Q K^T.
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        if constexpr (kQInRegs) {
#pragma unroll
          for (int x = 0; x < 4; ++x) a[mi][x] = q_frag[mi][kk][x];
        } else {
          load_q_frag(a[mi], mi, kk);
        }
      }
#pragma unroll
      for (int np = 0; np < kN / 16; ++np) {
        uint32_t bk[4];
        LdMatrixX4(bk, SmemAddr(sKs + Swz<kD>(np * 16 + (lane & 7) + ((lane >> 4) << 3),
                                              kk * 16 + (((lane >> 3) & 1) << 3))));
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          Mma<kT>(acc_s[mi][2 * np], a[mi], bk[0], bk[1]);
          Mma<kT>(acc_s[mi][2 * np + 1], a[mi], bk[2], bk[3]);
        }
      }
    }

    // Softcap, then the mask: each row sees the key columns [cb, ce) of the
    // tile; the rest become -inf by select, so NaN there cannot leak.
    if constexpr (kCap) {
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc_s[mi][nt][c] = cap2 * tanhf(acc_s[mi][nt][c] * cap_in);
    }
    if constexpr (kMasked) {
      const int n = static_cast<int>(Sk - j0 < kN ? Sk - j0 : kN);
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int64_t qp = sQpos[warp_row0 + mi * 16 + (lane >> 2) + hf * 8];
          const PosRange keys = mask.KeyBounds(qp);
          int cb, ce;
          VisibleRange(sKpos(s), n, keys.lo, keys.hi, &cb, &ce);
#pragma unroll
          for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = nt * 8 + 2 * (lane & 3) + e;
              if (col < cb || col >= ce ||
                  (mask.HasBlocks() && !mask.ForHead(h).BlockOn(qp, sKpos(s)[col]))) {
                acc_s[mi][nt][2 * hf + e] = -INFINITY;
              }
            }
        }
    }

    // Online softmax; a row with no visible key so far keeps max -inf and
    // uses 0 in the exponent, so 2^(-inf) = 0 and nothing becomes NaN.
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt) {
          mx = fmaxf(mx, fmaxf(acc_s[mi][nt][2 * hf], acc_s[mi][nt][2 * hf + 1]));
        }
        mx = fmaxf(mx, ShflXor(mx, 1));
        mx = fmaxf(mx, ShflXor(mx, 2));
        const float m_new = fmaxf(m_run[mi][hf], mx);
        const float mb = (m_new == -INFINITY ? 0.0f : m_new) * mul;
        const float alpha = Exp2(m_run[mi][hf] * mul - mb);
        m_run[mi][hf] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pv = Exp2(fmaf(acc_s[mi][nt][2 * hf + e], mul, -mb));
            acc_s[mi][nt][2 * hf + e] = pv;
            sum += pv;
          }
        l_run[mi][hf] = l_run[mi][hf] * alpha + sum;
#pragma unroll
        for (int nd = 0; nd < kD / 8; ++nd) {
          acc_o[mi][nd][2 * hf] *= alpha;
          acc_o[mi][nd][2 * hf + 1] *= alpha;
        }
      }

      // O += P V, P from registers.
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        a[mi][0] = PackPair<kT>(acc_s[mi][2 * kk][0], acc_s[mi][2 * kk][1]);
        a[mi][1] = PackPair<kT>(acc_s[mi][2 * kk][2], acc_s[mi][2 * kk][3]);
        a[mi][2] = PackPair<kT>(acc_s[mi][2 * kk + 1][0], acc_s[mi][2 * kk + 1][1]);
        a[mi][3] = PackPair<kT>(acc_s[mi][2 * kk + 1][2], acc_s[mi][2 * kk + 1][3]);
      }
#pragma unroll
      for (int nd = 0; nd < kD / 16; ++nd) {
        uint32_t bv[4];
        LdMatrixX4Trans(bv, SmemAddr(sVs + Swz<kD>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                                   nd * 16 + ((lane >> 4) << 3))));
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          Mma<kT>(acc_o[mi][2 * nd], a[mi], bv[0], bv[1]);
          Mma<kT>(acc_o[mi][2 * nd + 1], a[mi], bv[2], bv[3]);
        }
      }
    }
  };

  // One barrier per tile: wait for this tile's loads, then the barrier
  // both publishes them and proves every warp is done with the other
  // stage, so the next tile's loads go there while this one computes.
  // Only the tile index is carried across the loop (fewer live registers);
  // its class is recomputed, two compares.
  int stage = 0;
  for (int t = first.t; t >= 0;) {
    const TileStep cur = key_tile(t);
    CpAsyncWait<0>();
    __syncthreads();
    const TileStep nxt = key_tile(t + 1);
    if (nxt.t >= 0) load_kv(nxt, stage ^ 1);
    CpAsyncCommit();
    if constexpr (kQInRegs) {
      if (!q_loaded) {
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
          for (int kk = 0; kk < kD / 16; ++kk) load_q_frag(q_frag[mi][kk], mi, kk);
        q_loaded = true;
      }
    }
    if (cur.masked()) {
      tile(std::true_type{}, cur, stage);
    } else {
      tile(std::false_type{}, cur, stage);
    }
    t = nxt.t;
    stage ^= 1;
  }
  CpAsyncWait<0>();

  // Epilogue: out = O / l (0 for a row that saw nothing), lse in natural log.
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = l_run[mi][hf];
      l += ShflXor(l, 1);
      l += ShflXor(l, 2);
      const int lr = warp_row0 + mi * 16 + (lane >> 2) + hf * 8;
      if (lr >= rows) continue;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      const int64_t i = i0 + lr;
      const int64_t esize = DTypeSize(p.out_dtype);
      char* orow = static_cast<char*>(p.out) +
                   (b * p.out_stride.batch + i * p.out_stride.seq + h * p.out_stride.head) * esize;
#pragma unroll
      for (int nd = 0; nd < kD / 8; ++nd) {
        StorePair(orow, p.out_dtype, nd * 8 + 2 * (lane & 3), acc_o[mi][nd][2 * hf] * inv,
                  acc_o[mi][nd][2 * hf + 1] * inv);
      }
      if ((lane & 3) == 0) {
        p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + i] =
            l > 0.0f ? (m_run[mi][hf] * mul + log2f(l)) * kLn2 : -INFINITY;
      }
    }
}

}  // namespace ringattn::cuda::detail
