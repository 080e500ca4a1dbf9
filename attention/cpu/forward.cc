// CPU flash attention forward (FlashAttention-2 loop order: each work item is
// one (batch, head, query tile) and streams over the key tiles with an online
// softmax in base 2, tile_ops.h, which rescales a row only when its max grows
// by more than 2^8). K and V are packed into tile-major fp32 panels that
// the libxsmm GEMMs read directly, a chunk of KV heads at a time:
//   K^T tiles [D][kBlockN]  ->  S (row-major [kBlockM][kBlockN]) = Q K^T
//   V   tiles [kBlockN][D]  ->  O (row-major [kBlockM][D])      += P V
// Empty tiles are skipped; full tiles do no mask work; partial tiles mask
// each row to its visible key interval (and, with a block mask, to the on
// blocks within it). A partial tile whose K or V holds a
// non-finite value computes P V row by row over the visible keys only, so
// NaN/Inf at masked-out keys never reaches an output (0 * NaN = NaN in a GEMM).
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attention/cpu/gemm.h"
#include "attention/cpu/kernels.h"
#include "attention/cpu/pack.h"
#include "attention/cpu/scratch.h"
#include "attention/merge.h"
#include "base/status.h"

namespace ringattn::cpu {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -INFINITY;

absl::Status CheckTensor(const void* ptr, absl::string_view name) {
  if (ptr == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": null pointer"));
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckParams(const AttnParams& p, bool backward) {
  if (p.batch <= 0 || p.seqlen_q < 0 || p.seqlen_k < 0 || p.num_heads <= 0 ||
      p.num_heads_k <= 0 || p.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention sizes must be positive: B=", p.batch, " S_q=", p.seqlen_q, " S_k=",
        p.seqlen_k, " H=", p.num_heads, " Hkv=", p.num_heads_k, " D=", p.head_dim));
  }
  if (p.num_heads % p.num_heads_k != 0) {
    return ArgError("num_heads % num_heads_k", 0, p.num_heads % p.num_heads_k);
  }
  for (DType t : {p.dtype, p.out_dtype}) {
    if (t != DType::kFloat32 && t != DType::kBFloat16) {
      return absl::UnimplementedError(
          absl::StrCat("CPU kernels store fp32 or bf16, not ", DTypeName(t)));
    }
  }
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) return ArgError("scale", "finite > 0", p.scale);
  if (!(p.softcap >= 0.0f) || !std::isfinite(p.softcap)) {
    return ArgError("softcap", "finite >= 0", p.softcap);
  }
  if (p.mask.HasBlocks() && p.mask.block_heads != 1 && p.mask.block_heads != p.num_heads) {
    return ArgError("block_mask heads", absl::StrCat("1 or num_heads = ", p.num_heads),
                    p.mask.block_heads);
  }
  if (p.q_pos.Length() != p.seqlen_q) return ArgError("q_pos length", p.seqlen_q, p.q_pos.Length());
  if (p.k_pos.Length() != p.seqlen_k) return ArgError("k_pos length", p.seqlen_k, p.k_pos.Length());
  RETURN_IF_ERROR(CheckTensor(p.q, "q"));
  RETURN_IF_ERROR(CheckTensor(p.k, "k"));
  RETURN_IF_ERROR(CheckTensor(p.v, "v"));
  RETURN_IF_ERROR(CheckTensor(p.lse, "lse"));
  if (backward) {
    RETURN_IF_ERROR(CheckTensor(p.dout, "dout"));
    RETURN_IF_ERROR(CheckTensor(p.dsum, "dsum"));
    RETURN_IF_ERROR(CheckTensor(p.dq_accum, "dq_accum"));
    RETURN_IF_ERROR(CheckTensor(p.dk_accum, "dk_accum"));
    RETURN_IF_ERROR(CheckTensor(p.dv_accum, "dv_accum"));
  } else {
    RETURN_IF_ERROR(CheckTensor(p.out, "out"));
  }
  return absl::OkStatus();
}

