// Forward flash attention on Hopper (sm_90a): the same contract as
// fwd_kernel.cuh (one query block x one key block as AttnParams describes,
// every mask, GQA, softcap, fp32 lse in natural log, out in any dtype), with
// Hopper's instructions and a warp-specialised CTA (FwdSm90Traits):
//
//   producer warpgroup    TMA loads of the CTA's Q (once) and of each K and
//                         V tile into a 2-stage ring, completing on
//                         mbarriers; for masked tiles the keys' positions,
//                         and for partial tiles the V rows of keys that no
//                         query of the CTA sees set to zero (so that NaN
//                         stored there cannot reach an output: 0 * NaN).
//   consumer warpgroups   64 query rows each. S = Q K^T with wgmma (both
//                         operands from shared memory), softcap and mask,
//                         online softmax in registers, O += P V with wgmma
//                         (P from registers, V transposed from shared
//                         memory). The GEMM S' = Q K'^T of the next tile is
//                         issued before O += P V of this one, and the
//                         softmax of S' runs while P V is in flight
//                         (intra-warpgroup overlap); the two consumer
//                         warpgroups run free, so one's softmax overlaps
//                         the other's GEMMs as well.
//
// Tile order, tile classes (empty, partial, tail) and the mask arithmetic
// are fwd_kernel.cuh's (device.cuh), so both kernels skip and mask the same
// tiles. Barriers (8 bytes each in shared memory), per stage s:
//   k_full[s], v_full[s]  the producer's arrive with the tile's byte count,
//                         then the TMA bytes (phase per use of the stage);
//   v_ready[s]            the 128 producer threads, after zeroing a partial
//                         tile's dead V rows (at once for other tiles);
//   empty[s]              the 256 consumer threads, after their last read.
#pragma once

#include <cmath>
#include <type_traits>

#include "attention/cuda/device.cuh"
#include "attention/cuda/ptx_sm90.cuh"
#include "attention/cuda/tensor_map.h"
#include "attention/cuda/traits.h"

