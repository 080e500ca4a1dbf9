// Backward flash attention (FlashAttention-2 algorithm) for one query block
// x one key block, as described by AttnParams; lse is the GLOBAL lse of the
// query rows and dsum = rowsum(dO * O) from the RowDot pre-pass.
//
// BackwardKernel: a CTA owns BwdTraits::kBlockN keys of one (batch, kv
// head), 16 per warp (per group of kDSplit warps at D=256, each owning a
// slice of dK/dV's columns), and loops over the query heads of its group and the
// query tiles that may see its keys, recomputing P from lse. It works in
// the transposed score domain, so that P^T and dS^T sit in registers as the
// A operands of dV and dK:
//   S^T  = K Q^T,  P^T = 2^(S^T * c - lse2)          (c = scale * log2 e)
//   dP^T = V dO^T, dS^T = P^T * (dP^T - dsum) [* (1 - tanh^2)] * scale
//   dV  += P^T dO,  dK += dS^T Q                      (registers, whole sweep)
//   dQ  += dS K     (fast mode: dS^T through shared memory, fp32 atomics)
// dK and dV are owned by the CTA and added to the accumulators once at the
// end, without atomics.
//
// BackwardDqKernel (deterministic mode): a CTA owns kBlockM query rows and
// loops over key tiles like the forward, recomputing S and dP, and adds
// dQ = dS K to the accumulator once at the end: no atomics, fixed order.
//
// Variants: dtype (bf16, fp16) x D (64, 128, 256) x softcap (template);
// masked tiles as a template branch inside.
#pragma once

#include <cmath>
#include <type_traits>

#include "attention/cuda/device.cuh"
#include "attention/cuda/traits.h"

