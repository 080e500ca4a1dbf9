// cuda_emu_check: runs the CUDA kernel bodies (attention/cuda/fwd_kernel.cuh,
// bwd_kernel.cuh) on the CPU through the emulated PTX layer (ptx_emu.h) and
// compares them with the float64 reference by flash-attn's tolerance rule,
// like tests/attention/cuda_kernels_test.cc does on a GPU. For sessions
// without a GPU: it checks index math, fragment layouts, masks, tails,
// GQA, positions, softcap and both backward modes, not speed or the real
// hardware's behaviour (run tools/gpu_check.sh for that).
//
//   cuda_emu_check [--at-issue] [all | N | nan | list]
//     all (default)  every case (minutes: one thread per CUDA thread)
//     N              case N only;  docs: the packed-document and sink cases;
//                    blocks: the block-mask cases;  list: the cases
//     nan            NaN/Inf stored at masked-out keys must not reach any output
//     sink           a sink mask's two parts in fp32, merged into a 16-bit
//                    strided output (cuda::Forward's path for one device)
//     --at-issue     cp.async and TMA data land at issue instead of at the wait
//     --sm90         the forward runs the Hopper kernel body (fwd_sm90_kernel.cuh:
//                    TMA, mbarriers, wgmma, warp specialisation), checked alone
//                    (the backward is the same as without it and is skipped)
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "attention/cuda/bwd_kernel.cuh"
#include "attention/cuda/dispatch.h"
#include "attention/cuda/fwd_kernel.cuh"
#include "attention/cuda/fwd_sm90_kernel.cuh"
#include "attention/cuda/merge.cuh"
#include "tests/attention/attn_test_util.h"

namespace ringattn::cuda {
namespace {

using testing::Case;
using testing::PosKind;
using testing::Grads;
using testing::Problem;

void Unsupported(const AttnParams& p) {
  std::fprintf(stderr, "no kernels for head dim %ld\n", static_cast<long>(p.head_dim));
  std::exit(2);
}

bool sm90 = false;  // --sm90

// The kernel bodies dispatch.h picks for p, launched as the launchers
// (fwd_launch.cuh, fwd_sm90_launch.cuh, bwd_launch.cuh) launch them.
void RunForward(const AttnParams& p) {
  DispatchForward(
      p,
      [&]<DType kT, int kD, bool kCap>() {
        if (sm90) {
          using Tr = FwdSm90Traits<kD>;
          detail::FwdSm90Params prm;
          prm.p = p;
          detail::FwdSm90MapShapes<Tr>(p, &prm.q_map, &prm.k_map, &prm.v_map);
          const emu::Dim grid{static_cast<unsigned>((p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM),
                              static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch)};
          emu::Launch(grid, Tr::kThreads, Tr::kSmemBytes,
                      [&](char* s) { detail::ForwardSm90Body<Tr, kT, kCap>(prm, s); });
          return;
        }
        using Tr = FwdTraits<kD>;
        const emu::Dim grid{static_cast<unsigned>((p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM),
                            static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch)};
        emu::Launch(grid, Tr::kThreads, Tr::kSmemBytes,
                    [&](char* s) { detail::ForwardBody<Tr, kT, kCap>(p, s); });
      },
      [&] { Unsupported(p); });
}

void RunBackward(const AttnParams& p, bool det) {
  DispatchBackward(
      p, det,
      [&]<DType kT, int kD, bool kCap, bool kDeterministic>() {
        using Tr = BwdTraits<kD>;
        const emu::Dim grid{static_cast<unsigned>((p.seqlen_k + Tr::kBlockN - 1) / Tr::kBlockN),
                            static_cast<unsigned>(p.num_heads_k), static_cast<unsigned>(p.batch)};
        emu::Launch(grid, Tr::kThreads, Tr::kSmemBytes, [&](char* s) {
          detail::BackwardBody<Tr, kT, kCap>(p, /*compute_dq=*/!kDeterministic, s);
        });
        if constexpr (kDeterministic) {
          using TrQ = BwdDqTraits<kD>;
          const emu::Dim grid_q{
              static_cast<unsigned>((p.seqlen_q + TrQ::kBlockM - 1) / TrQ::kBlockM),
              static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch)};
          emu::Launch(grid_q, TrQ::kThreads, TrQ::kSmemBytes,
                      [&](char* s) { detail::BackwardDqBody<TrQ, kT, kCap>(p, s); });
        }
      },
      [&] { Unsupported(p); });
}

int failures = 0;

void Report(const char* what, const Case& c, double err, double tol) {
  const bool ok = err <= tol;
  if (!ok) ++failures;
  std::printf("%-4s %-8s %-58s err %.3e tol %.3e\n", ok ? "ok" : "FAIL", what, c.Name().c_str(),
              err, tol);
}

struct Outputs {
  std::vector<float> out, lse;
};

Outputs Forward(const Problem& pr, DType out_dtype) {
  const Case& c = pr.c;
  AttnParams p = pr.Params();
  const int64_t n_out = c.batch * c.seqlen_q * c.heads * c.head_dim;
  std::vector<float> out32(n_out, std::numeric_limits<float>::quiet_NaN());
  std::vector<uint16_t> out16(n_out, 0xffff);  // NaN in bf16 and fp16
  Outputs r;
  r.lse.assign(c.batch * c.heads * c.seqlen_q, std::numeric_limits<float>::quiet_NaN());
  p.out_dtype = out_dtype;
  p.out = out_dtype == DType::kFloat32 ? static_cast<void*>(out32.data()) : out16.data();
  p.out_stride = TensorStrides::Contiguous(c.seqlen_q, c.heads, c.head_dim);
  p.lse = r.lse.data();
  p.lse_batch_stride = c.heads * c.seqlen_q;
  p.lse_head_stride = c.seqlen_q;
  RunForward(p);
  r.out.resize(n_out);
  for (int64_t i = 0; i < n_out; ++i) {
    r.out[i] = out_dtype == DType::kFloat32 ? out32[i] : testing::FromBits(out_dtype, out16[i]);
  }
  return r;
}

// dsum from `out` (contiguous, already rounded as stored), then backward.
Grads Backward(const Problem& pr, const std::vector<float>& out, std::vector<float> lse, bool det) {
  const Case& c = pr.c;
  std::vector<float> dsum(lse.size());
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < c.seqlen_q; ++i)
      for (int64_t h = 0; h < c.heads; ++h) {
        float acc = 0.0f;
        for (int64_t d = 0; d < c.head_dim; ++d) {
          const int64_t off = ((b * c.seqlen_q + i) * c.heads + h) * c.head_dim + d;
          acc += pr.dout[off] * out[off];
        }
        dsum[(b * c.heads + h) * c.seqlen_q + i] = acc;
      }
  Grads g;
  RunBackward(testing::BackwardParams(pr, lse.data(), dsum.data(), &g), det);
  return g;
}