namespace ringattn::cuda::detail {

// The kernel's parameter: the call and the tensor maps of q, k and v.
struct FwdSm90Params {
  AttnParams p;
  TensorMap q_map, k_map, v_map;
};

// What the three maps describe (host side): boxes of kBlockM query rows of
// q and kBlockN key rows of k and v. The launcher encodes them for the
// driver; the emulator uses them as they are.
template <class Tr>
inline void FwdSm90MapShapes(const AttnParams& p, TileMapShape* q, TileMapShape* k,
                             TileMapShape* v) {
  *q = TileMapOf(p.q, p.q_stride, p.batch, p.seqlen_q, p.num_heads, Tr::kD, Tr::kBlockM);
  *k = TileMapOf(p.k, p.k_stride, p.batch, p.seqlen_k, p.num_heads_k, Tr::kD, Tr::kBlockN);
  *v = TileMapOf(p.v, p.v_stride, p.batch, p.seqlen_k, p.num_heads_k, Tr::kD, Tr::kBlockN);
}

template <class Tr, DType kT, bool kCap>
RA_DEVICE void ForwardSm90Body(const FwdSm90Params& prm, char* smem_raw) {
  const AttnParams& p = prm.p;
  constexpr int kD = Tr::kD, kM = Tr::kBlockM, kN = Tr::kBlockN, kP = Tr::kPanels;
  constexpr int kOChunkN = Tr::kOChunkN, kOChunks = Tr::kOChunks;
  // Panels must sit on 1024-byte boundaries for the swizzle: align the base.
  char* smem = smem_raw + ((1024 - (SmemAddr(smem_raw) & 1023)) & 1023);
  const uint32_t s0 = SmemAddr(smem);
  const uint32_t sQ = s0;
  auto sK = [&](int s) { return s0 + Tr::KOffset(s); };
  auto sV = [&](int s) { return s0 + Tr::VOffset(s); };
  auto sKpos = [&](int s) { return reinterpret_cast<int64_t*>(smem + Tr::kPosOffset) + s * kN; };
  // With a block mask: each key's block index (position / block_size).
  auto sKblk = [&](int s) { return reinterpret_cast<int32_t*>(smem + Tr::kBlkOffset) + s * kN; };
  const uint32_t bars = s0 + Tr::kBarOffset;
  const uint32_t q_full = bars;
  auto k_full = [&](int s) { return bars + 8 * (1 + s); };
  auto v_full = [&](int s) { return bars + 8 * (1 + Tr::kStages + s); };
  auto v_ready = [&](int s) { return bars + 8 * (1 + 2 * Tr::kStages + s); };
  auto empty = [&](int s) { return bars + 8 * (1 + 3 * Tr::kStages + s); };

  const int tid = threadIdx.x, wg = tid / 128, lane = tid & 31;
  // Last query tiles first, as fwd_kernel.cuh (the longest CTAs start first).
  const int64_t tq = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t Sq = p.seqlen_q, Sk = p.seqlen_k;
  const int64_t hk = h / (p.num_heads / p.num_heads_k);
  const int64_t i0 = tq * kM;
  const int rows = static_cast<int>(Sq - i0 < kM ? Sq - i0 : kM);
  const Mask& mask = p.mask;
  const int64_t q_min = GlobalPos(p.q_pos, i0);
  const int64_t q_max = GlobalPos(p.q_pos, i0 + rows - 1);
  const TileRange tiles = KeyTiles<kN>(p, q_min, q_max);
  auto key_tile = [&](int t) { return NextKeyTile<kN>(p, tiles, t, h, q_min, q_max); };

  if (tid == 0) {
    MbarInit(q_full, 1);
    for (int s = 0; s < Tr::kStages; ++s) {
      MbarInit(k_full(s), 1);
      MbarInit(v_full(s), 1);
      MbarInit(v_ready(s), 128);
      MbarInit(empty(s), 128 * Tr::kConsumers);
    }
    FenceBarrierInit();
  }
  __syncthreads();

  if (wg == 0) {
    // ------------------------------------------------------------ producer
    SetMaxRegsDec<Tr::kProducerRegs>();
    const int32_t bi = static_cast<int32_t>(b), hi = static_cast<int32_t>(h);
    const int32_t hki = static_cast<int32_t>(hk);
    if (tid == 0) {
      MbarArriveExpectTx(q_full, Tr::kQBytes);
      for (int pn = 0; pn < kP; ++pn) {
        TmaLoad4D(sQ + pn * kM * 128, &prm.q_map, 64 * pn, static_cast<int32_t>(i0), hi, bi,
                  q_full);
      }
    }
    // V of tile n is made ready (dead rows zeroed on a partial tile, then
    // v_ready) after the loads of tile n + 1 are issued, so that waiting
    // for a partial tile's V never delays the next tile's loads.
    auto make_v_ready = [&](int k, bool partial, bool dead) {  // tile k's V
      const int s = k & 1;
      const uint32_t use = static_cast<uint32_t>(k >> 1);
      if (partial) {
        MbarWait(v_full(s), use & 1);
        if (dead) {
          // A whole 128-byte row of every panel: the swizzle only permutes
          // chunks within the row.
          for (int pn = 0; pn < kP; ++pn) {
            uint4* row =
                reinterpret_cast<uint4*>(smem + Tr::VOffset(s) + pn * kN * 128 + tid * 128);
#pragma unroll
            for (int c = 0; c < 8; ++c) row[c] = make_uint4(0, 0, 0, 0);
          }
        }
        FenceProxyAsync();
      }
      MbarArrive(v_ready(s));
    };
    int n = 0;  // tiles issued so far
    bool prev_partial = false, prev_dead = false;  // tile n - 1, when n > 0
    for (TileStep st = key_tile(tiles.t_begin); st.t >= 0; st = key_tile(st.t + 1), ++n) {
      const int s = n & 1;
      const uint32_t use = static_cast<uint32_t>(n >> 1);
      // Tile n - 2 released its stage only after its V was ready, which the
      // previous iteration made it.
      if (n >= Tr::kStages) MbarWait(empty(s), (use - 1) & 1);
      const int64_t j0 = int64_t{st.t} * kN;
      const int cnt = static_cast<int>(Sk - j0 < kN ? Sk - j0 : kN);
      // Thread r owns key row r of the tile (kBlockN <= 128).
      bool dead = false;
      if (st.masked() && tid < cnt) {
        const int64_t kp = GlobalPos(p.k_pos, j0 + tid);
        sKpos(s)[tid] = kp;
        if (mask.HasBlocks()) sKblk(s)[tid] = static_cast<int32_t>(kp / mask.block_size);
        dead = st.partial && !KeyLive(mask, p.q_pos, i0, i0 + rows, kp, h, h + 1);
      }
      NamedBarrierSync(1, 128);  // positions stored before the arrive publishes them
      if (tid == 0) {
        const int32_t j = static_cast<int32_t>(j0);
        MbarArriveExpectTx(k_full(s), Tr::kTileBytes);
        for (int pn = 0; pn < kP; ++pn) {
          TmaLoad4D(sK(s) + pn * kN * 128, &prm.k_map, 64 * pn, j, hki, bi, k_full(s));
        }
        MbarArriveExpectTx(v_full(s), Tr::kTileBytes);
        for (int pn = 0; pn < kP; ++pn) {
          TmaLoad4D(sV(s) + pn * kN * 128, &prm.v_map, 64 * pn, j, hki, bi, v_full(s));
        }
      }
      if (n > 0) make_v_ready(n - 1, prev_partial, prev_dead);
      prev_partial = st.partial;
      prev_dead = dead;
    }
    if (n > 0) make_v_ready(n - 1, prev_partial, prev_dead);
  } else {
    // ------------------------------------------------------------ consumers
    SetMaxRegsInc<Tr::kConsumerRegs>();
    const int cw = wg - 1;
    const int warp_row0 = cw * 64 + ((tid >> 5) & 3) * 16;  // the warp's 16 rows in the CTA
    // Global positions of this thread's two rows (g and g + 8 of the warp),
    // read by masked tiles; rows past the end take the last row's.
    int64_t qpos[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = warp_row0 + (lane >> 2) + 8 * hf;
      qpos[hf] = GlobalPos(p.q_pos, i0 + (r < rows ? r : rows - 1));
    }
    // With a block mask: the row of block bits of each of the two rows (this
    // head's), indexed by a key's block (sKblk), so that the per-element
    // test is two loads, not two 64-bit divisions.
    const uint8_t* block_row[2] = {nullptr, nullptr};
    if (mask.HasBlocks()) {
      const Mask hm = mask.ForHead(h);
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        block_row[hf] = hm.blocks + (qpos[hf] / hm.block_size) * hm.block_cols;
      }
    }

    const float mul = kCap ? 1.0f : p.scale * kLog2e;
    const float cap_in = kCap ? p.scale / p.softcap : 0.0f;
    const float cap2 = kCap ? p.softcap * kLog2e : 0.0f;

    float acc_s[kN / 2];
    float acc_o[kOChunks][kOChunkN / 2];
    uint32_t p_frag[kN / 16][4];
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
#pragma unroll
    for (int oc = 0; oc < kOChunks; ++oc)
#pragma unroll
      for (int i = 0; i < kOChunkN / 2; ++i) acc_o[oc][i] = 0.0f;

    // S = Q K^T of stage s: A = this warpgroup's 64 rows of Q, B = the tile's
    // keys, both K-major; k16 step kk is 32 bytes into panel kk / 4.
    auto issue_s = [&](int s) {
      FenceRegs(acc_s);  // no register access moves between here and the wgmma
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const uint32_t off = (kk % 4) * 32;
        const uint64_t da = SmemDesc(sQ + (kk / 4) * kM * 128 + cw * 64 * 128 + off, 16, 1024);
        const uint64_t db = SmemDesc(sK(s) + (kk / 4) * kN * 128 + off, 16, 1024);
        WgmmaSS<kN, kT>(acc_s, da, db, /*accumulate=*/kk > 0);
      }
      WgmmaCommit();
      FenceRegs(acc_s);
    };
    // O += P V of stage s: A = P (registers), B = V rows 16 kk.. (MN-major:
    // 64-column panels LBO apart, 8-row groups 1024 bytes apart).
    auto issue_pv = [&](int s) {
#pragma unroll
      for (int oc = 0; oc < kOChunks; ++oc) FenceRegs(acc_o[oc]);
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) FenceRegs(p_frag[kk]);
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk)
#pragma unroll
        for (int oc = 0; oc < kOChunks; ++oc) {
          const uint64_t db =
              SmemDesc(sV(s) + (oc * kOChunkN / 64) * kN * 128 + kk * 16 * 128, kN * 128, 1024);
          WgmmaRS<kOChunkN, kT>(acc_o[oc], p_frag[kk], db, /*accumulate=*/true);
        }
      WgmmaCommit();