namespace ringattn::cuda::detail {

template <class Tr, DType kT, bool kCap>
RA_DEVICE void BackwardBody(const AttnParams& p, bool compute_dq, char* smem) {
  constexpr int kD = Tr::kD, kM = Tr::kBlockM, kN = Tr::kBlockN, kThreads = Tr::kThreads;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t tk = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int64_t Sq = p.seqlen_q, Sk = p.seqlen_k, H = p.num_heads, Hk = p.num_heads_k;
  const int64_t G = H / Hk;
  const int64_t j0 = tk * kN;
  const int n = static_cast<int>(Sk - j0 < kN ? Sk - j0 : kN);
  const Mask& mask = p.mask;
  const int64_t k_min = GlobalPos(p.k_pos, j0);
  const int64_t k_max = GlobalPos(p.k_pos, j0 + n - 1);

  // The query tiles that may see some key of the tile, and which are unmasked.
  const TileRange tiles = QueryTiles<kM>(p, k_min, k_max);
  if (tiles.empty()) return;  // no query sees these keys: nothing to add

  // Work items: (query head g of the group, query tile t), t fastest: the
  // first at or after (t, g) that is not empty (with a block mask, the
  // block pairs of head g's tile may all be off; a tile over mixed blocks
  // is partial).
  auto item = [&](int t, int g) {
    for (;;) {
      if (t >= tiles.t_end) {
        if (++g >= G) return TileStep{};
        t = tiles.t_begin;
      }
      TileStep st = NextTile(tiles, t, Sq, mask.HasBlocks(), [&](int x) {
        return TileBlockClass<kM>(mask, hk * G + g, p.q_pos, Sq, x, k_min, k_max,
                                  /*tile_is_query=*/true);
      });
      if (st.t < 0) {
        t = tiles.t_end;
        continue;
      }
      st.g = g;
      st.tail = st.tail || n < kN;
      return st;
    }
  };
  auto next_item = [&](const TileStep& st) { return item(st.t + 1, st.g); };

  uint16_t* sK = reinterpret_cast<uint16_t*>(smem);
  uint16_t* sV = reinterpret_cast<uint16_t*>(smem + Tr::kKVBytes);
  int64_t* sKpos = reinterpret_cast<int64_t*>(smem + 2 * Tr::kKVBytes);
  uint16_t* sdS = reinterpret_cast<uint16_t*>(smem + 2 * Tr::kKVBytes + Tr::kKPosBytes);
  char* qbase = smem + Tr::kFixedBytes;
  auto sQ = [&](int s) { return reinterpret_cast<uint16_t*>(qbase + s * Tr::kQStageBytes); };
  auto sdO = [&](int s) {
    return reinterpret_cast<uint16_t*>(qbase + s * Tr::kQStageBytes + Tr::kQTileBytes);
  };
  auto sLse2 = [&](int s) {
    return reinterpret_cast<float*>(qbase + s * Tr::kQStageBytes + 2 * Tr::kQTileBytes);
  };
  auto sDsum = [&](int s) { return sLse2(s) + kM; };
  auto sQpos = [&](int s) { return reinterpret_cast<int64_t*>(sLse2(s) + 2 * kM); };

  // K and V of the tile; keys no query sees at all are zero-filled.
  {
    const uint16_t* k_ptr = static_cast<const uint16_t*>(p.k) + b * p.k_stride.batch +
                            j0 * p.k_stride.seq + hk * p.k_stride.head;
    const uint16_t* v_ptr = static_cast<const uint16_t*>(p.v) + b * p.v_stride.batch +
                            j0 * p.v_stride.seq + hk * p.v_stride.head;
    LoadTiles2<kN, kD, kThreads>(sK, k_ptr, p.k_stride.seq, sV, v_ptr, p.v_stride.seq, tid,
                                 RowBits<kN, kD, kThreads>(tid, [&](int r) {
                                   return r < n && KeyLive(mask, p.q_pos, 0, Sq,
                                                           GlobalPos(p.k_pos, j0 + r), hk * G,
                                                           hk * G + G);
                                 }));
    for (int r = tid; r < n; r += kThreads) sKpos[r] = GlobalPos(p.k_pos, j0 + r);
  }

  auto load_q = [&](const TileStep& st, int s) {
    const int64_t h = hk * G + st.g;
    const int64_t i0 = int64_t{st.t} * kM;
    const int rows = static_cast<int>(Sq - i0 < kM ? Sq - i0 : kM);
    const uint16_t* q_ptr = static_cast<const uint16_t*>(p.q) + b * p.q_stride.batch +
                            i0 * p.q_stride.seq + h * p.q_stride.head;
    const uint16_t* do_ptr = static_cast<const uint16_t*>(p.dout) + b * p.dout_stride.batch +
                             i0 * p.dout_stride.seq + h * p.dout_stride.head;
    LoadTiles2<kM, kD, kThreads>(sQ(s), q_ptr, p.q_stride.seq, sdO(s), do_ptr, p.dout_stride.seq,
                                 tid, FirstRows<kM, kD, kThreads>(tid, rows));
    for (int r = tid; r < kM; r += kThreads) {
      float lse2 = INFINITY, dsum = 0.0f;  // padding rows: P = 0, dS = 0
      int64_t qp = 0;
      if (r < rows) {
        const int64_t li = b * p.lse_batch_stride + h * p.lse_head_stride + i0 + r;
        const float lse = p.lse[li];
        lse2 = lse == -INFINITY ? INFINITY : lse * kLog2e;
        dsum = p.dsum[li];
        qp = GlobalPos(p.q_pos, i0 + r);
      }
      sLse2(s)[r] = lse2;
      sDsum(s)[r] = dsum;
      sQpos(s)[r] = qp;
    }
  };

  const TileStep first = item(tiles.t_begin, 0);
  if (first.t < 0) return;  // every block pair off: nothing to add
  load_q(first, 0);
  CpAsyncCommit();

  const float mul = kCap ? 1.0f : p.scale * kLog2e;
  const float cap_in = kCap ? p.scale / p.softcap : 0.0f;
  const float cap2 = kCap ? p.softcap * kLog2e : 0.0f;
  const float scale = p.scale;
  // This warp's 16 keys, and its columns [d0, d0 + kDP) of their dK, dV.
  constexpr int kDP = Tr::kDPart;
  const int key_row0 = (warp % Tr::kKeyWarps) * 16;
  const int d0 = (warp / Tr::kKeyWarps) * kDP;

  float acc_dk[kDP / 8][4], acc_dv[kDP / 8][4];
#pragma unroll
  for (int nd = 0; nd < kDP / 8; ++nd)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      acc_dk[nd][c] = 0.0f;
      acc_dv[nd][c] = 0.0f;
    }

