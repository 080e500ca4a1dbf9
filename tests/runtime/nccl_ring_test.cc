// The ring over NCCL, one process per GPU (label multigpu; run by
// tools/multigpu_ci.sh under mpirun -np N for N = 2, 4, 8): the CUDA
// backend's ring against the float64 reference, by flash-attn's rule, for
// every layout and mask (none, causal, window, causal + window), bf16 and
// fp16, head dims 64, 128 and 256, MHA, GQA and MQA, uneven lengths, batch 2;
// on the synchronous calls and on callers' streams; the deterministic
// backward bitwise equal run after run. Every process builds the same
// problem, runs its rank, and checks its own rows. Alone, or without 2
// GPUs, every test skips saying why ("needs 2 GPUs: found N", ...).
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/nccl/nccl_comm.h"
#include "gtest/gtest.h"
#include "runtime/layout.h"
#include "tests/attention/attn_test_util.h"
#include "tests/comm/nccl_process.h"
#include "tests/runtime/ring_test_util.h"

namespace ringattn::testing {
namespace {

struct NcclRingCase {
  Case c;
  Sharding sharding = Sharding::kContiguous;
  bool caller_stream = false;
  std::string Name() const {
    return absl::StrCat(c.Name(), "_", ShardingName(sharding), caller_stream ? "_stream" : "");
  }
};
void PrintTo(const NcclRingCase& r, std::ostream* os) { *os << r.Name(); }

std::vector<NcclRingCase> Cases() {
  std::vector<NcclRingCase> cases;
  const Mask masks[] = {Mask{}, Mask{true, -1, -1}, Mask{false, 64, 16}, Mask{true, 100, -1}};
  const int64_t kv_heads[] = {4, 2, 1};
  int group = 0;
  for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
    for (int m = 0; m < 4; ++m) {
      NcclRingCase rc;
      rc.sharding = s;
      rc.c.mask = masks[m];
      rc.c.seqlen_q = rc.c.seqlen_k = 613;  // uneven for every N
      rc.c.batch = m == 1 ? 2 : 1;
      rc.c.heads = 4;
      rc.c.heads_k = kv_heads[(group + m) % 3];
      rc.c.head_dim = group == 2 && m == 0 ? 256 : (m + group) % 2 == 0 ? 64 : 128;
      rc.c.dtype = (m / 2 + group) % 2 == 0 ? DType::kBFloat16 : DType::kFloat16;
      rc.caller_stream = m == 3;
      cases.push_back(rc);
    }
    ++group;
  }
  return cases;
}

// This process's rank of the world every process makes; destroyed after a
// barrier (collective teardown: nobody finalizes while a peer still talks
// to it).
struct NcclRank {
  NcclRank() {
    comm::NcclOptions options;
    options.timeout = absl::Seconds(60);
    auto made = comm::CreateNcclCommunicator(comm::ProcessBootstrap(), options);
    EXPECT_TRUE(made.ok()) << made.status();
    if (made.ok()) comm = std::move(made).value();
  }
  ~NcclRank() {
    (void)comm::ProcessBootstrap()->Barrier(absl::Seconds(60));
    comm.reset();
  }
  std::unique_ptr<comm::NcclCommunicator> comm;
};

RingRunOptions OnNccl(const comm::NcclCommunicator& comm, bool deterministic, bool stream) {
  RingRunOptions o;
  o.backend = Backend::kCuda;
  o.deterministic = deterministic;
  o.caller_stream = stream;
  o.timeout = absl::Seconds(60);
  const int device = comm.Device();
  o.tweak = [device](int, RingOptions* opt, int64_t*) { opt->device_index = device; };
  return o;
}

class NcclRingEnv : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = comm::SkipReason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
};
class NcclRingTest : public NcclRingEnv, public ::testing::WithParamInterface<NcclRingCase> {};

TEST_P(NcclRingTest, MatchesReferenceOnThisRanksRows) {
  const NcclRingCase rc = GetParam();
  const Problem pr = MakeProblem(rc.c, 11);
  NcclRank rank;
  ASSERT_NE(rank.comm, nullptr);
  comm::NcclCommunicator& comm = *rank.comm;
  const RankOutput got =
      RunRank(pr, comm, rc.sharding, OnNccl(comm, /*deterministic=*/false, rc.caller_stream));
  auto layout = Layout::Create(rc.sharding, rc.c.seqlen_q, comm.Size(), 2);
  ASSERT_TRUE(layout.ok()) << layout.status();
  ExpectRankClose(pr, Expect(pr), *layout, comm.Rank(), got);
}

INSTANTIATE_TEST_SUITE_P(Sweep, NcclRingTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.Name(); });

// deterministic = true: the synchronous calls and the calls on a caller's
// stream give the same bits.
TEST_F(NcclRingEnv, DeterministicBackwardIsBitwiseReproducible) {
  NcclRingCase rc = Cases()[5];  // zigzag, causal
  ASSERT_EQ(rc.sharding, Sharding::kZigzag);
  ASSERT_TRUE(rc.c.mask.causal);
  const Problem pr = MakeProblem(rc.c, 12);
  NcclRank rank;
  ASSERT_NE(rank.comm, nullptr);
  comm::NcclCommunicator& comm = *rank.comm;
  const RankOutput a = RunRank(pr, comm, rc.sharding, OnNccl(comm, true, false));
  const RankOutput b = RunRank(pr, comm, rc.sharding, OnNccl(comm, true, true));
  ASSERT_TRUE(a.bwd_done && b.bwd_done) << a.fwd << " " << a.bwd << " " << b.fwd << " " << b.bwd;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)));
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
}

}  // namespace
}  // namespace ringattn::testing