// A forward's outputs (out held to the bound of dtype `t`) against the
// float64 reference, which it returns; NaN left anywhere fails.
void CheckForward(const Problem& pr, const Outputs& r, DType t, std::vector<double>* out_ref,
                  std::vector<double>* lse_ref) {
  const Case& c = pr.c;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), out_ref, lse_ref);
  std::vector<float> out_naive, lse_naive;
  testing::NaiveForward(pr, &out_naive, &lse_naive);
  bool unwritten = false;
  for (float x : r.out) unwritten = unwritten || std::isnan(x);
  for (float x : r.lse) unwritten = unwritten || std::isnan(x);
  if (unwritten) {
    std::printf("FAIL NaN or unwritten output: %s\n", c.Name().c_str());
    ++failures;
  }
  Report("out", c, testing::MaxError(r.out, *out_ref),
         testing::Tolerance(testing::MaxError(out_naive, *out_ref), t));
  Report("lse", c, testing::MaxError(r.lse, *lse_ref),
         testing::Tolerance(testing::MaxError(lse_naive, *lse_ref), DType::kFloat32));
}

void CheckCase(const Case& c, DType out_dtype) {
  const Problem pr = testing::MakeProblem(c, 1234);
  std::vector<double> out_ref, lse_ref;
  CheckForward(pr, Forward(pr, out_dtype), out_dtype == DType::kFloat32 ? c.dtype : out_dtype,
               &out_ref, &lse_ref);
  if (sm90) return;  // the backward kernels do not change with --sm90

  std::vector<double> dq_ref, dk_ref, dv_ref;
  ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &dq_ref, &dk_ref,
                    &dv_ref);
  std::vector<float> dq_n, dk_n, dv_n;
  testing::NaiveBackward(pr, &dq_n, &dk_n, &dv_n);
  std::vector<float> out(out_ref.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = testing::RoundToDType(c.dtype, static_cast<float>(out_ref[i]));
  }
  const std::vector<float> lse(lse_ref.begin(), lse_ref.end());
  for (bool det : {false, true}) {
    Grads g = Backward(pr, out, lse, det);
    for (auto* x : {&g.dq, &g.dk, &g.dv})
      for (float& v : *x) v = testing::RoundToDType(c.dtype, v);
    Report(det ? "dq(det)" : "dq", c, testing::MaxError(g.dq, dq_ref),
           testing::Tolerance(testing::MaxError(dq_n, dq_ref), c.dtype));
    Report(det ? "dk(det)" : "dk", c, testing::MaxError(g.dk, dk_ref),
           testing::Tolerance(testing::MaxError(dk_n, dk_ref), c.dtype));
    Report(det ? "dv(det)" : "dv", c, testing::MaxError(g.dv, dv_ref),
           testing::Tolerance(testing::MaxError(dv_n, dv_ref), c.dtype));
  }
}