  auto step = [&](auto masked_tag, const TileStep& st, int s) {
    constexpr bool kMasked = decltype(masked_tag)::value;
    const int64_t h = hk * G + st.g;
    const int64_t i0 = int64_t{st.t} * kM;
    const int rows = static_cast<int>(Sq - i0 < kM ? Sq - i0 : kM);
    const uint16_t* sQs = sQ(s);
    const uint16_t* sdOs = sdO(s);
    const float* lse2 = sLse2(s);
    const float* dsum = sDsum(s);

    float acc_s[kM / 8][4], acc_dp[kM / 8][4];
#pragma unroll
    for (int nt = 0; nt < kM / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        acc_s[nt][c] = 0.0f;
        acc_dp[nt][c] = 0.0f;
      }

      // S^T = K Q^T and dP^T = V dO^T (rows: this warp's 16 keys).
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t ak[4], av[4];
      const int a_off = Swz<kD>(key_row0 + (lane & 15), kk * 16 + ((lane >> 4) << 3));
      LdMatrixX4(ak, SmemAddr(sK + a_off));
      LdMatrixX4(av, SmemAddr(sV + a_off));
#pragma unroll
      for (int np = 0; np < kM / 16; ++np) {
        const int b_off =
            Swz<kD>(np * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 16 + (((lane >> 3) & 1) << 3));
        uint32_t bq[4], bo[4];
        LdMatrixX4(bq, SmemAddr(sQs + b_off));
        LdMatrixX4(bo, SmemAddr(sdOs + b_off));
        Mma<kT>(acc_s[2 * np], ak, bq[0], bq[1]);
        Mma<kT>(acc_s[2 * np + 1], ak, bq[2], bq[3]);
        Mma<kT>(acc_dp[2 * np], av, bo[0], bo[1]);
        Mma<kT>(acc_dp[2 * np + 1], av, bo[2], bo[3]);
      }
    }

    // Visible query columns [qb, qe) of this thread's two key rows.
    int qb[2] = {0, 0}, qe[2] = {kM, kM};
    if constexpr (kMasked) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int kr = key_row0 + (lane >> 2) + hf * 8;
        if (kr < n) {
          const PosRange queries = mask.QueryBounds(sKpos[kr]);
          VisibleRange(sQpos(s), rows, queries.lo, queries.hi, &qb[hf], &qe[hf]);
        } else {
          qb[hf] = qe[hf] = 0;
        }
      }
    }

    // P^T and dS^T (scale folded in); masked entries become 0 by select.
#pragma unroll
    for (int nt = 0; nt < kM / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int qc = nt * 8 + 2 * (lane & 3) + (c & 1);
        float pv, ds;
        if constexpr (kCap) {
          const float th = tanhf(acc_s[nt][c] * cap_in);
          pv = Exp2(cap2 * th - lse2[qc]);
          ds = pv * (acc_dp[nt][c] - dsum[qc]) * (1.0f - th * th) * scale;
        } else {
          pv = Exp2(fmaf(acc_s[nt][c], mul, -lse2[qc]));
          ds = pv * (acc_dp[nt][c] - dsum[qc]) * scale;
        }
        if constexpr (kMasked) {
          const int hf = c >> 1;
          if (qc < qb[hf] || qc >= qe[hf] ||
              (mask.HasBlocks() &&
               !mask.ForHead(h).BlockOn(sQpos(s)[qc], sKpos[key_row0 + (lane >> 2) + hf * 8]))) {
            pv = 0.0f;
            ds = 0.0f;
          }
        }
        acc_s[nt][c] = pv;
        acc_dp[nt][c] = ds;
      }

      // dV += P^T dO, dK += dS^T Q (dO and Q as [queries][D] B operands).
