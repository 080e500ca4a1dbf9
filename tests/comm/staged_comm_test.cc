// The staged communicator (comm/staged/staged_comm.h) over the local
// backend with the host stager: the whole conformance suite, so staging
// keeps every promise of the interface (headers checked before a byte lands,
// timeouts, aborts, zero-byte messages), and a failing copy is reported.
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "base/status.h"
#include "comm/local/local_comm.h"
#include "comm/staged/staged_comm.h"
#include "gtest/gtest.h"
#include "tests/comm/conformance.h"

namespace ringattn::comm {
namespace {

using conformance::CommConformanceTest;

class StagedWorld : public conformance::CommWorld {
 public:
  StagedWorld(std::unique_ptr<LocalWorld> world, absl::Duration timeout)
      : world_(std::move(world)) {
    for (int r = 0; r < world_->Size(); ++r) {
      staged_.push_back(MakeStagedCommunicator(&world_->Comm(r), MakeHostStager(), timeout));
    }
  }
  ~StagedWorld() override {
    staged_.clear();  // before the world they wrap
  }
  void Run(const std::function<void(Communicator&)>& body) override {
    std::vector<Communicator*> comms;
    for (auto& c : staged_) comms.push_back(c.get());
    conformance::RunOnThreads(comms, body);
  }

 private:
  std::unique_ptr<LocalWorld> world_;
  std::vector<std::unique_ptr<Communicator>> staged_;
};

std::shared_ptr<const conformance::CommBackend> StagedBackend() {
  return conformance::LocalBackendOf(
      "staged local", [](std::unique_ptr<LocalWorld> world, absl::Duration timeout) {
        return std::unique_ptr<conformance::CommWorld>(
            new StagedWorld(std::move(world), timeout));
      });
}

INSTANTIATE_TEST_SUITE_P(Staged, CommConformanceTest,
                         ::testing::ValuesIn(conformance::ConformanceParams(StagedBackend(),
                                                                            {1, 2, 3, 4})),
                         conformance::ConformanceParamName);

// A stager whose copy to the destination fails.
class FailingStager final : public Stager {
 public:
  absl::StatusOr<void*> AllocHost(int64_t bytes) override { return host_->AllocHost(bytes); }
  void FreeHost(void* p) override { host_->FreeHost(p); }
  absl::Status ToHost(void* h, const void* s, int64_t n) override { return host_->ToHost(h, s, n); }
  absl::Status FromHost(void*, const void*, int64_t) override {
    return absl::InternalError("staging from host: device lost");
  }
  std::string Describe() const override { return "failing"; }

 private:
  std::unique_ptr<Stager> host_ = MakeHostStager();
};

TEST(StagedComm, AFailedCopyToTheDestinationIsTheRequestsError) {
  auto world = LocalWorld::Create(2);
  ASSERT_TRUE(world.ok()) << world.status();
  auto a = MakeStagedCommunicator(&(*world)->Comm(0), MakeHostStager(), absl::Seconds(10));
  auto b = MakeStagedCommunicator(&(*world)->Comm(1), std::make_unique<FailingStager>(),
                                  absl::Seconds(10));
  MessageMeta meta;
  meta.ndim = 1;
  meta.shape[0] = 16;
  std::vector<char> src(16, 7), dst(16, 0);
  auto ra = a->SendRecv(src.data(), 16, 1, meta, nullptr, 0, 0, MessageMeta{});
  auto rb = b->SendRecv(nullptr, 0, 0, MessageMeta{}, dst.data(), 16, 0, meta);
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_TRUE((*ra)->Wait(absl::Seconds(10)).ok());
  const absl::Status s = (*rb)->Wait(absl::Seconds(10));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "device lost")) << s;
  EXPECT_EQ(dst[0], 0);
}

TEST(StagedComm, CudaStagerWithoutCudaOrDeviceIsAClearError) {
  auto stager = MakeCudaStager(0);
  if (stager.ok()) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_TRUE(stager.status().code() == absl::StatusCode::kUnimplemented ||
              stager.status().code() == absl::StatusCode::kFailedPrecondition)
      << stager.status();
}

}  // namespace
}  // namespace ringattn::comm
