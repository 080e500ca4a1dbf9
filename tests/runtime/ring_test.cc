// The ring over `local` ranks against the float64 reference and the single
// rank: forward and backward for every layout and mask, uneven lengths and
// empty shards, GQA, softcap, bf16; determinism; the window's early exit;
// faults (abort, silent peer, shapes that disagree across ranks).
#include <atomic>
#include <cstring>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <algorithm>
#include <tuple>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "comm/local/local_comm.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "runtime/plan.h"
#include "runtime/ringattn.h"
#include "runtime/validate.h"
#include "tests/attention/attn_test_util.h"
#include "tests/runtime/ring_test_util.h"

namespace ringattn::testing {
namespace {

std::vector<RingCase> RingCases() {
  std::vector<RingCase> cases;
  const std::vector<Mask> masks = {Mask{}, Mask{true, -1, -1}, Mask{false, 24, 8}, Mask{true, 40, -1}};
  for (int world : {1, 2, 3, 4, 5, 7, 8})
    for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped})
      for (size_t m = 0; m < masks.size(); ++m) {
        RingCase rc;
        rc.world = world;
        rc.sharding = s;
        rc.c.mask = masks[m];
        rc.c.seqlen_q = rc.c.seqlen_k = 101 + 2 * world;  // divides by neither W nor 2W
        rc.c.heads = 2;
        rc.c.heads_k = 1;
        rc.c.head_dim = 32;
        cases.push_back(rc);
      }
  // GQA, softcap, bf16, batch, and S < W (empty shards).
  for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
    RingCase rc;
    rc.world = 4;
    rc.sharding = s;
    rc.c.batch = 2;
    rc.c.heads = 8;
    rc.c.heads_k = 2;
    rc.c.head_dim = 64;
    rc.c.seqlen_q = rc.c.seqlen_k = 150;
    rc.c.softcap = 2.0f;
    rc.c.mask = Mask{true, -1, -1};
    rc.c.dtype = DType::kBFloat16;
    cases.push_back(rc);
    rc.c.dtype = DType::kFloat32;
    rc.c.softcap = 0.0f;
    rc.c.mask = Mask{false, 30, 30};
    cases.push_back(rc);
    RingCase tiny;
    tiny.world = 7;
    tiny.sharding = s;
    tiny.c.seqlen_q = tiny.c.seqlen_k = 5;  // S < W and S < 2W
    tiny.c.head_dim = 16;
    tiny.c.mask = Mask{true, -1, -1};
    cases.push_back(tiny);
  }
  // Packed documents: every world size, sharding (balanced included) and
  // kind of documents, with the masks in turn; then GQA, softcap, bf16.
  const std::vector<Mask> doc_masks = {Mask{true, -1, -1}, Mask{}, Mask{true, 30, -1},
                                       Mask::PrefixLM(40)};
  int turn = 0;
  for (int world : {1, 2, 3, 4, 5, 8})
    for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped,
                       Sharding::kBalanced})
      for (RingDocs d : {RingDocs::kTiny, RingDocs::kMixed, RingDocs::kTileEdges, RingDocs::kOne,
                         RingDocs::kShardEdges}) {
        RingCase rc;
        rc.world = world;
        rc.sharding = s;
        rc.c.seqlen_q = rc.c.seqlen_k = 301 + world;
        rc.c.heads = 2;
        rc.c.heads_k = 1;
        rc.c.head_dim = 32;
        rc.c.mask = WithRingDocuments(doc_masks[turn++ % doc_masks.size()], d, rc.c.seqlen_q, world);
        rc.tag = RingDocsName(d);
        cases.push_back(rc);
      }
  // Attention sinks with a sliding window (and documents): every step needs
  // the block that holds the sink.
  for (int world : {1, 2, 3, 4, 5})
    for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
      RingCase rc;
      rc.world = world;
      rc.sharding = s;
      rc.c.seqlen_q = rc.c.seqlen_k = 257 + world;
      rc.c.heads = 2;
      rc.c.heads_k = 1;
      rc.c.head_dim = 32;
      rc.c.mask = world % 2 == 0 ? Mask::Sink(4, 40)
                                 : WithRingDocuments(Mask::Sink(6, 30), RingDocs::kMixed,
                                                     rc.c.seqlen_q, world);
      rc.tag = "sink";
      cases.push_back(rc);
    }
  // Block masks: every world size and sharding, each kind of block mask,
  // ANDed with the other rules in turn; blocks smaller than a tile, not
  // aligned to shards, one per head.
  const std::vector<Mask> block_bases = {Mask{}, Mask{true, -1, -1}, Mask{true, 60, -1},
                                         WithRingDocuments(Mask{true, -1, -1}, RingDocs::kMixed,
                                                           305, 1)};
  const BlockKind block_kinds[] = {BlockKind::kRandom, BlockKind::kDiagonal, BlockKind::kAllOff,
                                   BlockKind::kAllOn};
  turn = 0;
  for (int world : {1, 2, 3, 4, 5, 8})
    for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped,
                       Sharding::kBalanced}) {
      RingCase rc;
      rc.world = world;
      rc.sharding = s;
      rc.c.seqlen_q = rc.c.seqlen_k = 305;
      rc.c.heads = 2;
      rc.c.heads_k = 1;
      rc.c.head_dim = 32;
      const int64_t size = turn % 3 == 0 ? 16 : turn % 3 == 1 ? 50 : 64;
      rc.c.mask = WithRingBlocks(block_bases[turn % block_bases.size()], block_kinds[(turn / 4) % 4],
                                 305, size, turn % 5 == 0 ? 2 : 1);
      rc.tag = "blocks";
      ++turn;
      cases.push_back(rc);
    }
  for (Sharding s : {Sharding::kZigzag, Sharding::kBalanced}) {
    RingCase rc;
    rc.world = 3;
    rc.sharding = s;
    rc.c.heads = 8;
    rc.c.heads_k = 2;
    rc.c.head_dim = 64;
    rc.c.seqlen_q = rc.c.seqlen_k = 400;
    rc.c.softcap = 2.0f;
    rc.c.dtype = DType::kBFloat16;
    rc.c.mask = WithRingDocuments(Mask{true, -1, -1}, RingDocs::kMixed, 400, 3);
    cases.push_back(rc);
  }
  return cases;
}