#pragma unroll
    for (int kq = 0; kq < kM / 16; ++kq) {
      uint32_t ap[4], as[4];
      ap[0] = PackPair<kT>(acc_s[2 * kq][0], acc_s[2 * kq][1]);
      ap[1] = PackPair<kT>(acc_s[2 * kq][2], acc_s[2 * kq][3]);
      ap[2] = PackPair<kT>(acc_s[2 * kq + 1][0], acc_s[2 * kq + 1][1]);
      ap[3] = PackPair<kT>(acc_s[2 * kq + 1][2], acc_s[2 * kq + 1][3]);
      as[0] = PackPair<kT>(acc_dp[2 * kq][0], acc_dp[2 * kq][1]);
      as[1] = PackPair<kT>(acc_dp[2 * kq][2], acc_dp[2 * kq][3]);
      as[2] = PackPair<kT>(acc_dp[2 * kq + 1][0], acc_dp[2 * kq + 1][1]);
      as[3] = PackPair<kT>(acc_dp[2 * kq + 1][2], acc_dp[2 * kq + 1][3]);
#pragma unroll
      for (int nd = 0; nd < kDP / 16; ++nd) {
        const int b_off = Swz<kD>(kq * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                  d0 + nd * 16 + ((lane >> 4) << 3));
        uint32_t bo[4], bq[4];
        LdMatrixX4Trans(bo, SmemAddr(sdOs + b_off));
        LdMatrixX4Trans(bq, SmemAddr(sQs + b_off));
        Mma<kT>(acc_dv[2 * nd], ap, bo[0], bo[1]);
        Mma<kT>(acc_dv[2 * nd + 1], ap, bo[2], bo[3]);
        Mma<kT>(acc_dk[2 * nd], as, bq[0], bq[1]);
        Mma<kT>(acc_dk[2 * nd + 1], as, bq[2], bq[3]);
      }
    }

    if (!compute_dq) return;
    // dS^T -> shared [keys][queries], rounded like the dK operand (by one
    // warp of each group sharing keys: the others hold the same values).
    if (warp < Tr::kKeyWarps) {
#pragma unroll
      for (int nt = 0; nt < kM / 8; ++nt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int kr = key_row0 + (lane >> 2) + hf * 8;
          const int qc = nt * 8 + 2 * (lane & 3);
          *reinterpret_cast<uint32_t*>(sdS + Swz<kM>(kr, nt * 8) + (qc & 7)) =
              PackPair<kT>(acc_dp[nt][2 * hf], acc_dp[nt][2 * hf + 1]);
        }
    }
    __syncthreads();
    // dQ [kM x kD] = dS [kM x kN] K [kN x kD]; this warp: 16 query rows x
    // kDqCols columns, kDqChunk at a time, added with fp32 atomics.
    const int qrow0 = (warp % Tr::kDqRowGroups) * 16;
    const int dcol0 = (warp / Tr::kDqRowGroups) * Tr::kDqCols;
#pragma unroll
    for (int ch = 0; ch < Tr::kDqCols / Tr::kDqChunk; ++ch) {
      float acc_dq[Tr::kDqChunk / 8][4];
#pragma unroll
      for (int nd = 0; nd < Tr::kDqChunk / 8; ++nd)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc_dq[nd][c] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        uint32_t a[4];
        LdMatrixX4Trans(a, SmemAddr(sdS + Swz<kM>(kk * 16 + (lane & 7) + ((lane >> 4) << 3),
                                                  qrow0 + (((lane >> 3) & 1) << 3))));
#pragma unroll
        for (int nd = 0; nd < Tr::kDqChunk / 16; ++nd) {
          uint32_t bk[4];
          LdMatrixX4Trans(
              bk, SmemAddr(sK + Swz<kD>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                        dcol0 + ch * Tr::kDqChunk + nd * 16 + ((lane >> 4) << 3))));
          Mma<kT>(acc_dq[2 * nd], a, bk[0], bk[1]);
          Mma<kT>(acc_dq[2 * nd + 1], a, bk[2], bk[3]);
        }
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int qr = qrow0 + (lane >> 2) + hf * 8;
        if (qr >= rows) continue;
        float* dst = p.dq_accum + ((b * Sq + i0 + qr) * H + h) * kD + dcol0 + ch * Tr::kDqChunk +
                     2 * (lane & 3);
