// The strategies beside the ring -- allgather, ulysses, hybrid:UxR -- over
// `local` ranks against the float64 reference, forward and backward: W in
// {1, 2, 3, 4, 6, 8}, every sharding, every mask kind (causal, windows,
// documents, prefix-LM, sinks, block masks shared and per head), GQA and
// MQA, head counts that do not divide by W, lengths that do not divide by W,
// bf16; determinism; agreement with the ring; the errors (a hybrid shape
// that is not W, too few heads for Ulysses); a rank that never joins the
// all-to-all.
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "comm/local/local_comm.h"
#include "gtest/gtest.h"
#include "runtime/planner.h"
#include "runtime/ringattn.h"
#include "tests/attention/attn_test_util.h"
#include "tests/runtime/ring_test_util.h"

namespace ringattn::testing {
namespace {

struct StrategyCase {
  RingCase rc;
  StrategySpec spec;
  std::string Name() const {
    std::string s = StrategySpecName(spec.strategy, spec.ulysses, rc.world);
    for (char& ch : s) {
      if (ch == ':') ch = '_';
    }
    return absl::StrCat(s, "_", rc.Name());
  }
};
void PrintTo(const StrategyCase& c, std::ostream* os) { *os << c.Name(); }

RingRunOptions With(const StrategySpec& spec, RingRunOptions o = {}) {
  o.tweak = [spec](int, RingOptions* opt, int64_t*) {
    opt->strategy = spec.strategy;
    opt->ulysses = spec.ulysses;
  };
  return o;
}

std::vector<StrategyCase> Cases() {
  std::vector<StrategyCase> cases;
  const int64_t S0 = 131;
  // Masks in turn, each a function of the sequence length and world size.
  auto mask = [](int turn, int64_t S, int world) -> std::pair<Mask, std::string> {
    switch (turn % 8) {
      case 0: return {Mask{}, ""};
      case 1: return {Mask{true, -1, -1}, ""};
      case 2: return {Mask{false, 24, 8}, ""};
      case 3: return {Mask{true, 40, -1}, ""};
      case 4: return {WithRingDocuments(Mask{true, -1, -1}, RingDocs::kMixed, S, world), "docs"};
      case 5: return {Mask::Sink(4, 30), "sink"};
      case 6: return {WithRingBlocks(Mask{true, -1, -1}, BlockKind::kRandom, S, 16, 4), "blocks"};
      default: return {WithRingDocuments(Mask::PrefixLM(30), RingDocs::kTiny, S, world), "prefix"};
    }
  };
  // (H, Hkv): MHA, GQA, MQA, and counts that do not divide by W.
  const int64_t heads[][2] = {{8, 8}, {8, 2}, {4, 1}, {6, 3}};
  std::vector<StrategySpec> specs;
  int turn = 0;
  for (int world : {1, 2, 3, 4, 6, 8}) {
    specs = {{Strategy::kAllGather, 0, 0}, {Strategy::kUlysses, 0, 0}};
    for (int u = 2; u < world; ++u) {
      if (world % u == 0) specs.push_back({Strategy::kHybrid, u, world / u});
    }
    for (const StrategySpec& spec : specs)
      for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped,
                         Sharding::kBalanced}) {
        StrategyCase c;
        c.spec = spec;
        c.rc.world = world;
        c.rc.sharding = s;
        c.rc.c.seqlen_q = c.rc.c.seqlen_k = S0 + world;
        const int U = spec.strategy == Strategy::kUlysses  ? world
                      : spec.strategy == Strategy::kHybrid ? spec.ulysses
                                                           : 1;
        int h = turn % 4;
        while (heads[h][0] < U) h = (h + 1) % 4;  // Ulysses needs H >= U
        if (U > 6) h = 0;
        c.rc.c.heads = heads[h][0];
        c.rc.c.heads_k = heads[h][1];
        if (U == 8) c.rc.c.heads = c.rc.c.heads_k = 8;
        c.rc.c.head_dim = 16;
        auto [m, tag] = mask(turn, c.rc.c.seqlen_q, world);
        c.rc.c.mask = m;
        c.rc.tag = tag;
        if (turn % 5 == 3) {
          c.rc.c.dtype = DType::kBFloat16;
          c.rc.c.softcap = 3.0f;
        }
        if (turn % 7 == 2) c.rc.c.batch = 2;
        ++turn;
        cases.push_back(c);
      }
  }
  return cases;
}

class StrategyTest : public ::testing::TestWithParam<StrategyCase> {};

TEST_P(StrategyTest, MatchesReferenceForwardAndBackward) {
  const StrategyCase& c = GetParam();
  const Problem pr = MakeProblem(c.rc.c, 91);
  const RingResult r = RunRing(pr, c.rc.world, c.rc.sharding, With(c.spec));
  ASSERT_TRUE(r.Ok().ok()) << r.Ok();
  ExpectClose(r, Expect(pr));
}