// cuda::Forward with a sink into a 16-bit output: the main and the sink part
// each into fp32 scratch, then MergeStoreBody into a strided 16-bit output
// and a strided lse, against the float64 reference of the whole mask.
void CheckSinkMerge() {
  using testing::DocKind;
  int turn = 0;
  for (Mask m : {Mask::Sink(5, 30), Mask::Sink(70, 20),
                 testing::WithTestDocuments(Mask::Sink(5, 25), DocKind::kMixed)}) {
    Case c;
    c.seqlen_q = c.seqlen_k = 200;
    c.heads = 4;
    c.heads_k = 2;
    c.head_dim = 64;
    c.dtype = turn++ == 1 ? DType::kFloat16 : DType::kBFloat16;
    c.mask = m;
    const Problem pr = testing::MakeProblem(c, 4321);
    const int64_t S = c.seqlen_q, H = c.heads, D = c.head_dim, rows = S * H;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> a_out(rows * D, nan), b_out(rows * D, nan), a_lse(rows, nan),
        b_lse(rows, nan);
    const auto into = [&](Mask part, std::vector<float>& out, std::vector<float>& lse) {
      AttnParams p = pr.Params();
      p.mask = part;
      p.out = out.data();
      p.out_dtype = DType::kFloat32;
      p.out_stride = TensorStrides::Contiguous(S, H, D);
      p.lse = lse.data();
      p.lse_batch_stride = H * S;
      p.lse_head_stride = S;
      RunForward(p);
    };
    into(m.MainPart(), a_out, a_lse);
    into(m.SinkPart(), b_out, b_lse);
    // A padded output (each row D + 6 wide, heads apart) and lse (rows S + 3).
    const TensorStrides os{S * H * (D + 6), H * (D + 6), D + 6};
    const int64_t lse_h = S + 3, lse_b = H * lse_h;
    std::vector<uint16_t> out16(os.batch, 0xffff);
    std::vector<float> lse(lse_b, nan);
    emu::Launch(emu::Dim{static_cast<unsigned>((rows + detail::kRowWarps - 1) / detail::kRowWarps)},
                32 * detail::kRowWarps, 0, [&](char*) {
                  detail::MergeStoreBody(a_out.data(), a_lse.data(), b_out.data(), b_lse.data(),
                                         out16.data(), os, c.dtype, lse.data(), lse_b, lse_h, S,
                                         H, D, rows);
                });
    Outputs r;
    for (int64_t i = 0; i < S; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) {
          r.out.push_back(testing::FromBits(c.dtype, out16[i * os.seq + h * os.head + d]));
        }
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < S; ++i) r.lse.push_back(lse[h * lse_h + i]);
    std::vector<double> out_ref, lse_ref;
    CheckForward(pr, r, c.dtype, &out_ref, &lse_ref);
  }
}

void CheckNanAtMaskedKeys() {
  for (Mask m : {Mask{true, -1, -1}, Mask{false, 10, 0}, Mask{true, 5, -1}})
    for (int64_t d : {64, 128, 256}) {
      const Problem pr = testing::NonFiniteAtMaskedKeys(m, d, DType::kBFloat16);
      const Outputs r = Forward(pr, pr.c.dtype);
      bool finite = true;
      for (bool det : {false, true}) {
        finite = finite &&
                 testing::MaskedKeysStayedOut(pr, r.out, r.lse, Backward(pr, r.out, r.lse, det));
      }
      std::printf("%-4s nan-at-masked-keys d=%ld mask=(%d,%ld,%ld)\n", finite ? "ok" : "FAIL", d,
                  m.causal, m.window_left, m.window_right);
      if (!finite) ++failures;
    }
  // A block mask alone hides key 101 (block 2 of 50) in a tile with
  // visible keys (see cpu_kernels_test).
  static std::vector<uint8_t> bits(41 * 41, 0);
  for (int64_t a = 0; a < 41; ++a) bits[a * 41] = bits[a * 41 + 1] = 1;
  for (Mask m : {Mask{}, Mask{false, 120, 120}}) {
    const Problem pr = testing::NonFiniteAtMaskedKeys(m.WithBlocks(bits.data(), 1, 41, 41, 50), 64,
                                                      DType::kBFloat16);
    const Outputs r = Forward(pr, pr.c.dtype);
    bool finite = true;
    for (bool det : {false, true}) {
      finite = finite &&
               testing::MaskedKeysStayedOut(pr, r.out, r.lse, Backward(pr, r.out, r.lse, det));
    }
    std::printf("%-4s nan-at-masked-keys %s\n", finite ? "ok" : "FAIL", pr.c.mask.ToString().c_str());
    if (!finite) ++failures;
  }
}