#pragma unroll
        for (int nd = 0; nd < Tr::kDqChunk / 8; ++nd) {
          AtomicAdd2(dst + nd * 8, acc_dq[nd][2 * hf], acc_dq[nd][2 * hf + 1]);
        }
      }
    }
  };

  // One barrier per tile: wait for this tile's loads, then the barrier
  // both publishes them and proves every warp is done with the other
  // stage, so the next tile's loads go there while this one computes.
  int stage = 0;
  // Only (t, g) is carried across the loop (fewer live registers); the
  // item's class is recomputed, two compares.
  for (int t = first.t, g = first.g; t >= 0;) {
    const TileStep cur = item(t, g);
    CpAsyncWait<0>();
    __syncthreads();
    const TileStep nxt = next_item(cur);
    if (nxt.t >= 0) load_q(nxt, stage ^ 1);
    CpAsyncCommit();
    if (cur.masked()) {
      step(std::true_type{}, cur, stage);
    } else {
      step(std::false_type{}, cur, stage);
    }
    t = nxt.t;
    g = nxt.g;
    stage ^= 1;
  }
  CpAsyncWait<0>();

  // This CTA alone owns these dK/dV rows: plain read-add-write.
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int kr = key_row0 + (lane >> 2) + hf * 8;
    if (kr >= n) continue;
    const int64_t off = ((b * Sk + j0 + kr) * Hk + hk) * kD + d0 + 2 * (lane & 3);
#pragma unroll
    for (int nd = 0; nd < kDP / 8; ++nd) {
      float2* pk = reinterpret_cast<float2*>(p.dk_accum + off + nd * 8);
      float2* pv = reinterpret_cast<float2*>(p.dv_accum + off + nd * 8);
      float2 vk = *pk, vv = *pv;
      vk.x += acc_dk[nd][2 * hf];
      vk.y += acc_dk[nd][2 * hf + 1];
      vv.x += acc_dv[nd][2 * hf];
      vv.y += acc_dv[nd][2 * hf + 1];
      *pk = vk;
      *pv = vv;
    }
  }
}