#pragma unroll
      for (int oc = 0; oc < kOChunks; ++oc) FenceRegs(acc_o[oc]);
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) FenceRegs(p_frag[kk]);
    };

    // Softcap, mask and online softmax of acc_s (tile st, stage s) in place:
    // acc_s becomes P in fp32, l is updated, and alpha returns the factor
    // that the output accumulator still owes (applied once P V is done).
    auto softmax = [&](auto masked_tag, const TileStep& st, int s, float(&alpha)[2]) {
      constexpr bool kMasked = decltype(masked_tag)::value;
      if constexpr (kCap) {
#pragma unroll
        for (int i = 0; i < kN / 2; ++i) acc_s[i] = cap2 * tanhf(acc_s[i] * cap_in);
      }
      if constexpr (kMasked) {
        const int64_t j0 = int64_t{st.t} * kN;
        const int n = static_cast<int>(Sk - j0 < kN ? Sk - j0 : kN);
        const int64_t* kpos = sKpos(s);
        const int32_t* kblk = sKblk(s);
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const PosRange keys = mask.KeyBounds(qpos[hf]);
          int cb, ce;
          VisibleRange(kpos, n, keys.lo, keys.hi, &cb, &ce);
#pragma unroll
          for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = nt * 8 + 2 * (lane & 3) + e;
              if (col < cb || col >= ce || (block_row[hf] != nullptr && !block_row[hf][kblk[col]])) {
                acc_s[nt * 4 + 2 * hf + e] = -INFINITY;
              }
            }
        }
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt) {
          mx = fmaxf(mx, fmaxf(acc_s[nt * 4 + 2 * hf], acc_s[nt * 4 + 2 * hf + 1]));
        }
        mx = fmaxf(mx, ShflXor(mx, 1));
        mx = fmaxf(mx, ShflXor(mx, 2));
        const float m_new = fmaxf(m_run[hf], mx);
        const float mb = (m_new == -INFINITY ? 0.0f : m_new) * mul;
        alpha[hf] = Exp2(m_run[hf] * mul - mb);
        m_run[hf] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pv = Exp2(fmaf(acc_s[nt * 4 + 2 * hf + e], mul, -mb));
            acc_s[nt * 4 + 2 * hf + e] = pv;
            sum += pv;
          }
        l_run[hf] = l_run[hf] * alpha[hf] + sum;
      }
    };
    auto softmax_of = [&](const TileStep& st, int s, float(&alpha)[2]) {
      if (st.masked()) {
        softmax(std::true_type{}, st, s, alpha);
      } else {
        softmax(std::false_type{}, st, s, alpha);
      }
    };
    // P to 16-bit A fragments: k16 step kk = the n8 tiles 2kk and 2kk + 1.
    auto pack_p = [&]() {
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        p_frag[kk][0] = PackPair<kT>(acc_s[8 * kk + 0], acc_s[8 * kk + 1]);
        p_frag[kk][1] = PackPair<kT>(acc_s[8 * kk + 2], acc_s[8 * kk + 3]);
        p_frag[kk][2] = PackPair<kT>(acc_s[8 * kk + 4], acc_s[8 * kk + 5]);
        p_frag[kk][3] = PackPair<kT>(acc_s[8 * kk + 6], acc_s[8 * kk + 7]);
      }
    };

    MbarWait(q_full, 0);  // also when no tile is seen: no load may outlive the CTA
    TileStep cur = key_tile(tiles.t_begin);
    if (cur.t >= 0) {
      MbarWait(k_full(0), 0);
      issue_s(0);
      WgmmaWait<0>();
      FenceRegs(acc_s);
      float alpha[2];
      softmax_of(cur, 0, alpha);  // the output is still zero: alpha is not needed
      pack_p();
    }
    for (int n = 0; cur.t >= 0; ++n) {
      const int s = n & 1, s2 = (n + 1) & 1;
      const uint32_t ph = (n >> 1) & 1, ph2 = ((n + 1) >> 1) & 1;
      const TileStep nxt = key_tile(cur.t + 1);
      float alpha[2] = {1.0f, 1.0f};
      // Each branch issues, waits and reads in straight-line code, so that
      // ptxas can see which wgmma group a wait retires (across a branch it
      // serialises the GEMMs instead: warning C7514).
      if (nxt.t >= 0) {
        MbarWait(k_full(s2), ph2);
        issue_s(s2);
        MbarWait(v_full(s), ph);
        MbarWait(v_ready(s), ph);
        issue_pv(s);
        WgmmaWait<1>();  // S' is done; P V may still run
        FenceRegs(acc_s);
        softmax_of(nxt, s2, alpha);
      } else {
        MbarWait(v_full(s), ph);
        MbarWait(v_ready(s), ph);
        issue_pv(s);
      }
      WgmmaWait<0>();
#pragma unroll
      for (int oc = 0; oc < kOChunks; ++oc) FenceRegs(acc_o[oc]);
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) FenceRegs(p_frag[kk]);  // P's reads are over
      MbarArrive(empty(s));  // this warpgroup is done with stage s
      if (nxt.t >= 0) {
#pragma unroll
        for (int oc = 0; oc < kOChunks; ++oc)
#pragma unroll
          for (int j = 0; j < kOChunkN / 8; ++j) {
            acc_o[oc][4 * j + 0] *= alpha[0];
            acc_o[oc][4 * j + 1] *= alpha[0];
            acc_o[oc][4 * j + 2] *= alpha[1];
            acc_o[oc][4 * j + 3] *= alpha[1];
          }
        pack_p();
      }
      cur = nxt;
    }

    // Epilogue: out = O / l (0 for a row that saw nothing), lse in natural log.
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = l_run[hf];
      l += ShflXor(l, 1);
      l += ShflXor(l, 2);
      const int lr = warp_row0 + (lane >> 2) + 8 * hf;
      if (lr >= rows) continue;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      const int64_t i = i0 + lr;
      char* orow = static_cast<char*>(p.out) +
                   (b * p.out_stride.batch + i * p.out_stride.seq + h * p.out_stride.head) *
                       DTypeSize(p.out_dtype);
#pragma unroll
      for (int oc = 0; oc < kOChunks; ++oc)
#pragma unroll
        for (int j = 0; j < kOChunkN / 8; ++j) {
          StorePair(orow, p.out_dtype, oc * kOChunkN + 8 * j + 2 * (lane & 3),
                    acc_o[oc][4 * j + 2 * hf] * inv, acc_o[oc][4 * j + 2 * hf + 1] * inv);
        }
      if ((lane & 3) == 0) {
        p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + i] =
            l > 0.0f ? (m_run[hf] * mul + log2f(l)) * kLn2 : -INFINITY;
      }
    }
  }
}

}  // namespace ringattn::cuda::detail