std::vector<std::pair<Case, DType>> Cases() {
  std::vector<std::pair<Case, DType>> cases;
  auto add = [&](const Case& c, DType out) { cases.push_back({c, out}); };
  Case c;
  c.seqlen_q = c.seqlen_k = 129;
  c.heads = 2;
  c.heads_k = 1;
  c.dtype = DType::kBFloat16;
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (int64_t d : {64, 128, 256})
      for (Mask m : {Mask{}, Mask{true, -1, -1}, Mask{false, 40, 8}, Mask{true, 33, -1}}) {
        c.dtype = t;
        c.head_dim = d;
        c.mask = m;
        add(c, t);
      }
  c = Case{};
  c.heads = c.heads_k = 1;
  c.dtype = DType::kBFloat16;
  for (auto [sq, sk] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 7}, {129, 300}, {300, 65}, {1, 1000}})
    for (Mask m : {Mask{}, Mask{true, -1, -1}}) {
      c.seqlen_q = sq;
      c.seqlen_k = sk;
      c.head_dim = sq == 300 ? 64 : sq == 7 ? 256 : 128;
      c.mask = m;
      add(c, c.dtype);
    }
  c = Case{};
  c.heads = 8;
  c.seqlen_q = 97;
  c.seqlen_k = 150;
  c.dtype = DType::kBFloat16;
  c.mask = Mask{false, 40, 3};
  for (int64_t ratio : {1, 2, 4, 8}) {
    c.heads_k = 8 / ratio;
    c.head_dim = ratio == 4 ? 128 : ratio == 2 ? 256 : 64;
    add(c, c.dtype);
  }
  c = Case{};
  c.batch = 2;
  c.seqlen_q = c.seqlen_k = 150;
  c.softcap = 1.5f;
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (Mask m : {Mask{}, Mask{true, -1, -1}}) {
      c.dtype = t;
      c.mask = m;
      c.head_dim = t == DType::kBFloat16 ? 128 : 64;
      add(c, t);
      c.head_dim = 256;  // Gemma's shape: full tiles unmasked, masked ones causal
      add(c, t);
    }
  c = Case{};
  c.seqlen_q = 150;
  c.seqlen_k = 170;
  c.dtype = DType::kBFloat16;
  for (PosKind qk : {PosKind::kOffset, PosKind::kTwoRanges, PosKind::kStriped})
    for (PosKind kk : {PosKind::kFromZero, PosKind::kTwoRanges, PosKind::kStriped})
      for (Mask m : {Mask{true, -1, -1}, Mask{false, 50, 10}}) {
        c.q_pos = qk;
        c.k_pos = kk;
        c.mask = m;
        c.head_dim = qk == PosKind::kStriped ? 128 : kk == PosKind::kStriped ? 256 : 64;
        add(c, c.dtype);
      }
  c = Case{};
  c.seqlen_q = 200;
  c.seqlen_k = 130;
  c.mask = Mask{true, 100, -1};
  c.k_pos = PosKind::kOffset;
  for (DType t : {DType::kBFloat16, DType::kFloat16}) {
    c.dtype = t;
    c.head_dim = t == DType::kBFloat16 ? 64 : 128;
    add(c, DType::kFloat32);  // fp32 partial outputs
  }
  c.head_dim = 256;
  add(c, DType::kFloat32);
  c.seqlen_q = 170;
  c.seqlen_k = 90;
  c.mask = Mask{true, -1, -1};
  c.dtype = DType::kBFloat16;
  add(c, c.dtype);  // rows 0..38 see no key
  // Packed documents and prefix-LM (after the cases above, so their
  // numbers stay): tiny, mixed and tile-edge documents, contiguous and
  // zigzag positions, every head dim, GQA.
  c = Case{};
  c.seqlen_q = c.seqlen_k = 300;
  c.heads = 4;
  c.heads_k = 2;
  c.dtype = DType::kBFloat16;
  using testing::DocKind;
  int turn = 0;
  for (DocKind dk : {DocKind::kTiny, DocKind::kMixed, DocKind::kTileEdges})
    for (Mask m : {Mask{true, -1, -1}, Mask{}, Mask{true, 30, -1}, Mask::PrefixLM(70)}) {
      c.mask = testing::WithTestDocuments(m, dk);
      c.head_dim = turn % 3 == 0 ? 64 : turn % 3 == 1 ? 128 : 256;
      c.q_pos = c.k_pos = turn % 2 == 0 ? PosKind::kFromZero : PosKind::kTwoRanges;
      c.dtype = turn % 4 == 3 ? DType::kFloat16 : DType::kBFloat16;
      ++turn;
      add(c, c.dtype);
    }
  // The two parts of a sink mask as the kernels run them (cuda::Forward
  // splits, each part is one interval per row; the sink part's rows do not
  // hold their own position).
  c.q_pos = c.k_pos = PosKind::kFromZero;
  c.dtype = DType::kBFloat16;
  c.head_dim = 128;
  for (Mask m : {Mask::Sink(5, 30).SinkPart(), Mask::Sink(70, 20).SinkPart(),
                 testing::WithTestDocuments(Mask::Sink(5, 25), DocKind::kMixed).SinkPart()}) {
    c.mask = m;
    add(c, DType::kFloat32);
  }
  // Block masks: blocks smaller than a tile (per-element bits, one mask per
  // head with GQA), tile-sized, unaligned with documents, on zigzag and
  // striped positions; all off.
  using testing::BlockKind;
  c = Case{};
  c.seqlen_q = c.seqlen_k = 200;
  c.heads = 4;
  c.heads_k = 2;
  c.dtype = DType::kBFloat16;
  c.head_dim = 64;
  c.mask = testing::WithTestBlocks(Mask{true, -1, -1}, BlockKind::kRandom, 16, 4);
  add(c, c.dtype);
  c.mask = testing::WithTestBlocks(Mask{}, BlockKind::kRandom, 64);
  c.q_pos = c.k_pos = PosKind::kTwoRanges;
  c.head_dim = 128;
  add(c, DType::kFloat32);
  c.mask = testing::WithTestBlocks(testing::WithTestDocuments(Mask{true, 40, -1}, DocKind::kMixed),
                                   BlockKind::kDiagonal, 50);
  c.q_pos = c.k_pos = PosKind::kStriped;
  c.dtype = DType::kFloat16;
  c.head_dim = 64;
  add(c, c.dtype);
  c.mask = testing::WithTestBlocks(Mask{false, 30, 30}, BlockKind::kAllOff, 32);
  c.q_pos = c.k_pos = PosKind::kFromZero;
  add(c, c.dtype);
  return cases;
}

}  // namespace
}  // namespace ringattn::cuda