template <class Tr, DType kT, bool kCap>
RA_DEVICE void BackwardDqBody(const AttnParams& p, char* smem) {
  constexpr int kD = Tr::kD, kM = Tr::kBlockM, kN = Tr::kBlockN, kThreads = Tr::kThreads;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t tq = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;  // see forward
  const int64_t Sq = p.seqlen_q, Sk = p.seqlen_k, H = p.num_heads;
  const int64_t hk = h / (H / p.num_heads_k);
  const int64_t i0 = tq * kM;
  const int rows = static_cast<int>(Sq - i0 < kM ? Sq - i0 : kM);
  const Mask& mask = p.mask;
  const int64_t q_min = GlobalPos(p.q_pos, i0);
  const int64_t q_max = GlobalPos(p.q_pos, i0 + rows - 1);

  // The key tiles some row of this CTA may see, and which are unmasked
  // (and not all off by a block mask: see the forward).
  const TileRange tiles = KeyTiles<kN>(p, q_min, q_max);
  if (tiles.empty()) return;  // no key visible: dQ gets nothing
  auto key_tile = [&](int t) { return NextKeyTile<kN>(p, tiles, t, h, q_min, q_max); };
  const TileStep first = key_tile(tiles.t_begin);
  if (first.t < 0) return;

  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem);
  uint16_t* sdO = reinterpret_cast<uint16_t*>(smem + Tr::kQTileBytes);
  char* kvbase = smem + 2 * Tr::kQTileBytes;
  auto sK = [&](int s) { return reinterpret_cast<uint16_t*>(kvbase + s * Tr::kStageBytes); };
  auto sV = [&](int s) {
    return reinterpret_cast<uint16_t*>(kvbase + s * Tr::kStageBytes + Tr::kTileBytes);
  };
  auto sKpos = [&](int s) {
    return reinterpret_cast<int64_t*>(kvbase + s * Tr::kStageBytes + 2 * Tr::kTileBytes);
  };

  {
    const uint16_t* q_ptr = static_cast<const uint16_t*>(p.q) + b * p.q_stride.batch +
                            i0 * p.q_stride.seq + h * p.q_stride.head;
    const uint16_t* do_ptr = static_cast<const uint16_t*>(p.dout) + b * p.dout_stride.batch +
                             i0 * p.dout_stride.seq + h * p.dout_stride.head;
    LoadTiles2<kM, kD, kThreads>(sQ, q_ptr, p.q_stride.seq, sdO, do_ptr, p.dout_stride.seq, tid,
                                 FirstRows<kM, kD, kThreads>(tid, rows));
  }
  const uint16_t* k_head =
      static_cast<const uint16_t*>(p.k) + b * p.k_stride.batch + hk * p.k_stride.head;
  const uint16_t* v_head =
      static_cast<const uint16_t*>(p.v) + b * p.v_stride.batch + hk * p.v_stride.head;
  auto load_kv = [&](const TileStep& st, int s) {
    LoadKeyTile<kN, kD, kThreads>(p, st, k_head, v_head, i0, rows, h, sK(s), sV(s), sKpos(s),
                                  tid);
  };

  load_kv(first, 0);
  CpAsyncCommit();

  const float mul = kCap ? 1.0f : p.scale * kLog2e;
  const float cap_in = kCap ? p.scale / p.softcap : 0.0f;
  const float cap2 = kCap ? p.softcap * kLog2e : 0.0f;
  const float scale = p.scale;
  const int row0 = warp * 16;

  // lse (base 2), dsum and position of this thread's two query rows.
  float lse2[2], dsum[2];
  int64_t qpos[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int lr = row0 + (lane >> 2) + hf * 8;
    lse2[hf] = INFINITY;
    dsum[hf] = 0.0f;
    qpos[hf] = 0;
    if (lr < rows) {
      const int64_t li = b * p.lse_batch_stride + h * p.lse_head_stride + i0 + lr;
      const float lse = p.lse[li];
      lse2[hf] = lse == -INFINITY ? INFINITY : lse * kLog2e;
      dsum[hf] = p.dsum[li];
      qpos[hf] = GlobalPos(p.q_pos, i0 + lr);
    }
  }

  float acc_dq[kD / 8][4];
#pragma unroll
  for (int nd = 0; nd < kD / 8; ++nd)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc_dq[nd][c] = 0.0f;

  auto tile = [&](auto masked_tag, const TileStep& st, int s) {
    constexpr bool kMasked = decltype(masked_tag)::value;
    const uint16_t* sKs = sK(s);
    const uint16_t* sVs = sV(s);
    const int64_t j0 = int64_t{st.t} * kN;

    float acc_s[kN / 8][4], acc_dp[kN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        acc_s[nt][c] = 0.0f;
        acc_dp[nt][c] = 0.0f;
      }
      // S = Q K^T, dP = dO V^T.
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t aq[4], ao[4];
      const int a_off = Swz<kD>(row0 + (lane & 15), kk * 16 + ((lane >> 4) << 3));
      LdMatrixX4(aq, SmemAddr(sQ + a_off));
      LdMatrixX4(ao, SmemAddr(sdO + a_off));
#pragma unroll
      for (int np = 0; np < kN / 16; ++np) {
        const int b_off =
            Swz<kD>(np * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 16 + (((lane >> 3) & 1) << 3));
        uint32_t bk[4], bv[4];
        LdMatrixX4(bk, SmemAddr(sKs + b_off));
        LdMatrixX4(bv, SmemAddr(sVs + b_off));
        Mma<kT>(acc_s[2 * np], aq, bk[0], bk[1]);
        Mma<kT>(acc_s[2 * np + 1], aq, bk[2], bk[3]);
        Mma<kT>(acc_dp[2 * np], ao, bv[0], bv[1]);
        Mma<kT>(acc_dp[2 * np + 1], ao, bv[2], bv[3]);
      }
    }

    int cb[2] = {0, 0}, ce[2] = {kN, kN};
    if constexpr (kMasked) {
      const int n = static_cast<int>(Sk - j0 < kN ? Sk - j0 : kN);
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const PosRange keys = mask.KeyBounds(qpos[hf]);
        VisibleRange(sKpos(s), n, keys.lo, keys.hi, &cb[hf], &ce[hf]);
      }
    }

    // dS = P * (dP - dsum) [* (1 - tanh^2)] * scale; masked entries 0.
