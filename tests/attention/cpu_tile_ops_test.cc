// The CPU kernels' tile ops (attention/cpu/tile_ops.h), every instruction set
// this CPU runs, against float64: the forward's online softmax over a row
// streamed in tiles (lazy rescaling included), the backward's P and dS, the
// softcap, exp2 at its edges; and RINGATTN_CPU_ISA's checks. The kernels
// themselves run under each set in CI (cpu_kernels_test_isa_*).
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention/cpu/kernels.h"
#include "attention/cpu/tile_ops.h"
#include "gtest/gtest.h"

namespace ringattn::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

const TileOps* Isa(const std::string& name) {
  if (name == "avx512") return CpuHasAvx512() ? &kAvx512TileOps : nullptr;
  if (name == "avx2") return kAvx2TileOps.isa != nullptr ? &kAvx2TileOps : nullptr;
  return &kScalarTileOps;
}

class TileOpsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ops_ = Isa(GetParam());
    if (ops_ == nullptr) GTEST_SKIP() << "no " << GetParam() << " on this CPU or build";
  }
  const TileOps* ops_ = nullptr;
};

// One query row's scores, streamed through online_softmax in tiles of `ld`
// columns (the last one `n` wide), with P V accumulated in float64 from the
// P the op returns: the result must be the row's exact softmax-weighted sum.
struct Row {
  std::vector<float> s;      // base-2 scores, -inf masked
  std::vector<double> v;     // [keys][d]
};

void CheckRows(const TileOps& ops, const std::vector<Row>& rows, int64_t ld, int64_t d) {
  const int64_t nr = static_cast<int64_t>(rows.size());
  const int64_t keys = static_cast<int64_t>(rows[0].s.size());
  std::vector<float> m(nr, -kInf), l(nr, 0.0f), o(nr * d, 0.0f), tile(nr * ld);
  for (int64_t j0 = 0; j0 < keys; j0 += ld) {
    const int64_t n = std::min(ld, keys - j0);
    for (int64_t r = 0; r < nr; ++r) {
      for (int64_t j = 0; j < ld; ++j) tile[r * ld + j] = j < n ? rows[r].s[j0 + j] : 12345.0f;
    }
    ops.online_softmax(tile.data(), nr, n, ld, m.data(), l.data(), o.data(), d);
    for (int64_t r = 0; r < nr; ++r) {
      for (int64_t j = 0; j < ld; ++j) {
        const float p = tile[r * ld + j];
        if (j >= n) {
          ASSERT_EQ(p, 0.0f) << "padding column " << j << " of row " << r;
          continue;
        }
        if (rows[r].s[j0 + j] == -kInf) {
          ASSERT_EQ(p, 0.0f) << "masked key " << j0 + j;
        }
        ASSERT_LE(p, std::exp2(kLazyRescaleLog2)) << "stale max exceeded by more than 2^8";
        // o is fp32 like the kernel's; accumulate in double then round, as a GEMM would.
        for (int64_t x = 0; x < d; ++x) {
          o[r * d + x] = static_cast<float>(o[r * d + x] + double{p} * rows[r].v[(j0 + j) * d + x]);
        }
      }
    }
  }
  for (int64_t r = 0; r < nr; ++r) {
    double mx = -INFINITY;
    for (float s : rows[r].s) mx = std::max(mx, double{s});
    if (mx == -INFINITY) {
      EXPECT_EQ(l[r], 0.0f) << "row " << r << " has no visible key";
      EXPECT_EQ(m[r], -kInf);
      continue;
    }
    double sum = 0.0;
    std::vector<double> ref(d, 0.0);
    for (int64_t j = 0; j < keys; ++j) {
      const double p = std::exp2(double{rows[r].s[j]} - mx);
      sum += p;
      for (int64_t x = 0; x < d; ++x) ref[x] += p * rows[r].v[j * d + x];
    }
    const double lse2 = mx + std::log2(sum);
    EXPECT_NEAR(m[r] + std::log2(double{l[r]}), lse2, 2e-6 * std::max(1.0, std::abs(lse2)))
        << "row " << r;
    for (int64_t x = 0; x < d; ++x) {
      EXPECT_NEAR(o[r * d + x] / l[r], ref[x] / sum, 2e-6) << "row " << r << " dim " << x;
    }
  }
}

std::vector<Row> RandomRows(int64_t nr, int64_t keys, int64_t d, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  std::vector<Row> rows(nr);
  for (int64_t r = 0; r < nr; ++r) {
    rows[r].s.resize(keys);
    rows[r].v.resize(keys * d);
    for (int64_t j = 0; j < keys; ++j) {
      // Row r's max climbs by r/2 per key on top of noise: row 0 stays put
      // (lazy: no rescale after the first tile), larger r rescale often.
      rows[r].s[j] = normal(gen) + 0.5f * static_cast<float>(r * j) / 8.0f;
      if ((j * 7 + r) % 5 == 0) rows[r].s[j] = -kInf;  // masked keys
    }
    for (double& x : rows[r].v) x = uni(gen);
  }
  return rows;
}

