// Tests of the `local` backend: the communicator conformance suite on W
// threads, what is local's own (world creation, error texts, destruction),
// and the shared helpers of communicator.cc (CheckHeader, HeaderToString,
// DefaultTimeout).
#include "comm/local/local_comm.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "base/crc32c.h"
#include "base/status.h"
#include "comm/communicator.h"
#include "comm/local/cuda_local.h"
#include "gtest/gtest.h"
#include "tests/comm/conformance.h"

namespace ringattn::comm {
namespace {

using conformance::CommConformanceTest;

class LocalCommWorld : public conformance::CommWorld {
 public:
  explicit LocalCommWorld(std::unique_ptr<LocalWorld> world) : world_(std::move(world)) {}
  void Run(const std::function<void(Communicator&)>& body) override {
    std::vector<Communicator*> comms;
    for (int r = 0; r < world_->Size(); ++r) comms.push_back(&world_->Comm(r));
    conformance::RunOnThreads(comms, body);
  }

 private:
  std::unique_ptr<LocalWorld> world_;
};

std::shared_ptr<const conformance::CommBackend> LocalBackend() {
  return conformance::LocalBackendOf(
      "local", [](std::unique_ptr<LocalWorld> world, absl::Duration) {
        return std::unique_ptr<conformance::CommWorld>(new LocalCommWorld(std::move(world)));
      });
}

INSTANTIATE_TEST_SUITE_P(Local, CommConformanceTest,
                         ::testing::ValuesIn(conformance::ConformanceParams(LocalBackend(),
                                                                            {1, 2, 3, 4, 8})),
                         conformance::ConformanceParamName);

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

std::unique_ptr<LocalWorld> MakeWorld(int size, absl::Duration timeout) {
  LocalWorldOptions options;
  options.timeout = timeout;
  absl::StatusOr<std::unique_ptr<LocalWorld>> world = LocalWorld::Create(size, options);
  EXPECT_TRUE(world.ok()) << world.status();
  return world.ok() ? std::move(world).value() : nullptr;
}

void RunRanks(LocalWorld& world, const std::function<void(Communicator&)>& body) {
  std::vector<Communicator*> comms;
  for (int r = 0; r < world.Size(); ++r) comms.push_back(&world.Comm(r));
  conformance::RunOnThreads(comms, body);
}

MessageMeta Meta(int step, int64_t bytes) {
  MessageMeta meta;
  meta.step = step;
  meta.dtype = 1;
  meta.ndim = 1;
  meta.shape[0] = bytes;
  return meta;
}

// Sets or unsets RINGATTN_TIMEOUT_MS for one scope.
class ScopedTimeoutEnv {
 public:
  explicit ScopedTimeoutEnv(const char* value) {
    if (const char* old = std::getenv(kName)) saved_ = old;
    if (value == nullptr) {
      unsetenv(kName);
    } else {
      setenv(kName, value, 1);
    }
  }
  ~ScopedTimeoutEnv() {
    if (saved_) {
      setenv(kName, saved_->c_str(), 1);
    } else {
      unsetenv(kName);
    }
  }

