// Microbenchmarks of the CPU attention kernels, with the fp32 GEMM ceiling
// (2048^3 through BLAS) and the naive unfused path (GEMM, softmax, GEMM) in
// the same binary, so ratios are read off one run.
//   BM_Forward_Cpu / BM_Backward_Cpu: args seqlen, head_dim, causal, group
//   (H / Hkv) at B=1, H=8, fp32, all cores.
#include <cblas.h>

#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "attention/cpu/gemm.h"
#include "attention/cpu/kernels.h"
#include "benchmark/benchmark.h"

namespace ringattn {
namespace {

int Threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> x(n);
  for (float& v : x) v = dist(gen);
  return x;
}

struct Setup {
  int64_t S, D, H = 8, Hk;
  bool causal;
  std::vector<float> q, k, v, out, lse, dout, dsum, dq, dk, dv;
  AttnParams p;
  Setup(int64_t s, int64_t d, bool c, int64_t group) : S(s), D(d), Hk(8 / group), causal(c) {
    q = Random(S * H * D, 1);
    k = Random(S * Hk * D, 2);
    v = Random(S * Hk * D, 3);
    dout = Random(S * H * D, 4);
    out.resize(S * H * D);
    lse.resize(H * S);
    dsum.resize(H * S);
    dq.resize(S * H * D);
    dk.resize(S * Hk * D);
    dv.resize(S * Hk * D);
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.out = out.data();
    p.lse = lse.data();
    p.dout = dout.data();
    p.dsum = dsum.data();
    p.dq_accum = dq.data();
    p.dk_accum = dk.data();
    p.dv_accum = dv.data();
    p.q_stride = p.out_stride = p.dout_stride = TensorStrides::Contiguous(S, H, D);
    p.k_stride = p.v_stride = TensorStrides::Contiguous(S, Hk, D);
    p.lse_batch_stride = H * S;
    p.lse_head_stride = S;
    p.batch = 1;
    p.seqlen_q = p.seqlen_k = S;
    p.num_heads = H;
    p.num_heads_k = Hk;
    p.head_dim = D;
    p.scale = DefaultScale(D);
    p.mask.causal = causal;
    p.q_pos = p.k_pos = PositionMap::Contiguous(0, S);
  }
  double ForwardFlops() const { return 4.0 * S * S * D * H * (causal ? 0.5 : 1.0); }
};

void BM_Forward_Cpu(benchmark::State& state) {
  Setup s(state.range(0), state.range(1), state.range(2) != 0, state.range(3));
  for (auto _ : state) {
    if (!cpu::Forward(s.p, Threads()).ok()) state.SkipWithError("forward failed");
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(s.ForwardFlops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Backward_Cpu(benchmark::State& state) {
  Setup s(state.range(0), state.range(1), state.range(2) != 0, state.range(3));
  if (!cpu::Forward(s.p, Threads()).ok()) state.SkipWithError("forward failed");
  cpu::RowDot(s.p.dout, s.p.dout_stride, s.p.dtype, s.out.data(), s.p.out_stride, s.p.dtype,
              s.dsum.data(), 1, s.S, s.H, s.D, Threads());
  for (auto _ : state) {
    if (!cpu::Backward(s.p, Threads()).ok()) state.SkipWithError("backward failed");
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.5 * s.ForwardFlops() * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// The ceiling: one large fp32 GEMM through BLAS on all cores.
void BM_Gemm_Blas(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<float> a = Random(int64_t{n} * n, 5), b = Random(int64_t{n} * n, 6), c(int64_t{n} * n);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// The tile GEMM choice (docs/PERF.md): one core, operands hot in cache,
// column-major C[m x n] += A[m x k] B[k x n], through libxsmm's JIT kernel
// (what the CPU kernels use) and through BLAS sgemm on the same tile.
void BM_TileGemm_Libxsmm(benchmark::State& state) {
  const int m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a = Random(int64_t{m} * k, 7), b = Random(int64_t{k} * n, 8), c(int64_t{m} * n);
  const cpu::SmallGemm gemm(m, n, k, m, k, m, 1.0f);
  for (auto _ : state) {
    gemm(a.data(), b.data(), c.data());
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TileGemm_Blas(benchmark::State& state) {
  const int m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a = Random(int64_t{m} * k, 7), b = Random(int64_t{k} * n, 8), c(int64_t{m} * n);
  openblas_set_num_threads(1);
  for (auto _ : state) {
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), m, b.data(), k,
                1.0f, c.data(), m);
    benchmark::DoNotOptimize(c.data());
  }
  openblas_set_num_threads(Threads());
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// Naive unfused forward: per head S = Q K^T (BLAS), softmax, O = P V (BLAS).
// Materializes S_q x S_k per head, which the fused kernel never does.
void BM_ForwardNaive_Cpu(benchmark::State& state) {
  Setup s(state.range(0), state.range(1), false, 1);
  const int64_t S = s.S, D = s.D, H = s.H;
  std::vector<float> scores(S * S);
  for (auto _ : state) {
    for (int64_t h = 0; h < H; ++h) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, S, D, s.p.scale, s.q.data() + h * D,
                  H * D, s.k.data() + h * D, H * D, 0.0f, scores.data(), S);
#pragma omp parallel for num_threads(Threads())
      for (int64_t i = 0; i < S; ++i) {
        float* row = scores.data() + i * S;
        float m = -INFINITY, l = 0.0f;
        for (int64_t j = 0; j < S; ++j) m = std::max(m, row[j]);
        for (int64_t j = 0; j < S; ++j) l += (row[j] = std::exp(row[j] - m));
        for (int64_t j = 0; j < S; ++j) row[j] /= l;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, D, S, 1.0f, scores.data(), S,
                  s.v.data() + h * D, H * D, 0.0f, s.out.data() + h * D, H * D);
    }
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(s.ForwardFlops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Gemm_Blas)->ArgName("n")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TileGemm_Libxsmm)
    ->ArgNames({"m", "n", "k"})
    ->Args({128, 128, 128})
    ->Args({64, 128, 128})
    ->Args({128, 128, 64})
    ->Args({64, 64, 128});
BENCHMARK(BM_TileGemm_Blas)
    ->ArgNames({"m", "n", "k"})
    ->Args({128, 128, 128})
    ->Args({64, 128, 128})
    ->Args({128, 128, 64})
    ->Args({64, 64, 128});
BENCHMARK(BM_Forward_Cpu)
    ->ArgNames({"seqlen", "head_dim", "causal", "group"})
    ->Args({8192, 128, 0, 1})
    ->Args({8192, 128, 1, 1})
    ->Args({4096, 64, 0, 1})
    ->Args({8192, 64, 1, 1})
    ->Args({4096, 128, 1, 4})
    ->Args({2048, 128, 0, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Backward_Cpu)
    ->ArgNames({"seqlen", "head_dim", "causal", "group"})
    ->Args({8192, 128, 0, 1})
    ->Args({8192, 128, 1, 1})
    ->Args({4096, 64, 0, 1})
    ->Args({8192, 64, 1, 1})
    ->Args({4096, 128, 1, 4})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ForwardNaive_Cpu)
    ->ArgNames({"seqlen", "head_dim"})
    ->Args({8192, 128})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace ringattn

BENCHMARK_MAIN();