TEST_P(TileOpsTest, OnlineSoftmaxMatchesFloat64) {
  for (int64_t ld : {16, 64}) {
    for (int64_t keys : {1, 7, 64, 100, 333}) {
      for (int64_t d : {5, 64}) {
        SCOPED_TRACE(::testing::Message() << "ld " << ld << " keys " << keys << " d " << d);
        CheckRows(*ops_, RandomRows(6, keys, d, static_cast<uint32_t>(ld + keys + d)), ld, d);
      }
    }
  }
}

TEST_P(TileOpsTest, OnlineSoftmaxJumpsAndEmptyRows) {
  std::vector<Row> rows = RandomRows(4, 200, 8, 7);
  for (float& s : rows[0].s) s = -kInf;                       // never a visible key
  for (int64_t j = 0; j < 64; ++j) rows[1].s[j] = -kInf;      // visible from tile 2 on
  rows[2].s[150] = 90.0f;                                     // a late jump of 2^80
  for (int64_t j = 0; j < 200; ++j) rows[3].s[j] = 7.9f * (j / 64);  // just under the bound
  CheckRows(*ops_, rows, 64, 8);
}

TEST_P(TileOpsTest, OnlineSoftmaxKeepsNaN) {
  for (int64_t ld : {16, 64}) {  // 64: the full-tile path
    SCOPED_TRACE(::testing::Message() << "ld " << ld);
    std::vector<float> s(2 * ld, 1.0f), m(2, -kInf), l(2, 0.0f), o(2 * 4, 0.0f);
    s[3] = kNaN;       // row 0: a NaN among finite scores
    s[ld + 0] = kNaN;  // row 1: a NaN with the others masked
    for (int64_t j = 1; j < ld; ++j) s[ld + j] = -kInf;
    ops_->online_softmax(s.data(), 2, ld, ld, m.data(), l.data(), o.data(), 4);
    EXPECT_TRUE(std::isnan(s[3]));
    EXPECT_TRUE(std::isnan(l[0]));
    EXPECT_TRUE(std::isnan(s[ld]));
    EXPECT_TRUE(std::isnan(l[1]));
  }
}

TEST_P(TileOpsTest, ProbsAndGradsMatchFloat64) {
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (bool softcap : {false, true}) {
    for (int64_t cols : {64, 13}) {
      const int64_t rows = 9;
      std::vector<float> p(rows * cols), ds(rows * cols), t(rows * cols), lse(cols), dsum(cols);
      for (float& x : p) x = 20.0f * uni(gen);
      for (float& x : ds) x = uni(gen);
      for (float& x : t) x = uni(gen);
      for (float& x : lse) x = 20.0f + 5.0f * uni(gen);
      for (float& x : dsum) x = uni(gen);
      lse[1] = kInf;  // a padding or fully masked query: P = 0
      const std::vector<float> p0 = p, ds0 = ds;
      ops_->probs_and_grads(p.data(), ds.data(), softcap ? t.data() : nullptr, lse.data(),
                            dsum.data(), rows, cols, 0.125f);
      for (int64_t j = 0; j < rows; ++j) {
        for (int64_t i = 0; i < cols; ++i) {
          const int64_t x = j * cols + i;
          const double pr = std::exp2(double{p0[x] - lse[i]});  // the op subtracts in fp32
          double g = pr * (double{ds0[x]} - dsum[i]) * 0.125;
          if (softcap) g *= 1.0 - double{t[x]} * t[x];
          ASSERT_NEAR(p[x], pr, 2.5e-7 * pr) << "P at " << j << "," << i;
          ASSERT_NEAR(ds[x], g, 1e-6 * std::abs(pr) + 1e-30) << "dS at " << j << "," << i;
        }
      }
    }
  }
}