int main(int argc, char** argv) {
  using namespace ringattn::cuda;
  std::string what = "all";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--at-issue") {
      emu::kCpAsyncAtIssue = true;
      emu::kTmaAtIssue = true;
    } else if (a == "--sm90") {
      sm90 = true;
    } else {
      what = a;
    }
  }
  const auto cases = Cases();
  if (what == "list") {
    for (size_t i = 0; i < cases.size(); ++i) {
      std::printf("%zu %s out=%s\n", i, cases[i].first.Name().c_str(),
                  ringattn::DTypeName(cases[i].second));
    }
    return 0;
  }
  if (what == "nan") {
    CheckNanAtMaskedKeys();
  } else if (what == "sink") {
    CheckSinkMerge();
  } else {
    for (size_t i = 0; i < cases.size(); ++i) {
      const ringattn::Mask& m = cases[i].first.mask;
      const bool docs = (m.HasDocuments() || m.sink > 0) && !m.HasBlocks();
      if (what != "all" && std::to_string(i) != what && !(what == "docs" && docs) &&
          !(what == "blocks" && m.HasBlocks())) {
        continue;
      }
      std::printf("-- case %zu\n", i);
      CheckCase(cases[i].first, cases[i].second);
      std::fflush(stdout);
    }
  }
  std::printf("failures: %d\n", failures);
  return failures == 0 ? 0 : 1;
}