class RingTest : public ::testing::TestWithParam<RingCase> {};

TEST_P(RingTest, MatchesReferenceForwardAndBackward) {
  const RingCase& rc = GetParam();
  const Problem pr = MakeProblem(rc.c, 77);
  const RingResult r = RunRing(pr, rc.world, rc.sharding);
  ASSERT_TRUE(r.Ok().ok()) << r.Ok();
  ExpectClose(r, Expect(pr));
}

INSTANTIATE_TEST_SUITE_P(Sweep, RingTest, ::testing::ValuesIn(RingCases()),
                         [](const auto& info) { return info.param.Name(); });

Case SmallCase(Mask m = Mask{true, -1, -1}) {
  Case c;
  c.seqlen_q = c.seqlen_k = 203;
  c.heads = 2;
  c.heads_k = 1;
  c.head_dim = 32;
  c.mask = m;
  return c;
}

TEST(Ring, DeterministicAcrossRuns) {
  const Problem pr = MakeProblem(SmallCase(), 3);
  Case packed = SmallCase(Mask::Sink(3, 40));  // documents, sinks, the balanced layout
  packed.mask = WithRingDocuments(packed.mask, RingDocs::kMixed, packed.seqlen_q, 4);
  const Problem pd = MakeProblem(packed, 3);
  // A random block mask per head (partial tiles, skipped tiles, rows of none).
  const Problem pb = MakeProblem(
      SmallCase(WithRingBlocks(Mask{true, -1, -1}, BlockKind::kRandom, 203, 16, 2)), 3);
  for (auto [p, s] : {std::pair{&pr, Sharding::kZigzag}, std::pair{&pr, Sharding::kStriped},
                      std::pair{&pd, Sharding::kBalanced}, std::pair{&pb, Sharding::kZigzag}}) {
    const RingResult a = RunRing(*p, 4, s), b = RunRing(*p, 4, s);
    EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.dq.data(), b.dq.data(), a.dq.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.dk.data(), b.dk.data(), a.dk.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.dv.data(), b.dv.data(), a.dv.size() * 4));
  }
}

// The per-rank check nccl_ring_test uses (one process per rank, no
// gather): every rank's rows meet the reference, and a wrong row fails it.
TEST(Ring, PerRankCheckOfRunRank) {
  const Problem pr = MakeProblem(SmallCase(Mask{true, -1, -1}), 4);
  const RingExpectation e = Expect(pr);
  auto world = comm::LocalWorld::Create(3);
  ASSERT_TRUE(world.ok());
  std::vector<RankOutput> ranks(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] { ranks[r] = RunRank(pr, (*world)->Comm(r), Sharding::kZigzag); });
  }
  for (auto& t : threads) t.join();
  auto layout = Layout::Create(Sharding::kZigzag, pr.c.seqlen_q, 3, 2);
  ASSERT_TRUE(layout.ok());
  for (int r = 0; r < 3; ++r) ExpectRankClose(pr, e, *layout, r, ranks[r]);
  ranks[1].dk[7] ^= 0x40;  // an exponent bit of one element (fp32 or bf16)
  EXPECT_NONFATAL_FAILURE(ExpectRankClose(pr, e, *layout, 1, ranks[1]), "dk of rank 1");
}

// A window narrower than a shard needs one rotation: the other W-2 blocks
// are never sent (forward only: every rank sends exactly one KV block).
TEST(Ring, WindowEndsTheRingEarly) {
  const Problem narrow = MakeProblem(SmallCase(Mask{false, 10, 0}), 3);
  const Problem full = MakeProblem(SmallCase(Mask{}), 3);
  RingRunOptions fwd_only;
  fwd_only.backward = false;
  const RingResult a = RunRing(narrow, 4, Sharding::kContiguous, fwd_only);
  const RingResult b = RunRing(full, 4, Sharding::kContiguous, fwd_only);
  int64_t sent_a = 0, sent_b = 0;
  for (int r = 0; r < 4; ++r) {
    sent_a += a.bytes_sent[r];
    sent_b += b.bytes_sent[r];
  }
  const int64_t block = 2 * 203 * 1 * 32 * 4;  // K and V of all ranks, fp32
  // Besides the KV blocks, each rank sends its options once (first call).
  const int64_t options = 4 * static_cast<int64_t>(sizeof(OptionsDigest));
  EXPECT_EQ(sent_a, block + options);      // one rotation
  EXPECT_EQ(sent_b, 3 * block + options);  // W - 1 rotations
}