// exp2 at its edges, through P = exp2(s - 0): exactly 0 at -inf, at most
// 2^-126 below -126 (AVX2 flushes to 0, AVX-512 and the scalar set keep
// subnormals), +inf from 128 (AVX2 gives +inf from 127 on: the kernels'
// arguments never exceed 8), NaN kept, and within 2 ulp in between.
TEST_P(TileOpsTest, Exp2Edges) {
  std::vector<float> s;
  for (float x = -140.0f; x <= 130.0f; x += 0.37f) s.push_back(x);
  for (float x : {-kInf, kInf, kNaN, -126.0f, -125.99f, 127.99f, 0.0f, -0.5f, 0.5f}) s.push_back(x);
  const int64_t n = static_cast<int64_t>(s.size());
  std::vector<float> p = s, ds(n, 0.0f), zero(n, 0.0f);
  ops_->probs_and_grads(p.data(), ds.data(), nullptr, zero.data(), zero.data(), 1, n, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float x = s[i];
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(p[i]));
    } else if (x == -kInf) {
      EXPECT_EQ(p[i], 0.0f);
    } else if (x < -126.0f) {
      EXPECT_GE(p[i], 0.0f) << "exp2(" << x << ")";
      EXPECT_LE(p[i], std::ldexp(1.0f, -126)) << "exp2(" << x << ")";
    } else if (x >= 128.0f) {
      EXPECT_EQ(p[i], kInf) << "exp2(" << x << ")";
    } else {
      const double ref = std::exp2(double{x});
      if (x > 127.0f && p[i] == kInf) continue;
      EXPECT_NEAR(p[i], ref, 2.0 * std::ldexp(1.0, std::ilogb(ref) - 23)) << "exp2(" << x << ")";
    }
  }
}

TEST_P(TileOpsTest, SoftcapMatchesTanh) {
  std::vector<float> s, t;
  for (float x = -30.0f; x <= 30.0f; x += 0.173f) s.push_back(x);
  s.push_back(0.0f);
  const std::vector<float> s0 = s;
  t.assign(s.size(), kNaN);
  ops_->softcap(s.data(), t.data(), static_cast<int64_t>(s.size()), 3.0f);
  for (size_t i = 0; i < s.size(); ++i) {
    const double th = std::tanh(double{s0[i]});
    EXPECT_NEAR(t[i], th, 4e-7) << "tanh(" << s0[i] << ")";
    EXPECT_NEAR(s[i], 3.0 * th, 1.2e-6) << "3 tanh(" << s0[i] << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, TileOpsTest, ::testing::Values("avx512", "avx2", "scalar"),
                         [](const auto& info) { return info.param; });

// RINGATTN_CPU_ISA: the sets by name, auto, and clear errors.
class IsaVariable : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv("RINGATTN_CPU_ISA"); }
  static absl::StatusOr<const TileOps*> With(const char* value) {
    setenv("RINGATTN_CPU_ISA", value, 1);
    return ChooseTileOps();
  }
};

TEST_F(IsaVariable, NamesAndAuto) {
  ASSERT_TRUE(With("scalar").ok());
  EXPECT_EQ(*With("scalar"), &kScalarTileOps);
  const TileOps* best = CpuHasAvx512() ? &kAvx512TileOps
                        : kAvx2TileOps.isa != nullptr ? &kAvx2TileOps
                                                      : &kScalarTileOps;
  EXPECT_EQ(*With("auto"), best);
  EXPECT_EQ(*With(""), best);
  unsetenv("RINGATTN_CPU_ISA");
  EXPECT_EQ(*ChooseTileOps(), best);
}

TEST_F(IsaVariable, UnknownValueIsNamed) {
  const auto r = With("sse9");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("RINGATTN_CPU_ISA"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("sse9"), std::string::npos) << r.status();
}

TEST_F(IsaVariable, Avx512OnlyWhereTheCpuHasIt) {
  const auto r = With("avx512");
  if (CpuHasAvx512()) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_STREQ((*r)->isa, "avx512");
  } else {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(r.status().message().find("RINGATTN_CPU_ISA=avx512"), std::string::npos);
  }
}

TEST_F(IsaVariable, KernelsReportTheError) {
  setenv("RINGATTN_CPU_ISA", "bogus", 1);
  AttnParams p;  // a valid call, but for the variable
  p.batch = p.seqlen_q = p.seqlen_k = p.num_heads = p.num_heads_k = 1;
  p.head_dim = 4;
  p.scale = 0.5f;
  p.q_pos = p.k_pos = PositionMap::Contiguous(0, 1);
  float q[4] = {1, 2, 3, 4}, out[4], lse[1];
  p.q = p.k = p.v = q;
  p.out = out;
  p.lse = lse;
  p.q_stride = p.k_stride = p.v_stride = p.out_stride = TensorStrides::Contiguous(1, 1, 4);
  p.lse_batch_stride = p.lse_head_stride = 1;
  const absl::Status s = Forward(p, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("RINGATTN_CPU_ISA"), std::string::npos) << s;
  unsetenv("RINGATTN_CPU_ISA");
  ASSERT_TRUE(Forward(p, 1).ok()) << "the same call without the variable";
}

}  // namespace
}  // namespace ringattn::cpu