#pragma unroll
    for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int hf = c >> 1;
        float ds;
        if constexpr (kCap) {
          const float th = tanhf(acc_s[nt][c] * cap_in);
          const float pv = Exp2(cap2 * th - lse2[hf]);
          ds = pv * (acc_dp[nt][c] - dsum[hf]) * (1.0f - th * th) * scale;
        } else {
          const float pv = Exp2(fmaf(acc_s[nt][c], mul, -lse2[hf]));
          ds = pv * (acc_dp[nt][c] - dsum[hf]) * scale;
        }
        if constexpr (kMasked) {
          const int col = nt * 8 + 2 * (lane & 3) + (c & 1);
          if (col < cb[hf] || col >= ce[hf] ||
              (mask.HasBlocks() && !mask.ForHead(h).BlockOn(qpos[hf], sKpos(s)[col]))) {
            ds = 0.0f;
          }
        }
        acc_dp[nt][c] = ds;
      }

      // dQ += dS K (K as a [keys][D] B operand, transposed load).
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) {
      uint32_t a[4];
      a[0] = PackPair<kT>(acc_dp[2 * kk][0], acc_dp[2 * kk][1]);
      a[1] = PackPair<kT>(acc_dp[2 * kk][2], acc_dp[2 * kk][3]);
      a[2] = PackPair<kT>(acc_dp[2 * kk + 1][0], acc_dp[2 * kk + 1][1]);
      a[3] = PackPair<kT>(acc_dp[2 * kk + 1][2], acc_dp[2 * kk + 1][3]);
#pragma unroll
      for (int nd = 0; nd < kD / 16; ++nd) {
        uint32_t bk[4];
        LdMatrixX4Trans(bk, SmemAddr(sKs + Swz<kD>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                                   nd * 16 + ((lane >> 4) << 3))));
        Mma<kT>(acc_dq[2 * nd], a, bk[0], bk[1]);
        Mma<kT>(acc_dq[2 * nd + 1], a, bk[2], bk[3]);
      }
    }
  };

  // One barrier per tile: wait for this tile's loads, then the barrier
  // both publishes them and proves every warp is done with the other
  // stage, so the next tile's loads go there while this one computes.
  int stage = 0;
  for (int t = first.t; t >= 0;) {  // only t is carried, as in the forward
    const TileStep cur = key_tile(t);
    CpAsyncWait<0>();
    __syncthreads();
    const TileStep nxt = key_tile(t + 1);
    if (nxt.t >= 0) load_kv(nxt, stage ^ 1);
    CpAsyncCommit();
    if (cur.masked()) {
      tile(std::true_type{}, cur, stage);
    } else {
      tile(std::false_type{}, cur, stage);
    }
    t = nxt.t;
    stage ^= 1;
  }
  CpAsyncWait<0>();

  // This CTA alone owns these dQ rows: plain read-add-write, fixed order.
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int lr = row0 + (lane >> 2) + hf * 8;
    if (lr >= rows) continue;
    float* dst = p.dq_accum + ((b * Sq + i0 + lr) * H + h) * kD + 2 * (lane & 3);
#pragma unroll
    for (int nd = 0; nd < kD / 8; ++nd) {
      float2* pq = reinterpret_cast<float2*>(dst + nd * 8);
      float2 v = *pq;
      v.x += acc_dq[nd][2 * hf];
      v.y += acc_dq[nd][2 * hf + 1];
      *pq = v;
    }
  }
}

}  // namespace ringattn::cuda::detail