// Documents that never cross a contiguous shard's edge need no other
// rank's keys: the ring runs one step and sends no KV block, forward or
// backward. One document across the edge of ranks 1 and 2 brings back one
// rotation (every rank sends one block; the backward's dK/dV go home too).
TEST(Ring, DocumentsEndTheRingEarly) {
  constexpr int kWorld = 4;
  Case c = SmallCase();
  c.seqlen_q = c.seqlen_k = 400;  // shards of 100
  c.mask = WithRingDocuments(Mask{true, -1, -1}, RingDocs::kShardEdges, 400, kWorld);
  const Problem inside = MakeProblem(c, 3);
  static const int64_t across_bounds[] = {0, 100, 150, 250, 300, 400};  // [150, 250) crosses
  c.mask = Mask::Causal().WithDocuments(across_bounds, 6);
  const Problem across = MakeProblem(c, 3);
  const int64_t options = kWorld * static_cast<int64_t>(sizeof(OptionsDigest));
  const int64_t block = 2 * 400 * 1 * 32 * 4;  // K and V of all ranks, fp32
  for (bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "forward and backward" : "forward");
    RingRunOptions o;
    o.backward = backward;
    const RingResult a = RunRing(inside, kWorld, Sharding::kContiguous, o);
    const RingResult b = RunRing(across, kWorld, Sharding::kContiguous, o);
    ASSERT_TRUE(a.Ok().ok()) << a.Ok();
    ASSERT_TRUE(b.Ok().ok()) << b.Ok();
    ExpectClose(a, Expect(inside, backward), backward);
    ExpectClose(b, Expect(across, backward), backward);
    int64_t sent_a = 0, sent_b = 0;
    for (int r = 0; r < kWorld; ++r) {
      sent_a += a.bytes_sent[r];
      sent_b += b.bytes_sent[r];
    }
    EXPECT_EQ(sent_a, options) << "no KV block moves";
    // Backward: the blocks rotate again and each fp32 dK/dV accumulator
    // (the size of a fp32 KV block) goes one step and then home.
    EXPECT_EQ(sent_b, options + (backward ? 2 * block + 2 * block : block));
  }
}

// A block-diagonal mask whose blocks are the contiguous shards needs no
// other rank's keys (one step, no KV block sent); one block below the
// diagonal on brings back one rotation, as documents do.
TEST(Ring, BlockMasksEndTheRingEarly) {
  constexpr int kWorld = 4;
  Case c = SmallCase(Mask{});
  c.seqlen_q = c.seqlen_k = 400;  // shards of 100, blocks of 100
  static const uint8_t diagonal[] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  static const uint8_t one_more[] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1};
  c.mask = Mask::None().WithBlocks(diagonal, 1, 4, 4, 100);
  const Problem inside = MakeProblem(c, 3);
  c.mask = Mask::Causal().WithBlocks(one_more, 1, 4, 4, 100);
  const Problem across = MakeProblem(c, 3);
  const int64_t options = kWorld * static_cast<int64_t>(sizeof(OptionsDigest));
  const int64_t block = 2 * 400 * 1 * 32 * 4;  // K and V of all ranks, fp32
  for (bool backward : {false, true}) {
    SCOPED_TRACE(backward ? "forward and backward" : "forward");
    RingRunOptions o;
    o.backward = backward;
    const RingResult a = RunRing(inside, kWorld, Sharding::kContiguous, o);
    const RingResult b = RunRing(across, kWorld, Sharding::kContiguous, o);
    ASSERT_TRUE(a.Ok().ok()) << a.Ok();
    ASSERT_TRUE(b.Ok().ok()) << b.Ok();
    ExpectClose(a, Expect(inside, backward), backward);
    ExpectClose(b, Expect(across, backward), backward);
    int64_t sent_a = 0, sent_b = 0;
    for (int r = 0; r < kWorld; ++r) {
      sent_a += a.bytes_sent[r];
      sent_b += b.bytes_sent[r];
    }
    EXPECT_EQ(sent_a, options) << "no KV block moves";
    EXPECT_EQ(sent_b, options + (backward ? 2 * block + 2 * block : block));
  }
}

