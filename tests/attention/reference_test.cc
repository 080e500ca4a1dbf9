// The float64 reference checks itself: its backward against central finite
// differences of its forward (tiny shapes, every mask, softcap, GQA), and
// its row-wise entry point against the full forward.
#include <cmath>
#include <vector>

#include "attention/reference.h"
#include "gtest/gtest.h"
#include "tests/attention/attn_test_util.h"

namespace ringattn::testing {
namespace {

// loss = sum(dout * out) with out from ReferenceForwardF64.
double Loss(const RefProblem& p, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v, const std::vector<float>& dout) {
  std::vector<double> out, lse;
  ReferenceForwardF64(p, q.data(), k.data(), v.data(), &out, &lse);
  double l = 0;
  for (size_t i = 0; i < out.size(); ++i) l += dout[i] * out[i];
  return l;
}

class FiniteDifferenceTest : public ::testing::TestWithParam<std::tuple<int, float>> {};

TEST_P(FiniteDifferenceTest, BackwardMatchesFiniteDifferences) {
  const Mask masks[] = {Mask{}, Mask{true, -1, -1}, Mask{false, 2, 1}, Mask{true, 3, -1}};
  Case c;
  c.seqlen_q = 5;
  c.seqlen_k = 7;
  c.heads = 4;
  c.heads_k = 2;
  c.head_dim = 3;
  c.mask = masks[std::get<0>(GetParam())];
  c.softcap = std::get<1>(GetParam());
  c.q_pos = PosKind::kOffset;
  c.k_pos = PosKind::kOffset;  // q at 38.., k at 39..: row 0 of causal sees nothing
  const Problem pr = MakeProblem(c, 9);
  std::vector<double> dq, dk, dv;
  ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &dq, &dk, &dv);
  std::vector<double> q(pr.q.begin(), pr.q.end()), k(pr.k.begin(), pr.k.end()),
      v(pr.v.begin(), pr.v.end());
  const double h = 1e-6;
  auto check = [&](std::vector<double>& x, const std::vector<double>& grad, const char* name) {
    for (size_t i = 0; i < x.size(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + h;
      const double lp = Loss(pr.ref, q, k, v, pr.dout);
      x[i] = x0 - h;
      const double lm = Loss(pr.ref, q, k, v, pr.dout);
      x[i] = x0;
      EXPECT_NEAR(grad[i], (lp - lm) / (2 * h), 1e-6) << name << "[" << i << "]";
    }
  };
  check(q, dq, "dq");
  check(k, dk, "dk");
  check(v, dv, "dv");
}

INSTANTIATE_TEST_SUITE_P(Masks, FiniteDifferenceTest,
                         ::testing::Combine(::testing::Range(0, 4), ::testing::Values(0.0f, 1.5f)));

TEST(Reference, RowMatchesFullForward) {
  Case c;
  c.seqlen_q = 33;
  c.seqlen_k = 40;
  c.heads = 2;
  c.heads_k = 1;
  c.head_dim = 8;
  c.mask = Mask{true, 10, -1};
  const Problem pr = MakeProblem(c, 2);
  std::vector<double> out, lse, row(c.head_dim);
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out, &lse);
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t i = 0; i < c.seqlen_q; ++i) {
      double l;
      ReferenceForwardRow(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), 0, h, i, row.data(), &l);
      EXPECT_EQ(l, lse[h * c.seqlen_q + i]);
      for (int64_t d = 0; d < c.head_dim; ++d)
        EXPECT_EQ(row[d], out[(i * c.heads + h) * c.head_dim + d]);
    }
}

}  // namespace
}  // namespace ringattn::testing
