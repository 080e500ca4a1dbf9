// Tests of the `cuda-local` backend (comm/local/cuda_local.h): the
// communicator conformance suite with message buffers in device memory and
// in host memory (cudaMemcpyDefault moves both), and cuda-local's name and
// device check (a failing copy is local_comm_test's, with a fake copier).
// Label gpu: without a device every test
// is skipped with "no CUDA device".
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "attention/cuda/kernels.h"
#include "base/cuda_memory.h"
#include "base/status.h"
#include "comm/local/cuda_local.h"
#include "gtest/gtest.h"
#include "tests/comm/conformance.h"

namespace ringattn::comm {
namespace {

using conformance::CommConformanceTest;

std::string NoDevice() { return cuda::DeviceAvailable() ? "" : "no CUDA device"; }

class CudaLocalCommWorld : public conformance::CommWorld {
 public:
  CudaLocalCommWorld(std::unique_ptr<LocalWorld> world, bool device_buffers)
      : world_(std::move(world)), device_buffers_(device_buffers) {}
  void Run(const std::function<void(Communicator&)>& body) override {
    std::vector<Communicator*> comms;
    for (int r = 0; r < world_->Size(); ++r) comms.push_back(&world_->Comm(r));
    conformance::RunOnThreads(comms, body);
  }

  // Device memory, when asked for: the suite's bytes go through the GPU.
  void* Alloc(Communicator& comm, int64_t bytes) override {
    if (!device_buffers_) return CommWorld::Alloc(comm, bytes);
    absl::StatusOr<cuda::DeviceBuffer> buf =
        cuda::DeviceBuffer::Allocate(std::max<int64_t>(bytes, 1));
    EXPECT_TRUE(buf.ok()) << buf.status();
    if (!buf.ok()) return nullptr;
    void* ptr = buf->data();
    std::lock_guard<std::mutex> lock(mu_);
    buffers_[ptr] = std::move(buf).value();
    return ptr;
  }
  void Free(Communicator& comm, void* ptr) override {
    if (!device_buffers_) return CommWorld::Free(comm, ptr);
    std::lock_guard<std::mutex> lock(mu_);
    buffers_.erase(ptr);
  }
  void Upload(Communicator& comm, void* dst, const void* host_src, int64_t bytes) override {
    if (!device_buffers_) return CommWorld::Upload(comm, dst, host_src, bytes);
    const absl::Status s = cuda::CopyToDevice(dst, host_src, bytes);
    EXPECT_TRUE(s.ok()) << s;
    // A pageable upload may return before its DMA lands; the copy threads'
    // streams do not wait for the default stream.
    const absl::Status synced = cuda::Synchronize(nullptr);
    EXPECT_TRUE(synced.ok()) << synced;
  }
  void Download(Communicator& comm, void* host_dst, const void* src, int64_t bytes) override {
    if (!device_buffers_) return CommWorld::Download(comm, host_dst, src, bytes);
    const absl::Status s = cuda::CopyToHost(host_dst, src, bytes);
    EXPECT_TRUE(s.ok()) << s;
  }

 private:
  std::unique_ptr<LocalWorld> world_;
  const bool device_buffers_;
  std::mutex mu_;
  std::map<void*, cuda::DeviceBuffer> buffers_;
};

std::shared_ptr<const conformance::CommBackend> CudaLocalBackend(bool device_buffers) {
  auto backend = std::make_shared<conformance::CommBackend>();
  backend->name = device_buffers ? "cuda-local (device buffers)" : "cuda-local (host buffers)";
  backend->make_world = [device_buffers](int size, absl::Duration timeout)
      -> absl::StatusOr<std::unique_ptr<conformance::CommWorld>> {
    LocalWorldOptions options;
    options.timeout = timeout;
    ASSIGN_OR_RETURN(std::unique_ptr<LocalWorld> world, CreateCudaLocalWorld(size, options));
    return std::unique_ptr<conformance::CommWorld>(
        new CudaLocalCommWorld(std::move(world), device_buffers));
  };
  backend->sender_sees_header_mismatch = true;
  backend->skip_reason = NoDevice;
  return backend;
}

INSTANTIATE_TEST_SUITE_P(CudaLocalDevice, CommConformanceTest,
                         ::testing::ValuesIn(conformance::ConformanceParams(CudaLocalBackend(true),
                                                                            {1, 2, 3, 4, 8})),
                         conformance::ConformanceParamName);
INSTANTIATE_TEST_SUITE_P(CudaLocalHost, CommConformanceTest,
                         ::testing::ValuesIn(conformance::ConformanceParams(CudaLocalBackend(false),
                                                                            {2, 4})),
                         conformance::ConformanceParamName);

TEST(CudaLocalTest, NameAndBuilt) {
  if (!cuda::DeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  EXPECT_TRUE(CudaLocalBuilt());
  auto world = CreateCudaLocalWorld(2);
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ((*world)->Comm(0).Name(), "cuda-local");
  EXPECT_EQ(CreateCudaLocalWorld(2, {}, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ringattn::comm