// The balanced sharding of packed documents: within one whole document's
// work of equal visible work per rank, where zigzag is far from it.
TEST(Layout, BalancedShardingEvensTheVisibleWork) {
  // Long-tailed: a few documents of a quarter of the context, many short.
  std::vector<int64_t> b{0};
  std::mt19937 rng(2026);
  constexpr int64_t kSeq = 65536;
  while (b.back() < kSeq) {
    const int64_t len = std::uniform_int_distribution<int>(0, 9)(rng) == 0
                            ? kSeq / 4
                            : std::uniform_int_distribution<int64_t>(1, 600)(rng);
    b.push_back(std::min(kSeq, b.back() + len));
  }
  const Mask m = Mask::Causal().WithDocuments(b.data(), static_cast<int64_t>(b.size()));
  for (int world : {2, 4, 8}) {
    auto balanced = Layout::Create(Sharding::kBalanced, kSeq, world, 1, m);
    auto zigzag = Layout::Create(Sharding::kZigzag, kSeq, world, 1, m);
    ASSERT_TRUE(balanced.ok() && zigzag.ok());
    const double ib = Imbalance(VisiblePairsPerRank(*balanced, m));
    const double iz = Imbalance(VisiblePairsPerRank(*zigzag, m));
    EXPECT_LE(ib, 1.05) << "W=" << world << " (zigzag: " << iz << ")";
    // Every position once, increasing within a rank.
    std::vector<int> seen(kSeq, 0);
    for (int r = 0; r < world; ++r) {
      const std::vector<int64_t> pos = balanced->Positions(r);
      EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
      for (int64_t p : pos) ++seen[p];
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), kSeq);
  }
  // The FLOP basis counts the visible pairs only: L(L+1)/2 per document.
  int64_t want = 0;
  for (size_t d = 0; d + 1 < b.size(); ++d) want += (b[d + 1] - b[d]) * (b[d + 1] - b[d] + 1) / 2;
  EXPECT_EQ(VisiblePairs(kSeq, m), want);
  // Without documents it is zigzag.
  auto plain = Layout::Create(Sharding::kBalanced, 1000, 4, 1, Mask::Causal());
  auto zz = Layout::Create(Sharding::kZigzag, 1000, 4);
  for (int r = 0; r < 4; ++r) EXPECT_EQ(plain->Positions(r), zz->Positions(r));
}

// A rank with a different head dim: every rank fails with an error that
// shows both sides, none hangs.
TEST(Ring, ShapeMismatchAcrossRanksIsReportedEverywhere) {
  const Problem pr = MakeProblem(SmallCase(Mask{}), 3);
  RingRunOptions o;
  o.backward = false;
  o.timeout = absl::Seconds(10);
  o.tweak = [](int rank, RingOptions*, int64_t* d) {
    if (rank == 1) *d = 64;
  };
  const RingResult r = RunRing(pr, 3, Sharding::kContiguous, o);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(r.fwd_status[i].ok()) << "rank " << i;
    EXPECT_NE(r.fwd_status[i].code(), absl::StatusCode::kDeadlineExceeded) << r.fwd_status[i];
  }
  bool both_sides = false;
  for (int i = 0; i < 3; ++i) {
    const std::string msg(r.fwd_status[i].message());
    both_sides |= absl::StrContains(msg, "32") && absl::StrContains(msg, "64");
  }
  EXPECT_TRUE(both_sides) << r.fwd_status[0] << "\n" << r.fwd_status[2];
}

// A rank that never takes part: the others time out naming it and the step.
TEST(Ring, SilentPeerTimesOut) {
  const Problem pr = MakeProblem(SmallCase(Mask{}), 3);
  const auto t0 = std::chrono::steady_clock::now();
  RingRunOptions o;
  o.backward = false;
  o.timeout = absl::Milliseconds(400);
  o.take_part = [](int rank) { return rank != 2; };
  const RingResult r = RunRing(pr, 3, Sharding::kContiguous, o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 5.0);
  for (int i : {0, 1}) {
    EXPECT_FALSE(r.fwd_status[i].ok());
    const std::string msg(r.fwd_status[i].message());
    EXPECT_TRUE(absl::StrContains(msg, "step")) << msg;
  }
  // The first rank to time out names the silent peer and aborts the world,
  // so the other may see that abort instead of its own timeout.
  int timeouts = 0;
  for (int i : {0, 1}) {
    const auto code = r.fwd_status[i].code();
    EXPECT_TRUE(code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kAborted)
        << r.fwd_status[i];
    EXPECT_TRUE(absl::StrContains(r.fwd_status[i].message(), "rank 2")) << r.fwd_status[i];
    timeouts += code == absl::StatusCode::kDeadlineExceeded;
  }
  EXPECT_GE(timeouts, 1);
}