 private:
  static constexpr const char* kName = "RINGATTN_TIMEOUT_MS";
  std::optional<std::string> saved_;
};

TEST(DefaultTimeoutTest, SixtySecondsWhenUnset) {
  ScopedTimeoutEnv env(nullptr);
  absl::StatusOr<absl::Duration> timeout = DefaultTimeout();
  ASSERT_TRUE(timeout.ok()) << timeout.status();
  EXPECT_EQ(*timeout, absl::Seconds(60));
}

TEST(DefaultTimeoutTest, ReadsMilliseconds) {
  for (const auto& [text, want] :
       {std::pair<const char*, absl::Duration>{"1500", absl::Milliseconds(1500)},
        {"1", absl::Milliseconds(1)},
        {"007", absl::Milliseconds(7)},
        {"86400000", absl::Hours(24)}}) {
    ScopedTimeoutEnv env(text);
    absl::StatusOr<absl::Duration> timeout = DefaultTimeout();
    ASSERT_TRUE(timeout.ok()) << text << ": " << timeout.status();
    EXPECT_EQ(*timeout, want) << text;
  }
}

TEST(DefaultTimeoutTest, RejectsGarbageNamingVariableAndValue) {
  for (const char* text :
       {"", "abc", "0", "-5", "12x", " 5", "5 ", "+5", "1.5", "2s", "99999999999999999999"}) {
    ScopedTimeoutEnv env(text);
    absl::StatusOr<absl::Duration> timeout = DefaultTimeout();
    ASSERT_FALSE(timeout.ok()) << "accepted \"" << text << "\"";
    EXPECT_EQ(timeout.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(timeout.status().message(), "RINGATTN_TIMEOUT_MS")) << timeout.status();
    EXPECT_TRUE(Contains(timeout.status().message(), absl::StrCat("\"", text, "\"")))
        << timeout.status();
  }
}

MessageHeader SampleHeader() {
  MessageHeader h;
  h.src_rank = 1;
  h.dst_rank = 2;
  h.bytes = 32;
  h.meta.step = 3;
  h.meta.kind = 0;
  h.meta.dtype = 1;
  h.meta.ndim = 2;
  h.meta.shape[0] = 2;
  h.meta.shape[1] = 4;
  return h;
}

TEST(HeaderTest, PrintsEveryField) {
  EXPECT_EQ(HeaderToString(SampleHeader()),
            "{magic 0x52415454, version 2, src 1, dst 2, step 3, kind 0, dtype 1, shape [2, 4], "
            "bytes 32}");
  MessageHeader bad = SampleHeader();
  bad.meta.ndim = 9;
  EXPECT_TRUE(Contains(HeaderToString(bad), "<invalid ndim 9>"));
}

TEST(HeaderTest, EqualHeadersPass) {
  EXPECT_TRUE(CheckHeader(SampleHeader(), SampleHeader()).ok());
  // Shape entries past ndim are not part of the message.
  MessageHeader got = SampleHeader();
  got.meta.shape[4] = 77;
  EXPECT_TRUE(CheckHeader(got, SampleHeader()).ok());
}

TEST(HeaderTest, EveryFieldIsCheckedAndBothSidesPrinted) {
  const std::vector<std::pair<const char*, std::function<void(MessageHeader&)>>> cases = {
      {"magic", [](MessageHeader& h) { h.magic = 0xDEADBEEF; }},
      {"version", [](MessageHeader& h) { h.version = 1; }},
      {"src", [](MessageHeader& h) { h.src_rank = 0; }},
      {"dst", [](MessageHeader& h) { h.dst_rank = 3; }},
      {"step", [](MessageHeader& h) { h.meta.step = 4; }},
      {"kind", [](MessageHeader& h) { h.meta.kind = 1; }},
      {"dtype", [](MessageHeader& h) { h.meta.dtype = 2; }},
      {"shape", [](MessageHeader& h) { h.meta.shape[1] = 5; }},
      {"shape", [](MessageHeader& h) { h.meta.ndim = 3, h.meta.shape[2] = 1; }},
      {"bytes", [](MessageHeader& h) { h.bytes = 31; }},
  };
  for (const auto& [field, perturb] : cases) {
    MessageHeader got = SampleHeader();
    perturb(got);
    const absl::Status status = CheckHeader(got, SampleHeader());
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_TRUE(Contains(status.message(), absl::StrCat("(", field, ")"))) << status;
    EXPECT_TRUE(Contains(status.message(), "sent " + HeaderToString(got))) << status;
    EXPECT_TRUE(Contains(status.message(), "expected " + HeaderToString(SampleHeader()))) << status;
  }
}

TEST(HeaderTest, InvalidNdimNeverPasses) {
  MessageHeader h = SampleHeader();
  h.meta.ndim = 7;
  EXPECT_EQ(CheckHeader(h, h).code(), absl::StatusCode::kInvalidArgument);
  h.meta.ndim = -1;
  EXPECT_EQ(CheckHeader(h, h).code(), absl::StatusCode::kInvalidArgument);
}

TEST(LocalWorldTest, CreateValidatesArguments) {
  EXPECT_EQ(LocalWorld::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LocalWorld::Create(-3).status().code(), absl::StatusCode::kInvalidArgument);
  LocalWorldOptions negative;
  negative.timeout = absl::Milliseconds(-1);
  EXPECT_EQ(LocalWorld::Create(2, negative).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LocalWorldTest, TimeoutComesFromOptionsOrEnvironment) {
  {
    ScopedTimeoutEnv env("750");
    absl::StatusOr<std::unique_ptr<LocalWorld>> world = LocalWorld::Create(2);
    ASSERT_TRUE(world.ok()) << world.status();
    EXPECT_EQ((*world)->timeout(), absl::Milliseconds(750));
    EXPECT_EQ((*world)->Size(), 2);
    EXPECT_EQ((*world)->Comm(1).Rank(), 1);
    EXPECT_EQ((*world)->Comm(1).Name(), "local");
    LocalWorldOptions options;
    options.timeout = absl::Seconds(2);
    world = LocalWorld::Create(2, options);
    ASSERT_TRUE(world.ok()) << world.status();
    EXPECT_EQ((*world)->timeout(), absl::Seconds(2));
  }
  {
    ScopedTimeoutEnv env("soon");
    absl::StatusOr<std::unique_ptr<LocalWorld>> world = LocalWorld::Create(2);
    EXPECT_EQ(world.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(world.status().message(), "RINGATTN_TIMEOUT_MS")) << world.status();
  }
}

TEST(LocalWorldTest, TimeoutErrorsReadWell) {
  std::unique_ptr<LocalWorld> world = MakeWorld(2, absl::Milliseconds(200));
  ASSERT_NE(world, nullptr);
  std::vector<char> buf(16);
  auto request =
      world->Comm(1).SendRecv(buf.data(), 16, 0, Meta(3, 16), buf.data(), 16, 0, Meta(3, 16));
  ASSERT_TRUE(request.ok()) << request.status();
  const absl::Status status = (*request)->Wait(absl::Milliseconds(50));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(status.message(),
            "rank 1: no message from rank 0 for step 3 (kind 0); rank 0 did not receive the "
            "message for step 3 (kind 0) within 50ms");
}

TEST(LocalWorldTest, BarrierTimeoutNamesMissingRanksAndBarrierStaysUsable) {
  std::unique_ptr<LocalWorld> world = MakeWorld(3, absl::Seconds(5));
  ASSERT_NE(world, nullptr);
  RunRanks(*world, [](Communicator& c) {
    if (c.Rank() != 0) {
      const absl::Status status = c.Barrier(absl::Milliseconds(150));
      EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
      EXPECT_TRUE(Contains(status.message(), "no arrival from rank 0 within 150ms")) << status;
    }
  });
  // The ranks that timed out left the barrier: a full one still works.
  RunRanks(*world, [](Communicator& c) {
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(c.Barrier(absl::Seconds(5)).ok());
  });
}

TEST(LocalWorldTest, FirstAbortWinsAndOkReasonIsStillAnAbort) {
  std::unique_ptr<LocalWorld> world = MakeWorld(2, absl::Seconds(5));
  ASSERT_NE(world, nullptr);
  world->Comm(0).Abort(absl::InternalError("first"));
  world->Comm(1).Abort(absl::InternalError("second"));
  const absl::Status status = world->Comm(1).Barrier(absl::Seconds(1));
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(status.message(), "rank 0 aborted: INTERNAL: first");

  std::unique_ptr<LocalWorld> other = MakeWorld(1, absl::Seconds(5));
  ASSERT_NE(other, nullptr);
  other->Comm(0).Abort(absl::OkStatus());
  std::vector<char> buf(8);
  auto request =
      other->Comm(0).SendRecv(buf.data(), 8, 0, Meta(0, 8), buf.data(), 8, 0, Meta(0, 8));
  EXPECT_EQ(request.status().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(Contains(request.status().message(), "rank 0 aborted")) << request.status();
}

TEST(LocalWorldTest, DestroyedPendingRequestWaitsTheWorldTimeoutThenCancels) {
  constexpr absl::Duration kTimeout = absl::Milliseconds(300);
  std::unique_ptr<LocalWorld> world = MakeWorld(2, kTimeout);
  ASSERT_NE(world, nullptr);
  std::vector<uint8_t> recv(64, 0xA5);
  auto request =
      world->Comm(1).SendRecv(nullptr, 0, 0, MessageMeta{}, recv.data(), 64, 0, Meta(1, 64));
  ASSERT_TRUE(request.ok()) << request.status();
  const absl::Time start = absl::Now();
  request->reset();
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, kTimeout * 0.9);
  EXPECT_LT(took, kTimeout + absl::Seconds(2));
  // The cancelled receive is gone: a send posted now is not matched with it.
  std::vector<uint8_t> send(64, 1);
  auto late =
      world->Comm(0).SendRecv(send.data(), 64, 1, Meta(1, 64), nullptr, 0, 0, MessageMeta{});
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ((*late)->Wait(absl::Milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
  late->reset();
  EXPECT_EQ(recv, std::vector<uint8_t>(64, 0xA5));
}

TEST(LocalWorldTest, AbortDuringLargeCopyEndsPromptly) {
  constexpr int64_t kBytes = int64_t{64} << 20;
  std::unique_ptr<LocalWorld> world = MakeWorld(1, absl::Seconds(5));
  ASSERT_NE(world, nullptr);
  std::vector<uint8_t> send(kBytes, 7);
  std::vector<uint8_t> recv(kBytes, 0);
  Communicator& c = world->Comm(0);
  auto request =
      c.SendRecv(send.data(), kBytes, 0, Meta(0, kBytes), recv.data(), kBytes, 0, Meta(0, kBytes));
  ASSERT_TRUE(request.ok()) << request.status();
  c.Abort(absl::CancelledError("user pressed ^C"));
  const absl::Time start = absl::Now();
  const absl::Status status = (*request)->Wait(absl::Seconds(5));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  if (status.ok()) {  // the copy won the race: then it is complete
    EXPECT_EQ(recv, send);
    EXPECT_EQ(c.BytesSent(), kBytes);
  } else {
    EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
    EXPECT_TRUE(Contains(status.message(), "user pressed ^C")) << status;
    EXPECT_EQ(c.BytesSent(), 0);
  }
}

TEST(LocalWorldTest, ManySmallStepsStress) {
  // Many short steps with requests in flight on every rank: shakes out races
  // between posting, matching, copying and waking (run under TSan, too).
  std::unique_ptr<LocalWorld> world = MakeWorld(4, absl::Seconds(5));
  ASSERT_NE(world, nullptr);
  RunRanks(*world, [](Communicator& c) {
    const int w = c.Size();
    const int next = (c.Rank() + 1) % w;
    const int prev = (c.Rank() + w - 1) % w;
    std::vector<uint32_t> a(256), b(256);
    for (int s = 0; s < 500; ++s) {
      for (uint32_t i = 0; i < a.size(); ++i) a[i] = s * 1000003u + c.Rank() * 7919u + i;
      auto request =
          c.SendRecv(a.data(), 1024, next, Meta(s, 1024), b.data(), 1024, prev, Meta(s, 1024));
      ASSERT_TRUE(request.ok()) << request.status();
      ASSERT_TRUE((*request)->Wait(absl::Seconds(5)).ok()) << "step " << s;
      for (uint32_t i = 0; i < b.size(); ++i) {
        ASSERT_EQ(b[i], s * 1000003u + prev * 7919u + i) << "step " << s;
      }
    }
  });
}

// The copier hook (what cuda-local plugs in): used for every chunk of
// every message on the receiving rank's copy thread, and its error fails
// both halves, naming the world, the ranks and the step; Name() follows
// the options.
class FakeCopier final : public LocalCopier {
 public:
  FakeCopier(std::atomic<int>* calls, int fail_at) : calls_(calls), fail_at_(fail_at) {}
  absl::Status Copy(void* dst, const void* src, int64_t bytes) override {
    if (calls_->fetch_add(1) + 1 == fail_at_) return absl::DataLossError("fake copy failure");
    std::memcpy(dst, src, static_cast<size_t>(bytes));
    return absl::OkStatus();
  }

 private:
  std::atomic<int>* calls_;
  int fail_at_;
};

TEST(LocalWorldTest, CopierHookCarriesEveryCopyAndItsErrors) {
  std::atomic<int> calls{0};
  LocalWorldOptions options;
  options.timeout = absl::Seconds(5);
  options.name = "fake-local";
  options.make_copier = [&calls](int) -> absl::StatusOr<std::unique_ptr<LocalCopier>> {
    return std::unique_ptr<LocalCopier>(new FakeCopier(&calls, /*fail_at=*/3));
  };
  absl::StatusOr<std::unique_ptr<LocalWorld>> world = LocalWorld::Create(2, options);
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ((*world)->Comm(0).Name(), "fake-local");
  // Step 0: one 64-byte message each way (2 copies), delivered.
  RunRanks(**world, [](Communicator& c) {
    const int peer = 1 - c.Rank();
    std::vector<uint8_t> a(64, static_cast<uint8_t>(c.Rank() + 1)), b(64, 0);
    auto request = c.SendRecv(a.data(), 64, peer, Meta(0, 64), b.data(), 64, peer, Meta(0, 64));
    ASSERT_TRUE(request.ok()) << request.status();
    ASSERT_TRUE((*request)->Wait(absl::Seconds(5)).ok());
    EXPECT_EQ(b, std::vector<uint8_t>(64, static_cast<uint8_t>(peer + 1)));
  });
  EXPECT_EQ(calls.load(), 2);
  // Step 1: rank 0 -> rank 1 only; the third copy fails on both ranks.
  RunRanks(**world, [](Communicator& c) {
    std::vector<uint8_t> buf(64, 7);
    auto request = c.Rank() == 0
                       ? c.SendRecv(buf.data(), 64, 1, Meta(1, 64), nullptr, 0, 0, MessageMeta{})
                       : c.SendRecv(nullptr, 0, 0, MessageMeta{}, buf.data(), 64, 0, Meta(1, 64));
    ASSERT_TRUE(request.ok()) << request.status();
    const absl::Status status = (*request)->Wait(absl::Seconds(5));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_TRUE(Contains(status.message(), "fake-local: copying the message from rank 0 to rank 1 "
                                           "for step 1 (kind 0) (64 bytes): fake copy failure"))
        << status;
  });
  EXPECT_EQ((*world)->Comm(0).BytesSent(), 64);  // the failed message is not counted
}

TEST(LocalWorldTest, CopierFactoryErrorFailsCreate) {
  LocalWorldOptions options;
  options.make_copier = [](int rank) -> absl::StatusOr<std::unique_ptr<LocalCopier>> {
    return absl::FailedPreconditionError(absl::StrCat("no copier for rank ", rank));
  };
  absl::StatusOr<std::unique_ptr<LocalWorld>> world = LocalWorld::Create(2, options);
  EXPECT_EQ(world.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(world.status().message(), "no copier for rank 0")) << world.status();
}

// Without CUDA built, or without a device, cuda-local is a clear error.
TEST(CudaLocalTest, WithoutDeviceIsAClearError) {
  absl::StatusOr<std::unique_ptr<LocalWorld>> world = CreateCudaLocalWorld(2);
  if (world.ok()) GTEST_SKIP() << "a CUDA device is present (cuda_local_comm_test covers it)";
  EXPECT_EQ(world.status().code(), CudaLocalBuilt() ? absl::StatusCode::kFailedPrecondition
                                                    : absl::StatusCode::kUnimplemented)
      << world.status();
  EXPECT_TRUE(Contains(world.status().message(), "cuda-local")) << world.status();
}

// The message checksum: the standard check value, the same on the SSE4.2
// and table paths whatever the split, and a sealed header that tells a
// flipped bit in itself or in its payload.
TEST(Crc32c, CheckValueSplitsAndSealedHeaders) {
  const std::string nine = "123456789";
  EXPECT_EQ(Crc32c(nine.data(), nine.size()), 0xE3069283u);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
  std::string big(1000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);
  const uint32_t whole = Crc32c(big.data(), big.size());
  for (size_t cut : {1, 7, 8, 9, 500, 999}) {
    EXPECT_EQ(Crc32c(big.data() + cut, big.size() - cut, Crc32c(big.data(), cut)), whole) << cut;
  }
  MessageHeader h;
  h.src_rank = 2;
  h.dst_rank = 0;
  h.bytes = static_cast<int64_t>(big.size());
  h.meta.step = 3;
  SealHeader(&h, big.data());
  EXPECT_TRUE(CheckHeaderIntact(h).ok());
  EXPECT_TRUE(CheckPayloadIntact(h, big.data()).ok());
  for (size_t byte = 0; byte < sizeof(h); ++byte) {
    MessageHeader bad = h;
    reinterpret_cast<unsigned char*>(&bad)[byte] ^= 0x10;
    EXPECT_FALSE(CheckHeaderIntact(bad).ok() && CheckPayloadIntact(bad, big.data()).ok()) << byte;
  }
  big[500] ^= 1;
  const absl::Status s = CheckPayloadIntact(h, big.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(s.message(), "from rank 2 for step 3")) << s;
}

}  // namespace
}  // namespace ringattn::comm
