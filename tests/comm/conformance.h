// The communicator conformance suite: one set of test bodies that every
// backend (local threads, UCX processes, NCCL on GPUs) runs unchanged.
//
// Each test body is written per rank: it sees only its own Communicator and
// derives everything it checks from its rank, the world size and seeded
// payloads, never from memory shared with other ranks. So the same body runs
// on W threads of one process, or once in each of W processes.
//
// A backend plugs in with a CommBackend (a factory of worlds) and one
// instantiation of the value-parameterized suite in its own test file,
// which links the `comm_conformance` object library (tests/comm):
//
//   using ringattn::comm::conformance::CommConformanceTest;
//   INSTANTIATE_TEST_SUITE_P(
//       Ucx, CommConformanceTest,
//       ::testing::ValuesIn(ringattn::comm::conformance::ConformanceParams(
//           MakeUcxBackend(), {4})),
//       ringattn::comm::conformance::ConformanceParamName);
//
// Tests are named <Backend>/CommConformanceTest.<Test>/W<size>; tests that
// need a peer skip at W = 1.
//
// An in-process backend's CommWorld::Run runs the body on one thread per
// rank (RunOnThreads does that); a multi-process backend runs the body once,
// for the rank of this process, and lists only its launched world size.
// Every test creates a fresh world (an aborted world stays aborted).
//
// What the suite holds a backend to (beyond communicator.h's comments):
// bitwise delivery of any size (0 included) with nothing written past the
// message; per-pair matching in posting order; a header mismatch (shape,
// ndim, dtype, step, kind, bytes) refused on the receiver with an
// InvalidArgument quoting HeaderToString of both headers, before any byte
// lands; DeadlineExceeded naming "rank <peer>" and "step <s>"; Abort on one
// rank failing every rank's pending and later calls with Aborted naming
// "rank <r>" and the reason, within ~1.5 s; progress while the rank neither
// tests nor waits; BytesSent counting completed sends' payload (self-sends
// included); invalid arguments refused by SendRecv before anything is
// posted; a destroyed pending request waiting for its peer. CommBackend's
// flags name the two places where NCCL's model differs (request order,
// abort), and what the suite checks there instead.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/communicator.h"
#include "base/status.h"
#include "comm/local/local_comm.h"
#include "gtest/gtest.h"

namespace ringattn::comm::conformance {

// The ranks of one test. Message buffers are host memory by default; a
// backend whose messages live elsewhere (GPU memory) overrides the four
// memory functions, which are called on the rank's own thread.
class CommWorld {
 public:
  virtual ~CommWorld() = default;
  // Runs `body` once for every rank that this process drives, concurrently
  // (each on its own thread), and returns when all have returned.
  virtual void Run(const std::function<void(Communicator&)>& body) = 0;

  // `bytes` of message memory for `comm`'s rank; never null, even for 0.
  virtual void* Alloc(Communicator& comm, int64_t bytes);
  virtual void Free(Communicator& comm, void* ptr);
  virtual void Upload(Communicator& comm, void* dst, const void* host_src, int64_t bytes);
  virtual void Download(Communicator& comm, void* host_dst, const void* src, int64_t bytes);
};

// Runs body(*comms[r]) on one thread per rank and joins them.
void RunOnThreads(const std::vector<Communicator*>& comms,
                  const std::function<void(Communicator&)>& body);

struct CommBackend {
  std::string name;
  // A world of `size` ranks. `timeout` is how long a destroyed pending
  // request may wait for its peer (the communicator's own timeout).
  std::function<absl::StatusOr<std::unique_ptr<CommWorld>>(int size, absl::Duration timeout)>
      make_world;
  // Whether the SENDING rank's request also fails on a header mismatch
  // (local: yes; a transport where the receiver checks alone: no).
  bool sender_sees_header_mismatch = false;
  // Whether a rank's requests progress independently of each other, so
  // that every rank may post "receive from my left" and then, in a second
  // request, "send to my right". NCCL: no -- a rank's requests run one
  // after another in posting order, each matched by the peers' requests at
  // the same place; there the suite posts such half requests with odd
  // ranks receiving first and even ranks sending first (deadlock-free for
  // every ring size), and skips half requests to oneself (W = 1) and the
  // tests built on them.
  bool independent_requests = true;
  // Whether Abort() on one rank reaches the others, failing their pending
  // and later calls promptly with Aborted naming it. NCCL: no (they fail
  // within their timeout); the suite's abort tests then run at W = 1 only,
  // and the backend's own tests check the rest.
  bool abort_reaches_peers = true;
  // Non-empty: why this backend cannot run here (e.g. "no CUDA device");
  // every test of the suite is then skipped with that message.
  std::function<std::string()> skip_reason;
};

struct ConformanceParam {
  std::shared_ptr<const CommBackend> backend;
  int size = 1;
};

// One parameter per world size, for INSTANTIATE_TEST_SUITE_P.
// A backend whose worlds are LocalWorlds (communicator timeout `timeout`)
// that `wrap` turns into a CommWorld: the local backend, and the staged
// backend over it. Its header mismatches fail the sender too. (Inline: the
// suite's other users do not link the local backend.)
inline std::shared_ptr<const CommBackend> LocalBackendOf(
    std::string name,
    std::function<std::unique_ptr<CommWorld>(std::unique_ptr<LocalWorld>, absl::Duration)> wrap) {
  auto backend = std::make_shared<CommBackend>();
  backend->name = std::move(name);
  backend->make_world = [wrap](int size, absl::Duration timeout)
      -> absl::StatusOr<std::unique_ptr<CommWorld>> {
    LocalWorldOptions options;
    options.timeout = timeout;
    ASSIGN_OR_RETURN(std::unique_ptr<LocalWorld> world, LocalWorld::Create(size, options));
    return wrap(std::move(world), timeout);
  };
  backend->sender_sees_header_mismatch = true;
  return backend;
}

std::vector<ConformanceParam> ConformanceParams(std::shared_ptr<const CommBackend> backend,
                                                const std::vector<int>& sizes);
// "W4": the test's name suffix.
std::string ConformanceParamName(const ::testing::TestParamInfo<ConformanceParam>& info);
void PrintTo(const ConformanceParam& param, std::ostream* os);

// Message memory of one rank, released with the object.
class Buffer {
 public:
  Buffer(CommWorld& world, Communicator& comm, int64_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return ptr_; }
  int64_t size() const { return bytes_; }
  void Write(const std::vector<uint8_t>& host, int64_t offset = 0);
  std::vector<uint8_t> Read(int64_t offset = 0, int64_t bytes = -1) const;
  void Fill(uint8_t value);

 private:
  CommWorld& world_;
  Communicator& comm_;
  int64_t bytes_;
  void* ptr_;
};

// The fixture of the suite; the tests are in conformance.cc.
class CommConformanceTest : public ::testing::TestWithParam<ConformanceParam> {
 protected:
  void SetUp() override;  // skips when the backend's skip_reason says so

  int size() const { return GetParam().size; }
  const CommBackend& backend() const { return *GetParam().backend; }
  CommWorld& world() const { return *world_; }

  // Creates a fresh world whose own timeout is `timeout`, runs `body` on
  // every rank, and destroys the world.
  void RunWorld(absl::Duration timeout, const std::function<void(Communicator&)>& body);

 private:
  CommWorld* world_ = nullptr;
};

}  // namespace ringattn::comm::conformance