// A communicator that aborts at a chosen step on one rank.
class AbortingComm final : public comm::Communicator {
 public:
  AbortingComm(comm::Communicator* inner, int abort_step) : inner_(inner), abort_step_(abort_step) {}
  int Rank() const override { return inner_->Rank(); }
  int Size() const override { return inner_->Size(); }
  std::string Name() const override { return "aborting"; }
  absl::StatusOr<std::unique_ptr<comm::Request>> SendRecv(
      const void* send, int64_t send_bytes, int to, const comm::MessageMeta& send_meta, void* recv,
      int64_t recv_bytes, int from, const comm::MessageMeta& recv_meta) override {
    if (send_meta.step == abort_step_) {
      const absl::Status s = absl::InternalError("injected failure");
      inner_->Abort(s);
      return s;
    }
    return inner_->SendRecv(send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
  }
  absl::Status Barrier(absl::Duration timeout) override { return inner_->Barrier(timeout); }
  void Abort(const absl::Status& reason) override { inner_->Abort(reason); }
  int64_t BytesSent() const override { return inner_->BytesSent(); }

 private:
  comm::Communicator* inner_;
  int abort_step_;
};

TEST(Ring, AbortMidRingFailsEveryRankPromptly) {
  const Problem pr = MakeProblem(SmallCase(Mask{}), 3);
  const int world = 4;
  auto lw = comm::LocalWorld::Create(world);
  ASSERT_TRUE(lw.ok());
  std::vector<absl::Status> st(world);
  std::vector<std::thread> threads;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      AbortingComm aborting(&(*lw)->Comm(r), /*abort_step=*/1);
      comm::Communicator* c = r == 2 ? static_cast<comm::Communicator*>(&aborting) : &(*lw)->Comm(r);
      RingOptions opt;
      opt.seqlen = 203;
      opt.timeout = absl::Seconds(30);
      opt.num_threads = 1;
      auto ring = RingAttention::Create(c, opt);
      ASSERT_TRUE(ring.ok());
      const int64_t Sr = (*ring)->ShardLength();
      std::vector<float> q(Sr * 2 * 32, 0.5f), kv(Sr * 32, 0.25f), out(q.size()), lse(2 * Sr);
      st[r] = (*ring)->Forward(TensorView::Contiguous(q.data(), DType::kFloat32, {1, Sr, 2, 32}),
                               TensorView::Contiguous(kv.data(), DType::kFloat32, {1, Sr, 1, 32}),
                               TensorView::Contiguous(kv.data(), DType::kFloat32, {1, Sr, 1, 32}),
                               TensorView::Contiguous(out.data(), DType::kFloat32, {1, Sr, 2, 32}),
                               TensorView::Contiguous(lse.data(), DType::kFloat32, {1, 2, Sr}));
    });
  }
  for (auto& th : threads) th.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 10.0);  // far below the 30 s timeout
  for (int r = 0; r < world; ++r) {
    EXPECT_FALSE(st[r].ok()) << "rank " << r;
    EXPECT_TRUE(absl::StrContains(st[r].message(), "rank 2")) << st[r];
  }
}

// NaN or Inf at a VISIBLE key or value propagates to the outputs exactly as
// on one rank -- the same rows NaN, the others unchanged -- for every W
// and layout (the merge once dropped a NaN partial beside a row that had
// seen nothing yet, turning it into a clean zero); at masked-out keys it
// reaches nothing (NonFiniteAtMaskedKeysStaysOut, the kernels' tests).
TEST(Ring, NonFiniteAtVisibleKeysPropagatesAsOnOneRank) {
  for (Mask mask : {Mask::Causal(), Mask::None(), Mask::Window(20, 5)}) {
    Case c;
    c.seqlen_q = c.seqlen_k = 131;
    c.heads = 2;
    c.heads_k = 1;
    c.head_dim = 32;
    c.mask = mask;
    Problem pr = MakeProblem(c, 23);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int64_t d = 0; d < c.head_dim; ++d) {
      pr.k[37 * c.head_dim + d] = nan;  // key 37
      pr.v[100 * c.head_dim + d] = d % 2 ? INFINITY : -INFINITY;  // value 100
    }
    pr.tk = MakeTensor(pr.k, 1, c.seqlen_k, c.heads_k, c.head_dim, c.dtype, false);
    pr.tv = MakeTensor(pr.v, 1, c.seqlen_k, c.heads_k, c.head_dim, c.dtype, false);
    const RingResult one = RunRing(pr, 1, Sharding::kContiguous);
    ASSERT_TRUE(one.Ok().ok()) << one.Ok();
    int64_t nan_rows = 0;
    for (float x : one.lse) nan_rows += std::isnan(x);
    ASSERT_GT(nan_rows, 0) << "the visible NaN must poison some rows on one rank";
    for (int world : {2, 3, 4, 5})
      for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
        const RingResult r = RunRing(pr, world, s);
        ASSERT_TRUE(r.Ok().ok()) << r.Ok();
        const std::string where =
            absl::StrCat(mask.ToString(), " W=", world, " ", ShardingName(s));
        for (auto [name, got, want] :
             {std::tuple{"out", &r.out, &one.out}, {"lse", &r.lse, &one.lse},
              {"dq", &r.dq, &one.dq}, {"dk", &r.dk, &one.dk}, {"dv", &r.dv, &one.dv}}) {
          ASSERT_EQ(got->size(), want->size());
          int64_t differ = 0;  // equal, both NaN, or close
          for (size_t i = 0; i < got->size(); ++i) {
            const float a = (*got)[i], b = (*want)[i];
            const bool same = a == b || (std::isnan(a) && std::isnan(b)) ||
                              std::fabs(a - b) <= 1e-4f * (1 + std::fabs(b));
            differ += !same;
          }
          EXPECT_EQ(differ, 0) << name << ", " << where;
        }
      }
  }
}