namespace {

// A mask with a sink: the main part and the sink part into fp32 scratch,
// merged as the ring merges blocks, then stored as the caller asked.
absl::Status ForwardWithSink(const AttnParams& p, int num_threads) {
  const int64_t B = p.batch, Sq = p.seqlen_q, H = p.num_heads, D = p.head_dim;
  std::vector<float> out_a(B * Sq * H * D), lse_a(B * H * Sq), out_b(out_a.size()),
      lse_b(lse_a.size());
  AttnParams a = p;
  a.mask = p.mask.MainPart();
  a.out_dtype = DType::kFloat32;
  a.out_stride = TensorStrides::Contiguous(Sq, H, D);
  a.lse_batch_stride = H * Sq;
  a.lse_head_stride = Sq;
  AttnParams b = a;
  b.mask = p.mask.SinkPart();
  a.out = out_a.data();
  a.lse = lse_a.data();
  b.out = out_b.data();
  b.lse = lse_b.data();
  RETURN_IF_ERROR(Forward(a, num_threads));
  RETURN_IF_ERROR(Forward(b, num_threads));
  MergePartial(out_a.data(), lse_a.data(), out_b.data(), lse_b.data(), B, Sq, H, D, num_threads);
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t r = 0; r < B * Sq; ++r) {
    const int64_t bi = r / Sq, i = r % Sq;
    for (int64_t h = 0; h < H; ++h) {
      StoreRow(p.out, p.out_dtype, Offset(p.out_stride, bi, i, h), D,
               out_a.data() + ((bi * Sq + i) * H + h) * D);
      p.lse[bi * p.lse_batch_stride + h * p.lse_head_stride + i] = lse_a[(bi * H + h) * Sq + i];
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Forward(const AttnParams& p, int num_threads) {
  RETURN_IF_ERROR(CheckParams(p, /*backward=*/false));
  ASSIGN_OR_RETURN(const TileOps* const ops, ChooseTileOps());
  if (p.mask.HasSink()) {
    if (p.HasSinkKeys()) return ForwardWithSink(p, num_threads);
    AttnParams main = p;  // no key of this block is a sink: the main rules alone
    main.mask = p.mask.MainPart();
    return Forward(main, num_threads);
  }
  constexpr int64_t kM = ForwardTraits::kBlockM;
  constexpr int64_t kN = ForwardTraits::kBlockN;
  const int64_t B = p.batch, Sq = p.seqlen_q, Sk = p.seqlen_k,
                Hk = p.num_heads_k, D = p.head_dim, G = p.GroupSize();
  const int64_t ntq = CeilDiv(Sq, kM), ntk = CeilDiv(Sk, kN);
  const bool has_softcap = p.softcap > 0.0f;
  // Scores in base 2: s2 = q'.k with q' = q * scale * log2(e); with softcap
  // s2 = softcap * log2(e) * tanh(q'.k) with q' = q * scale / softcap.
  const float q_mul = has_softcap ? p.scale / p.softcap : p.scale * kLog2e;
  const float cap2 = p.softcap * kLog2e;
  const std::vector<int64_t> qpos = ExpandPositions(p.q_pos, Sq, ntq * kM);
  const std::vector<int64_t> kpos = ExpandPositions(p.k_pos, Sk, ntk * kN);

  // A work item is `group` query tiles of one (b, h): each K/V panel it
  // reads from L3 serves them all, while their Q and O (128 KiB per tile at
  // D = 128) stay in half of L2: 4 tiles on a 2 MiB L2 (docs/PERF.md). A
  // row's result does not depend on the grouping (each tile keeps its own
  // running state and sees the key tiles in order).
  const int64_t group = std::clamp<int64_t>(
      L2CacheBytes() / 2 / (2 * kM * D * int64_t{sizeof(float)}), 1, 4);
  const int64_t ngroups = CeilDiv(ntq, group);
  // Packed K^T and V panels, one set per (b, hk, key tile), for a chunk of
  // (b, hk) pairs at a time: enough query work per chunk to keep every
  // thread busy (16 items each), so that the panels of one KV head at a
  // time suffice for long sequences (a tenth of the memory of packing every
  // head up front: 8 MiB instead of 64 at S=8192, Hkv=8, D=128).
  const int64_t pairs = B * Hk, per_pair = G * ngroups;
  const int64_t chunk =
      std::clamp<int64_t>(CeilDiv(int64_t{16} * std::max(num_threads, 1), per_pair), 1, pairs);
  auto kt = Uninit<float>(chunk * ntk * D * kN);
  auto vp = Uninit<float>(chunk * ntk * kN * D);
  auto nonfinite = Uninit<uint8_t>(chunk * ntk);
  const SmallGemm gemm_s(kN, kM, D, kN, D, kN, 0.0f);   // S = Q K^T
  const SmallGemm gemm_pv(D, kM, kN, D, kN, D, 1.0f);   // O += P V
  for (int64_t p0 = 0; p0 < pairs; p0 += chunk) {
  const int64_t np = std::min(chunk, pairs - p0);
  const int64_t panels = np * ntk;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> krows(kN * D);
#pragma omp for schedule(static)
    for (int64_t it = 0; it < panels; ++it) {
      const int64_t pair = p0 + it / ntk, b = pair / Hk, hk = pair % Hk, t = it % ntk;
      const int64_t n = std::min(kN, Sk - t * kN);
      nonfinite[it] = PackKeyTile(p, b, hk, t * kN, n, kN, krows.data(), vp.get() + it * kN * D,
                                  kt.get() + it * D * kN);
    }
  }

  // Items in reverse order: the last query tiles of a causal mask (the
  // most keys) first, so that the dynamic schedule ends on cheap ones.
  const int64_t items = np * per_pair;
#pragma omp parallel num_threads(num_threads)
  {
    auto q = Uninit<float>(group * kM * D);
    auto o = Uninit<float>(group * kM * D);
    auto m = Uninit<float>(group * kM);
    auto l = Uninit<float>(group * kM);
    auto s = Uninit<float>(kM * kN);
    int64_t jb[kM], je[kM];
    const uint8_t* row_blocks[kM];  // a block-masked partial tile: each row's bits
    int64_t kblock[kN];             // and each key's block
#pragma omp for schedule(dynamic, 1)
    for (int64_t rev = 0; rev < items; ++rev) {
      const int64_t item = items - 1 - rev;
      const int64_t local_pair = item / per_pair, pair = p0 + local_pair;
      const int64_t b = pair / Hk, hk = pair % Hk, h = hk * G + (item / ngroups) % G;
      const int64_t tq0 = item % ngroups * group, tiles = std::min(group, ntq - tq0);
      const Mask mask = p.mask.ForHead(h);
      for (int64_t r = 0; r < tiles * kM; ++r) {
        if (tq0 * kM + r < Sq) {
          LoadRow(p.q, p.dtype, Offset(p.q_stride, b, tq0 * kM + r, h), D, q_mul, &q[r * D]);
        } else {
          std::fill(&q[r * D], &q[(r + 1) * D], 0.0f);
        }
        m[r] = kNegInf;
        l[r] = 0.0f;
      }
      std::fill(o.get(), o.get() + tiles * kM * D, 0.0f);

      for (int64_t t = 0; t < ntk; ++t) {
        const int64_t j0 = t * kN, n = std::min(kN, Sk - j0);
        const int64_t panel = local_pair * ntk + t;
        const float* vtile = vp.get() + panel * kN * D;
        for (int64_t u = 0; u < tiles; ++u) {
          const int64_t i0 = (tq0 + u) * kM, rows = std::min(kM, Sq - i0);
          float* const qu = q.get() + u * kM * D;
          float* const ou = o.get() + u * kM * D;
          const TileClass cls =
              mask.Classify(qpos[i0], qpos[i0 + rows - 1], kpos[j0], kpos[j0 + n - 1]);
          if (cls == TileClass::kEmpty) continue;
          const bool by_block = cls == TileClass::kPartial && mask.HasBlocks();
          if (by_block) {
            for (int64_t j = 0; j < n; ++j) kblock[j] = kpos[j0 + j] / mask.block_size;
            for (int64_t r = 0; r < rows; ++r) {
              row_blocks[r] = mask.blocks + qpos[i0 + r] / mask.block_size * mask.block_cols;
            }
          }
          gemm_s(kt.get() + panel * D * kN, qu, s.get());
          if (has_softcap) ops->softcap(s.get(), nullptr, kM * kN, cap2);
          if (cls == TileClass::kPartial) {
            for (int64_t r = 0; r < rows; ++r) {
              float* sr = s.get() + r * kN;
              jb[r] = 0;
              je[r] = n;
              LocalInterval(mask.KeyBounds(qpos[i0 + r]), kpos.data() + j0, n, &jb[r], &je[r]);
              for (int64_t j = 0; j < jb[r]; ++j) sr[j] = kNegInf;
              for (int64_t j = je[r]; j < n; ++j) sr[j] = kNegInf;
              if (by_block) {
                for (int64_t j = jb[r]; j < je[r]; ++j) {
                  if (!row_blocks[r][kblock[j]]) sr[j] = kNegInf;
                }
              }
            }
          }
          ops->online_softmax(s.get(), rows, n, kN, &m[u * kM], &l[u * kM], ou, D);
          if (cls == TileClass::kPartial && nonfinite[panel]) {
            for (int64_t r = 0; r < rows; ++r) {
              float* orow = ou + r * D;
              for (int64_t j = jb[r]; j < je[r]; ++j) {
                if (by_block && !row_blocks[r][kblock[j]]) continue;
                const float pj = s[r * kN + j];
                for (int64_t d = 0; d < D; ++d) orow[d] += pj * vtile[j * D + d];
              }
            }
          } else {
            gemm_pv(vtile, s.get(), ou);
          }
        }
      }

      for (int64_t r = 0; r < tiles * kM && tq0 * kM + r < Sq; ++r) {
        const int64_t i = tq0 * kM + r;
        float* orow = o.get() + r * D;
        float row_lse;
        if (l[r] == 0.0f) {
          std::fill(orow, orow + D, 0.0f);
          row_lse = kNegInf;
        } else {
          const float inv = 1.0f / l[r];
          for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
          row_lse = (m[r] + std::log2(l[r])) * kLn2;
        }
        StoreRow(p.out, p.out_dtype, Offset(p.out_stride, b, i, h), D, orow);
        p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + i] = row_lse;
      }
    }
  }
  }  // chunks of (b, hk) pairs
  return absl::OkStatus();
}

void RowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype, const void* out,
            TensorStrides out_stride, DType out_dtype, float* dsum, int64_t batch,
            int64_t seqlen, int64_t heads, int64_t head_dim, int num_threads) {
  const int64_t rows = batch * seqlen;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> a(head_dim), o(head_dim);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / seqlen, i = r % seqlen;
      for (int64_t h = 0; h < heads; ++h) {
        LoadRow(dout, dout_dtype, Offset(dout_stride, b, i, h), head_dim, 1.0f, a.data());
        LoadRow(out, out_dtype, Offset(out_stride, b, i, h), head_dim, 1.0f, o.data());
        float acc = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) acc += a[d] * o[d];
        dsum[(b * heads + h) * seqlen + i] = acc;
      }
    }
  }
}

}  // namespace ringattn::cpu