INSTANTIATE_TEST_SUITE_P(Sweep, StrategyTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.Name(); });

Case GqaCase() {
  Case c;
  c.seqlen_q = c.seqlen_k = 157;
  c.heads = 6;
  c.heads_k = 2;
  c.head_dim = 32;
  c.mask = Mask{true, -1, -1};
  return c;
}

// Every strategy is bitwise reproducible, and all agree with the ring
// within the tolerance rule (both meet it against float64).
TEST(Strategies, DeterministicAndAgreeWithTheRing) {
  const Problem pr = MakeProblem(GqaCase(), 5);
  const RingResult ring = RunRing(pr, 4, Sharding::kZigzag);
  ASSERT_TRUE(ring.Ok().ok()) << ring.Ok();
  const RingExpectation e = Expect(pr);
  for (const StrategySpec& spec : {StrategySpec{Strategy::kAllGather, 0, 0},
                                   StrategySpec{Strategy::kUlysses, 0, 0},
                                   StrategySpec{Strategy::kHybrid, 2, 2}}) {
    SCOPED_TRACE(StrategySpecName(spec.strategy, spec.ulysses, 4));
    const RingResult a = RunRing(pr, 4, Sharding::kZigzag, With(spec));
    const RingResult b = RunRing(pr, 4, Sharding::kZigzag, With(spec));
    ASSERT_TRUE(a.Ok().ok()) << a.Ok();
    for (auto [x, y] : {std::pair{&a.out, &b.out}, {&a.lse, &b.lse}, {&a.dq, &b.dq},
                        {&a.dk, &b.dk}, {&a.dv, &b.dv}}) {
      ASSERT_EQ(x->size(), y->size());
      EXPECT_EQ(0, std::memcmp(x->data(), y->data(), x->size() * 4));
    }
    ExpectClose(a, e);
    double worst = 0;  // the strategies differ from the ring by rounding only
    for (size_t i = 0; i < a.out.size(); ++i) worst = std::max(worst, std::abs(double(a.out[i]) - ring.out[i]));
    EXPECT_LE(worst, 2 * e.tol_out);
  }
}

// The all-gather moves only what the rank's queries can see: with a
// sliding window each rank receives a band, not the sequence.
TEST(Strategies, AllGatherSendsOnlyVisibleRowsWithAWindow) {
  Case c = GqaCase();
  c.seqlen_q = c.seqlen_k = 400;
  c.mask = Mask{true, 20, -1};
  const Problem pr = MakeProblem(c, 6);
  RingRunOptions o = With({Strategy::kAllGather, 0, 0});
  o.backward = false;
  const RingResult r = RunRing(pr, 4, Sharding::kContiguous, o);
  ASSERT_TRUE(r.Ok().ok()) << r.Ok();
  ExpectClose(r, Expect(pr, false), false);
  // Rank r > 0 needs the 20 rows before its block from rank r - 1: each
  // rank sends its own block to itself and a band of 20 rows of K and V
  // (fp32) to the next, not the 4 x 100 rows of a full all-gather. (Plus
  // the options message of the first call.)
  const int64_t row = c.heads_k * c.head_dim * 4 * 2;
  constexpr int64_t kOptions = 256;
  for (int rank = 0; rank < 4; ++rank) {
    const int64_t rows = rank < 3 ? 100 + 20 : 100;
    EXPECT_GE(r.bytes_sent[rank], rows * row) << "rank " << rank;
    EXPECT_LE(r.bytes_sent[rank], rows * row + kOptions) << "rank " << rank;
  }
}

TEST(Strategies, BadShapesAreClearErrorsBeforeAnyCommunication) {
  auto world = comm::LocalWorld::Create(4);
  ASSERT_TRUE(world.ok());
  RingOptions o;
  o.seqlen = 64;
  o.strategy = Strategy::kHybrid;
  o.ulysses = 3;  // 3 x R != 4
  auto a = RingAttention::Create(&(*world)->Comm(0), o);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(a.status().message(), "hybrid")) << a.status();
  o.ulysses = 0;
  EXPECT_TRUE(absl::StrContains(RingAttention::Create(&(*world)->Comm(0), o).status().message(),
                                "ulysses"));
  EXPECT_FALSE(ParseStrategySpec("hybrid:2").ok());
  EXPECT_FALSE(ParseStrategySpec("hybrid:0x4").ok());
  EXPECT_FALSE(ParseStrategySpec("hybrid").ok());
  EXPECT_TRUE(absl::StrContains(ParseStrategySpec("fast").status().message(), "strategy"));
  auto spec = ParseStrategySpec("hybrid:2x4");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->ulysses, 2);
  EXPECT_EQ(spec->ring, 4);
  // Too few query heads for the Ulysses group: refused on every rank, with
  // nothing sent.
  Case c = GqaCase();
  c.heads = 2;
  c.heads_k = 1;
  const Problem pr = MakeProblem(c, 7);
  const RingResult r = RunRing(pr, 4, Sharding::kZigzag, With({Strategy::kUlysses, 0, 0}));
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(r.fwd_status[rank].code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(r.fwd_status[rank].message(), "q heads"))
        << r.fwd_status[rank];
  }
}