// A window edge at int64's end is the unbounded edge, bit for bit (it used
// to wrap and mask out everything to the right). (Stripes at the limit:
// layout_test.)
TEST(Ring, Int64LimitsAreTheUnboundedCase) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  Case c;
  c.seqlen_q = c.seqlen_k = 90;
  c.mask = Mask::Window(7, kMax);
  const Problem huge = MakeProblem(c, 8);
  c.mask = Mask::Window(7, -1);
  const Problem unbounded = MakeProblem(c, 8);
  for (int world : {1, 3})
    for (Sharding s : {Sharding::kZigzag, Sharding::kStriped}) {
      const RingResult a = RunRing(huge, world, s);
      const RingResult b = RunRing(unbounded, world, s);
      ASSERT_TRUE(a.Ok().ok() && b.Ok().ok()) << a.Ok() << b.Ok();
      EXPECT_EQ(std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4), 0) << world;
      EXPECT_EQ(std::memcmp(a.dq.data(), b.dq.data(), a.dq.size() * 4), 0) << world;
    }
}

// Ranks that disagree on an option fail, every one of them, naming the
// option and both values (at the first call, before any KV moves).
TEST(Ring, OptionsThatDifferAcrossRanksFailEveryRank) {
  struct Variant {
    const char* option;
    std::function<void(RingOptions*)> change;
  };
  const std::vector<Variant> variants = {
      {"causal", [](RingOptions* o) { o->mask.causal = !o->mask.causal; }},
      {"window_left", [](RingOptions* o) { o->mask.window_left = 17; }},
      {"softcap", [](RingOptions* o) { o->softcap = 3.0f; }},
      {"scale", [](RingOptions* o) { o->scale = 0.5f; }},
      {"sharding", [](RingOptions* o) { o->sharding = Sharding::kStriped; }},
      {"stripe", [](RingOptions* o) { o->stripe = 4; }},
      {"deterministic", [](RingOptions* o) { o->deterministic = true; }},
  };
  Case c;
  c.seqlen_q = c.seqlen_k = 64;
  c.mask = Mask::Causal();
  const Problem pr = MakeProblem(c, 3);
  for (int world : {2, 3})
    for (const Variant& v : variants) {
      RingRunOptions o;
      o.backward = false;
      o.tweak = [&](int rank, RingOptions* opt, int64_t*) {
        if (rank == world - 1) v.change(opt);
      };
      const RingResult r = RunRing(pr, world, Sharding::kZigzag, o);
      for (int rank = 0; rank < world; ++rank) {
        const absl::Status& s = r.fwd_status[rank];
        EXPECT_FALSE(s.ok()) << v.option << " W=" << world << " rank " << rank;
        EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat(v.option, ": rank ")))
            << v.option << " W=" << world << " rank " << rank << ": " << s;
      }
    }
}

// The local strategy (one device, the caller's tensors in place) gives the
// ring's W = 1 results bit for bit.
TEST(LocalStrategy, BitwiseTheRingOfOneRank) {
  for (DType t : {DType::kFloat32, DType::kBFloat16}) {
    Case c;
    c.seqlen_q = c.seqlen_k = 157;
    c.heads = 4;
    c.heads_k = t == DType::kFloat32 ? 2 : 1;
    c.head_dim = 48;
    c.dtype = t;
    c.softcap = 2.0f;
    c.mask = Mask::Window(30, -1, /*causal=*/true);
    const Problem pr = MakeProblem(c, 5);
    RingRunOptions local;
    local.tweak = [](int, RingOptions* o, int64_t*) { o->strategy = Strategy::kLocal; };
    const RingResult a = RunRing(pr, 1, Sharding::kContiguous);
    const RingResult b = RunRing(pr, 1, Sharding::kContiguous, local);
    ASSERT_TRUE(a.Ok().ok() && b.Ok().ok()) << a.Ok() << b.Ok();
    for (auto [x, y] : {std::pair{&a.out, &b.out}, {&a.lse, &b.lse}, {&a.dq, &b.dq},
                        {&a.dk, &b.dk}, {&a.dv, &b.dv}}) {
      ASSERT_EQ(x->size(), y->size());
      EXPECT_EQ(std::memcmp(x->data(), y->data(), x->size() * sizeof(float)), 0)
          << DTypeName(t);
    }
    ExpectClose(b, Expect(pr));
  }
}

// In place means any strides: q head-major, k and v padded, and fp32
// gradients that are not contiguous (they take the scratch path).
TEST(LocalStrategy, ReadsAndWritesStridedTensorsInPlace) {
  Case c;
  c.seqlen_q = c.seqlen_k = 70;
  c.heads = c.heads_k = 2;
  c.head_dim = 32;
  c.strided = true;  // [B, H, S, D + 3] storage
  c.mask = Mask::Causal();
  const Problem pr = MakeProblem(c, 9);
  const RingExpectation e = Expect(pr);
  auto world = comm::LocalWorld::Create(1);
  ASSERT_TRUE(world.ok());
  RingOptions opt;
  opt.seqlen = c.seqlen_q;
  opt.mask = c.mask;
  opt.strategy = Strategy::kLocal;
  opt.num_threads = 1;
  auto ring = RingAttention::Create(&(*world)->Comm(0), opt);
  ASSERT_TRUE(ring.ok()) << ring.status();
  auto view = [&](const Tensor& x, int64_t heads) {
    TensorView v = TensorView::Contiguous(const_cast<void*>(x.data()), DType::kFloat32,
                                          {1, c.seqlen_q, heads, c.head_dim});
    v.strides[0] = x.stride.batch;
    v.strides[1] = x.stride.seq;
    v.strides[2] = x.stride.head;
    return v;
  };
  const int64_t n = c.seqlen_q * c.heads * c.head_dim;
  std::vector<float> out(n), lse(c.heads * c.seqlen_q);
  // Gradients with a padded head: [1, S, H, D + 1].
  std::vector<float> dq(c.seqlen_q * c.heads * (c.head_dim + 1), NAN), dk(dq.size(), NAN),
      dv(dq.size(), NAN);
  auto padded = [&](std::vector<float>& x) {
    TensorView v = TensorView::Contiguous(x.data(), DType::kFloat32,
                                          {1, c.seqlen_q, c.heads, c.head_dim + 1});
    v.shape[3] = c.head_dim;
    return v;
  };
  const TensorView q = view(pr.tq, c.heads), k = view(pr.tk, c.heads), v = view(pr.tv, c.heads),
                   dout = view(pr.tdout, c.heads);
  const TensorView o = TensorView::Contiguous(out.data(), DType::kFloat32,
                                              {1, c.seqlen_q, c.heads, c.head_dim});
  const TensorView l = TensorView::Contiguous(lse.data(), DType::kFloat32, {1, c.heads, c.seqlen_q});
  ASSERT_TRUE((*ring)->Forward(q, k, v, o, l).ok());
  ASSERT_TRUE((*ring)->Backward(q, k, v, o, l, dout, padded(dq), padded(dk), padded(dv)).ok());
  auto unpad = [&](const std::vector<float>& x) {
    std::vector<float> y;
    for (int64_t r = 0; r < c.seqlen_q * c.heads; ++r)
      y.insert(y.end(), x.begin() + r * (c.head_dim + 1), x.begin() + r * (c.head_dim + 1) + c.head_dim);
    return y;
  };
  EXPECT_LE(MaxError(out, e.out), e.tol_out);
  EXPECT_LE(MaxError(lse, e.lse), e.tol_lse);
  EXPECT_LE(MaxError(unpad(dq), e.dq), e.tol_dq);
  EXPECT_LE(MaxError(unpad(dk), e.dk), e.tol_dk);
  EXPECT_LE(MaxError(unpad(dv), e.dv), e.tol_dv);
}

TEST(LocalStrategy, IsForOneRank) {
  auto world = comm::LocalWorld::Create(2);
  ASSERT_TRUE(world.ok());
  RingOptions opt;
  opt.seqlen = 16;
  opt.strategy = Strategy::kLocal;
  auto ring = RingAttention::Create(&(*world)->Comm(0), opt);
  ASSERT_FALSE(ring.ok());
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(ring.status().message(), "strategy local")) << ring.status();
  EXPECT_EQ(ParseStrategy("local").value(), Strategy::kLocal);
  EXPECT_FALSE(ParseStrategy("fastest").ok());
}