// A rank that never joins: every other rank fails within the timeout,
// naming it, for each strategy's first all-to-all or all-gather.
TEST(Strategies, SilentPeerFailsEverySurvivor) {
  const Problem pr = MakeProblem(GqaCase(), 8);
  for (const StrategySpec& spec : {StrategySpec{Strategy::kAllGather, 0, 0},
                                   StrategySpec{Strategy::kUlysses, 0, 0},
                                   StrategySpec{Strategy::kHybrid, 2, 2}}) {
    SCOPED_TRACE(StrategySpecName(spec.strategy, spec.ulysses, 4));
    RingRunOptions o = With(spec);
    o.backward = false;
    o.timeout = absl::Milliseconds(400);
    o.take_part = [](int rank) { return rank != 3; };
    const auto t0 = std::chrono::steady_clock::now();
    const RingResult r = RunRing(pr, 4, Sharding::kZigzag, o);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
    for (int rank = 0; rank < 3; ++rank) {
      const absl::Status& s = r.fwd_status[rank];
      EXPECT_TRUE(s.code() == absl::StatusCode::kDeadlineExceeded ||
                  s.code() == absl::StatusCode::kAborted)
          << s;
    }
  }
}

}  // namespace
}  // namespace ringattn::testing

namespace ringattn::testing {
namespace {

PlanCosts Costs(double tflops, double gbps, double latency_us) {
  return PlanCosts::Given(tflops, 0, gbps, latency_us);
}

std::string Pick(Sharding s, const Mask& m, int world, int64_t H, int64_t Hk,
                 const PlanCosts& c, int64_t S = 65536) {
  PlanShape shape;
  shape.heads = H;
  shape.kv_heads = Hk;
  shape.head_dim = 128;
  shape.dtype = DType::kBFloat16;
  const auto plan = PredictAll(s, S, 1, m, world, shape, c);
  return Choose(plan, true).name;
}

// Synthetic costs where the answer is known.
TEST(Planner, PicksTheKnownAnswer) {
  // Compute-starved (free links), causal on contiguous shards: the ring and
  // the all-gather wait for the last rank's triangle; Ulysses splits heads
  // over the whole sequence and balances the work.
  EXPECT_EQ(Pick(Sharding::kContiguous, Mask::Causal(), 8, 32, 32, Costs(100, 1e6, 0)), "ulysses");
  // Bandwidth-starved MQA: Ulysses would move every query head; the ring
  // moves one KV head and hides it behind the compute.
  EXPECT_EQ(Pick(Sharding::kZigzag, Mask{}, 8, 32, 1, Costs(100, 1, 1)), "ring");
  // Latency-bound tiny problem: one round of messages beats W - 1 steps.
  EXPECT_EQ(Pick(Sharding::kZigzag, Mask{}, 8, 8, 8, Costs(1000, 100, 5000), 512), "allgather");
  // Few heads: 2 < W, so Ulysses cannot run; hybrid:2x4 can.
  const auto plan = PredictAll(Sharding::kZigzag, 65536, 1, Mask::Causal(), 8,
                               PlanShape{1, 2, 2, 128, DType::kBFloat16}, Costs(100, 1e6, 0));
  for (const PlanEntry& e : plan) {
    if (e.name == "ulysses" || e.name == "hybrid:4x2") {
      EXPECT_FALSE(e.feasible) << e.name;
    }
    if (e.name == "hybrid:2x4") {
      EXPECT_TRUE(e.feasible);
    }
  }
  EXPECT_NE(Choose(plan, true).name, "ulysses");
}

// strategy = auto chooses the same strategy on every rank, says which, and
// is exact.
TEST(Planner, AutoRunsTheChoiceEverywhere) {
  const Problem pr = MakeProblem(GqaCase(), 9);
  for (double gbps : {1e-3, 1e6}) {
    RingRunOptions o;
    o.tweak = [gbps](int, RingOptions* opt, int64_t*) {
      opt->strategy = Strategy::kAuto;
      opt->plan_tflops = 1;
      opt->plan_link_gbps = gbps;
      opt->plan_latency_us = 1;
    };
    const RingResult r = RunRing(pr, 4, Sharding::kContiguous, o);
    ASSERT_TRUE(r.Ok().ok()) << r.Ok();
    ExpectClose(r, Expect(pr));
  }
  // Calibrated: the same, measured on the ranks.
  RingRunOptions o;
  o.tweak = [](int, RingOptions* opt, int64_t*) { opt->strategy = Strategy::kAuto; };
  const RingResult r = RunRing(pr, 2, Sharding::kZigzag, o);
  ASSERT_TRUE(r.Ok().ok()) << r.Ok();
  ExpectClose(r, Expect(pr));
}

}  // namespace
}  // namespace ringattn::testing