TEST(RingApi, ValidatesEveryArgument) {
  auto lw = comm::LocalWorld::Create(2);
  ASSERT_TRUE(lw.ok());
  comm::Communicator* c = &(*lw)->Comm(0);
  RingOptions opt;
  opt.seqlen = 64;
  auto expect_bad = [&](RingOptions o, const char* what) {
    auto r = RingAttention::Create(c, o);
    EXPECT_FALSE(r.ok()) << what;
    if (!r.ok()) {
      EXPECT_TRUE(absl::StrContains(r.status().message(), what)) << r.status();
    }
  };
  RingOptions o = opt;
  o.scale = NAN;
  expect_bad(o, "scale");
  o = opt;
  o.mask.window_left = -5;
  expect_bad(o, "window_left");
  o = opt;
  o.softcap = -1;
  expect_bad(o, "softcap");
  o = opt;
  o.seqlen = -3;
  expect_bad(o, "seqlen");
  o = opt;
  o.stripe = 0;
  o.sharding = Sharding::kStriped;
  expect_bad(o, "stripe");
  o = opt;
  o.num_threads = 100000;  // a pool this large crashed
  expect_bad(o, "num_threads");
  o.num_threads = -1;
  expect_bad(o, "num_threads");
  // Block masks: the block size, and ceil(64 / 16) = 4 blocks per side.
  static const uint8_t bits[8 * 8] = {};  // room for every shape below
  o = opt;
  o.mask = Mask::Causal().WithBlocks(bits, 1, 4, 4, 0);
  expect_bad(o, "block_size: expected >= 1, got 0");
  o.mask = Mask::Causal().WithBlocks(bits, 1, 3, 4, 16);
  expect_bad(o, "block_mask shape: expected [4, 4] or [H, 4, 4]");
  o.mask = Mask::Causal().WithBlocks(bits, 1, 8, 8, 8);
  EXPECT_TRUE(RingAttention::Create(c, o).ok()) << "8 blocks of 8";

  opt.num_threads = 1;
  auto ring = RingAttention::Create(c, opt);
  ASSERT_TRUE(ring.ok());
  std::vector<float> q(32 * 4 * 16), k(32 * 2 * 16), out(q.size()), lse(4 * 32);
  auto V = [](std::vector<float>& x, std::initializer_list<int64_t> s, DType t = DType::kFloat32) {
    return TensorView::Contiguous(x.data(), t, s);
  };
  auto fwd = [&](TensorView qv, TensorView kv, TensorView lv) {
    return (*ring)->Forward(qv, kv, kv, V(out, {1, 32, 4, 16}), lv);
  };
  const TensorView good_q = V(q, {1, 32, 4, 16}), good_k = V(k, {1, 32, 2, 16}),
                   good_l = V(lse, {1, 4, 32});
  // Wrong shard length (S_r is 32 for 64 tokens on 2 ranks).
  absl::Status s = fwd(V(q, {1, 31, 4, 16}), good_k, good_l);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "q shape")) << s;
  // H % Hkv != 0.
  s = fwd(V(q, {1, 32, 3, 16}), good_k, V(lse, {1, 3, 32}));
  EXPECT_TRUE(absl::StrContains(s.message(), "Hkv")) << s;
  // Head dim mismatch between q and k.
  s = fwd(good_q, V(k, {1, 32, 2, 8}), good_l);
  EXPECT_TRUE(absl::StrContains(s.message(), "k shape")) << s;
  // dtype mismatch.
  s = fwd(good_q, V(k, {1, 32, 2, 16}, DType::kBFloat16), good_l);
  EXPECT_TRUE(absl::StrContains(s.message(), "k dtype")) << s;
  // lse shape.
  s = fwd(good_q, good_k, V(lse, {1, 32, 4}));
  EXPECT_TRUE(absl::StrContains(s.message(), "lse shape")) << s;
  {  // A per-head block mask of 3 heads for a call with 4.
    RingOptions b = opt;
    b.mask = Mask::Causal().WithBlocks(bits, 3, 4, 4, 16);
    auto blocky = RingAttention::Create(c, b);
    ASSERT_TRUE(blocky.ok()) << blocky.status();
    s = (*blocky)->Forward(good_q, good_k, good_k, V(out, {1, 32, 4, 16}), good_l);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(s.message(), "block_mask heads: expected 1 or the query heads H = 4, got 3")) << s;
  }
  // Non-contiguous head dim.
  TensorView bad = good_q;
  bad.strides[3] = 2;
  s = fwd(bad, good_k, good_l);
  EXPECT_TRUE(absl::StrContains(s.message(), "innermost stride")) << s;
  // Sizes that overflow 64 bits.
  TensorView huge = good_q;
  huge.shape[0] = int64_t{1} << 50;
  s = fwd(huge, good_k, good_l);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // Null data.
  TensorView null_q = good_q;
  null_q.data = nullptr;
  s = fwd(null_q, good_k, good_l);
  EXPECT_TRUE(absl::StrContains(s.message(), "null")) << s;
}

// The backend options, checked before a backend is made (no device needed).
TEST(RingApi, BackendOptionsAreValidated) {
  auto lw = comm::LocalWorld::Create(1);
  ASSERT_TRUE(lw.ok());
  RingOptions opt;
  opt.seqlen = 64;
  opt.dtype = DType::kFloat16;  // cpu: fp32 or bf16 only
  auto r = RingAttention::Create(&(*lw)->Comm(0), opt);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "dtype")) << r.status();
  opt.backend = Backend::kCuda;
  opt.dtype = DType::kFloat32;  // cuda: bf16 or fp16 only
  r = RingAttention::Create(&(*lw)->Comm(0), opt);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "dtype")) << r.status();
  opt.dtype = DType::kBFloat16;
  opt.device_index = -1;
  r = RingAttention::Create(&(*lw)->Comm(0), opt);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "device_index")) << r.status();
  EXPECT_EQ(ParseBackend("cuda").value(), Backend::kCuda);
  EXPECT_EQ(ParseBackend("cpu").value(), Backend::kCpu);
  EXPECT_FALSE(ParseBackend("tpu").ok());
}

// Without CUDA built, or without a device, the cuda backend is a clear
// error from Create (Unimplemented / FailedPrecondition), never a crash.
TEST(RingApi, CudaBackendWithoutDeviceIsAClearError) {
  auto lw = comm::LocalWorld::Create(1);
  ASSERT_TRUE(lw.ok());
  RingOptions opt;
  opt.seqlen = 64;
  opt.dtype = DType::kBFloat16;
  opt.backend = Backend::kCuda;
  auto r = RingAttention::Create(&(*lw)->Comm(0), opt);
  if (r.ok()) GTEST_SKIP() << "a CUDA device is present (cuda_ring_test covers it)";
  EXPECT_TRUE(r.status().code() == absl::StatusCode::kUnimplemented ||
              r.status().code() == absl::StatusCode::kFailedPrecondition)
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "cuda") ||
              absl::StrContains(r.status().message(), "CUDA"))
      << r.status();
}

}  // namespace
}  // namespace ringattn::testing
