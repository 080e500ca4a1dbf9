// The communicator conformance suite (see conformance.h): the test bodies,
// each written per rank, and the plumbing that runs them on a backend.
#include "tests/comm/conformance.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace ringattn::comm::conformance {

void* CommWorld::Alloc(Communicator&, int64_t bytes) {
  return ::operator new(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
}
void CommWorld::Free(Communicator&, void* ptr) { ::operator delete(ptr); }
void CommWorld::Upload(Communicator&, void* dst, const void* host_src, int64_t bytes) {
  if (bytes > 0) std::memcpy(dst, host_src, static_cast<size_t>(bytes));
}
void CommWorld::Download(Communicator&, void* host_dst, const void* src, int64_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, src, static_cast<size_t>(bytes));
}

void RunOnThreads(const std::vector<Communicator*>& comms,
                  const std::function<void(Communicator&)>& body) {
  std::vector<std::thread> threads;
  threads.reserve(comms.size());
  for (Communicator* comm : comms) threads.emplace_back([&body, comm] { body(*comm); });
  for (std::thread& t : threads) t.join();
}

std::vector<ConformanceParam> ConformanceParams(std::shared_ptr<const CommBackend> backend,
                                                const std::vector<int>& sizes) {
  std::vector<ConformanceParam> params;
  for (int size : sizes) params.push_back(ConformanceParam{backend, size});
  return params;
}

std::string ConformanceParamName(const ::testing::TestParamInfo<ConformanceParam>& info) {
  return absl::StrCat("W", info.param.size);
}

void PrintTo(const ConformanceParam& param, std::ostream* os) {
  *os << (param.backend ? param.backend->name : std::string("?")) << " W=" << param.size;
}

Buffer::Buffer(CommWorld& world, Communicator& comm, int64_t bytes)
    : world_(world), comm_(comm), bytes_(bytes), ptr_(world.Alloc(comm, bytes)) {}

Buffer::~Buffer() { world_.Free(comm_, ptr_); }

void Buffer::Write(const std::vector<uint8_t>& host, int64_t offset) {
  world_.Upload(comm_, static_cast<char*>(ptr_) + offset, host.data(),
                static_cast<int64_t>(host.size()));
}

std::vector<uint8_t> Buffer::Read(int64_t offset, int64_t bytes) const {
  if (bytes < 0) bytes = bytes_ - offset;
  std::vector<uint8_t> host(static_cast<size_t>(bytes));
  world_.Download(comm_, host.data(), static_cast<const char*>(ptr_) + offset, bytes);
  return host;
}

void Buffer::Fill(uint8_t value) {
  Write(std::vector<uint8_t>(static_cast<size_t>(bytes_), value));
}

void CommConformanceTest::SetUp() {
  if (!backend().skip_reason) return;
  const std::string reason = backend().skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
}

void CommConformanceTest::RunWorld(absl::Duration timeout,
                                   const std::function<void(Communicator&)>& body) {
  absl::StatusOr<std::unique_ptr<CommWorld>> made = backend().make_world(size(), timeout);
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<CommWorld> w = std::move(made).value();
  world_ = w.get();
  w->Run(body);
  world_ = nullptr;
}

namespace {

constexpr int32_t kDtypeBytes = 7;  // any code: the suite moves raw bytes
constexpr uint8_t kPoison = 0xA5;
constexpr int64_t kGuard = 64;  // poisoned bytes past every receive
// A wait that must succeed (far longer than it takes).
constexpr absl::Duration kWait = absl::Seconds(5);
// The timeout of tests that expect one; short to keep the suite fast.
constexpr absl::Duration kShort = absl::Milliseconds(250);
// Scheduling slack on a loaded machine: "promptly" means within this.
constexpr absl::Duration kSlack = absl::Milliseconds(1500);

int Mod(int a, int n) { return ((a % n) + n) % n; }
int Next(const Communicator& c) { return Mod(c.Rank() + 1, c.Size()); }
int Prev(const Communicator& c) { return Mod(c.Rank() - 1, c.Size()); }

// Half requests around the ring (receive from the left, send to the right,
// as two requests): every rank receives first where requests progress
// independently; with in-order requests (NCCL) odd ranks receive first and
// even ranks send first, which no ring size can deadlock.
bool ReceiveFirst(const CommBackend& backend, const Communicator& c) {
  return backend.independent_requests || c.Rank() % 2 == 1;
}
constexpr const char* kNoSelfHalfRequests =
    "half requests to oneself cannot be matched with in-order requests "
    "(CommBackend::independent_requests)";

MessageMeta Meta(int step, int64_t bytes, int kind = 0) {
  MessageMeta meta;
  meta.step = step;
  meta.kind = kind;
  meta.dtype = kDtypeBytes;
  meta.ndim = 2;
  meta.shape[0] = 1;
  meta.shape[1] = bytes;
  return meta;
}

MessageHeader Header(int src, int dst, int64_t bytes, const MessageMeta& meta) {
  MessageHeader h;
  h.src_rank = src;
  h.dst_rank = dst;
  h.bytes = bytes;
  h.meta = meta;
  return h;
}

// Seeded bytes: different for every (salt, origin rank, tag).
std::vector<uint8_t> Payload(uint64_t salt, int origin, int64_t tag, int64_t bytes) {
  uint64_t state = salt * 0x9E3779B97F4A7C15ull ^ (origin + 1) * 0xC2B2AE3D27D4EB4Full ^
                   (static_cast<uint64_t>(tag) + 1) * 0x165667B19E3779F9ull;
  std::vector<uint8_t> out(static_cast<size_t>(bytes));
  for (int64_t i = 0; i < bytes; i += 8) {
    state += 0x9E3779B97F4A7C15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, static_cast<size_t>(std::min<int64_t>(8, bytes - i)));
  }
  return out;
}

std::vector<uint8_t> Poison(int64_t bytes) {
  return std::vector<uint8_t>(static_cast<size_t>(bytes), kPoison);
}

::testing::AssertionResult IsOk(const absl::Status& status) {
  if (status.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << status;
}

::testing::AssertionResult HasCode(const absl::Status& status, absl::StatusCode code) {
  if (status.code() == code) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected " << absl::StatusCodeToString(code) << ", got " << status;
}

::testing::AssertionResult Mentions(const absl::Status& status, const std::string& text) {
  if (absl::string_view(status.message()).find(text) != absl::string_view::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "\"" << text << "\" not in: " << status;
}

::testing::AssertionResult SameBytes(const std::vector<uint8_t>& got,
                                     const std::vector<uint8_t>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  const auto diff = std::mismatch(got.begin(), got.end(), want.begin());
  if (diff.first == got.end()) return ::testing::AssertionSuccess();
  const auto i = diff.first - got.begin();
  return ::testing::AssertionFailure() << "byte " << i << " of " << got.size() << ": got "
                                       << int{got[i]} << ", want " << int{want[i]};
}

::testing::AssertionResult Within(absl::Duration elapsed, absl::Duration lo, absl::Duration hi) {
  if (elapsed >= lo && elapsed <= hi) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "took " << absl::FormatDuration(elapsed) << ", expected " << absl::FormatDuration(lo)
         << " to " << absl::FormatDuration(hi);
}

// SendRecv then Wait: the first error of the two.
absl::Status Exchange(Communicator& c, const void* send, int64_t send_bytes, int to,
                      const MessageMeta& send_meta, void* recv, int64_t recv_bytes, int from,
                      const MessageMeta& recv_meta, absl::Duration timeout = kWait) {
  absl::StatusOr<std::unique_ptr<Request>> request =
      c.SendRecv(send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
  if (!request.ok()) return request.status();
  return (*request)->Wait(timeout);
}

// Receive-only and send-only requests.
absl::StatusOr<std::unique_ptr<Request>> RecvOnly(Communicator& c, void* recv, int64_t bytes,
                                                  int from, const MessageMeta& meta) {
  return c.SendRecv(nullptr, 0, 0, MessageMeta{}, recv, bytes, from, meta);
}
absl::StatusOr<std::unique_ptr<Request>> SendOnly(Communicator& c, const void* send, int64_t bytes,
                                                  int to, const MessageMeta& meta) {
  return c.SendRecv(send, bytes, to, meta, nullptr, 0, 0, MessageMeta{});
}

void BusyFor(absl::Duration d) {
  const absl::Time end = absl::Now() + d;
  volatile uint64_t sink = 1;
  while (absl::Now() < end) {
    for (int i = 0; i < 10000; ++i) sink = sink * 6364136223846793005ull + 1442695040888963407ull;
  }
}

// Rotates every rank's block around the ring for `steps` steps with double
// buffers, as the runtime does: post the next exchange, use the current
// block, wait, swap. The block that started on rank o has length(o) bytes;
// every rank knows the length of every block it receives.
void RingRotation(CommWorld& world, Communicator& c, uint64_t salt, int steps,
                  const std::function<int64_t(int)>& length) {
  const int w = c.Size();
  const int r = c.Rank();
  int64_t cap = 0;
  for (int o = 0; o < w; ++o) cap = std::max(cap, length(o));
  Buffer a(world, c, cap + kGuard);
  Buffer b(world, c, cap + kGuard);
  Buffer* cur = &a;
  Buffer* nxt = &b;
  cur->Fill(kPoison);
  cur->Write(Payload(salt, r, 0, length(r)));
  for (int s = 0; s < steps; ++s) {
    SCOPED_TRACE(absl::StrCat("rank ", r, " step ", s));
    const int have = Mod(r - s, w);
    const int get = Mod(r - s - 1, w);
    const int64_t send_len = length(have);
    const int64_t recv_len = length(get);
    nxt->Fill(kPoison);
    absl::StatusOr<std::unique_ptr<Request>> request =
        c.SendRecv(cur->data(), send_len, Next(c), Meta(s, send_len), nxt->data(), recv_len,
                   Prev(c), Meta(s, recv_len));
    ASSERT_TRUE(IsOk(request.status()));
    // "Compute" on the current block while the next one travels; the block
    // being sent stays intact.
    EXPECT_TRUE(SameBytes(cur->Read(0, send_len), Payload(salt, have, 0, send_len)));
    ASSERT_TRUE(IsOk((*request)->Wait(kWait)));
    EXPECT_TRUE(SameBytes(nxt->Read(0, recv_len), Payload(salt, get, 0, recv_len)));
    EXPECT_TRUE(SameBytes(nxt->Read(recv_len), Poison(cap + kGuard - recv_len)))
        << "bytes written past the message";
    std::swap(cur, nxt);
  }
}

TEST_P(CommConformanceTest, IdentityAndOneRingStep) {
  RunWorld(kWait, [&](Communicator& c) {
    EXPECT_EQ(c.Size(), size());
    ASSERT_GE(c.Rank(), 0);
    ASSERT_LT(c.Rank(), size());
    EXPECT_FALSE(c.Name().empty());
    EXPECT_EQ(c.BytesSent(), 0);
    // Ranks are distinct: each one receives its predecessor's number.
    Buffer send(world(), c, sizeof(int32_t));
    Buffer recv(world(), c, sizeof(int32_t));
    const int32_t me = c.Rank();
    std::vector<uint8_t> bytes(sizeof(me));
    std::memcpy(bytes.data(), &me, sizeof(me));
    send.Write(bytes);
    recv.Fill(kPoison);
    ASSERT_TRUE(IsOk(Exchange(c, send.data(), sizeof(me), Next(c), Meta(0, sizeof(me)), recv.data(),
                              sizeof(me), Prev(c), Meta(0, sizeof(me)))));
    int32_t got = -1;
    std::memcpy(&got, recv.Read().data(), sizeof(got));
    EXPECT_EQ(got, Prev(c));
  });
}

TEST_P(CommConformanceTest, RingRotationEqualBlocks) {
  const int steps = 2 * size() + 3;
  RunWorld(kWait, [&](Communicator& c) {
    RingRotation(world(), c, 1, steps, [](int) { return int64_t{256 * 1024 + 3}; });
  });
}

TEST_P(CommConformanceTest, RingRotationUnevenBlocksWithEmptyShards) {
  // Shards of different lengths, as when S does not divide by W; every
  // fourth rank (rank 0 included) holds nothing.
  const int steps = 2 * size() + 1;
  RunWorld(kWait, [&](Communicator& c) {
    RingRotation(world(), c, 2, steps,
                 [](int o) { return o % 4 == 0 ? int64_t{0} : int64_t{1000} * o + 7; });
  });
}

TEST_P(CommConformanceTest, MessageSizes) {
  const std::vector<int64_t> sizes = {0, 1, 3, 64, 4096, 65537, (1 << 20) + 5, (5 << 20) + 3};
  RunWorld(kWait, [&](Communicator& c) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("bytes ", sizes[i]));
      const int64_t n = sizes[i];
      RingRotation(world(), c, 10 + i, 1, [n](int) { return n; });
    }
  });
}

TEST_P(CommConformanceTest, SendToSelf) {
  RunWorld(kWait, [&](Communicator& c) {
    int step = 0;
    for (int64_t n : {int64_t{0}, int64_t{1000}, int64_t{300001}}) {
      SCOPED_TRACE(absl::StrCat("bytes ", n));
      Buffer send(world(), c, n);
      Buffer recv(world(), c, n + kGuard);
      const std::vector<uint8_t> payload = Payload(3, c.Rank(), n, n);
      send.Write(payload);
      recv.Fill(kPoison);
      ASSERT_TRUE(IsOk(Exchange(c, send.data(), n, c.Rank(), Meta(step, n), recv.data(), n,
                                c.Rank(), Meta(step, n))));
      EXPECT_TRUE(SameBytes(recv.Read(0, n), payload));
      EXPECT_TRUE(SameBytes(recv.Read(n), Poison(kGuard)));
      ++step;
    }
  });
}

TEST_P(CommConformanceTest, SeveralInFlightMatchInPostingOrder) {
  // Four messages to the same peer in flight at once (as KV and dKV in the
  // backward ring), waited for in reverse order.
  constexpr int kMessages = 4;
  RunWorld(kWait, [&](Communicator& c) {
    auto len = [](int k, int origin) { return int64_t{100} * (k + 1) + origin; };
    std::vector<std::unique_ptr<Buffer>> sends, recvs;
    std::vector<std::unique_ptr<Request>> requests;
    for (int k = 0; k < kMessages; ++k) {
      sends.push_back(std::make_unique<Buffer>(world(), c, len(k, c.Rank())));
      sends.back()->Write(Payload(4, c.Rank(), k, len(k, c.Rank())));
      recvs.push_back(std::make_unique<Buffer>(world(), c, len(k, Prev(c))));
      recvs.back()->Fill(kPoison);
      auto request =
          c.SendRecv(sends[k]->data(), len(k, c.Rank()), Next(c), Meta(0, len(k, c.Rank()), k),
                     recvs[k]->data(), len(k, Prev(c)), Prev(c), Meta(0, len(k, Prev(c)), k));
      ASSERT_TRUE(IsOk(request.status()));
      requests.push_back(std::move(request).value());
    }
    for (int k = kMessages - 1; k >= 0; --k) {
      ASSERT_TRUE(IsOk(requests[k]->Wait(kWait))) << "message " << k;
      EXPECT_TRUE(SameBytes(recvs[k]->Read(), Payload(4, Prev(c), k, len(k, Prev(c)))))
          << "message " << k;
    }
  });
}

TEST_P(CommConformanceTest, HalfRequestsAndZeroByteMessages) {
  if (!backend().independent_requests && size() == 1) GTEST_SKIP() << kNoSelfHalfRequests;
  RunWorld(kWait, [&](Communicator& c) {
    constexpr int64_t kBytes = 5000;
    Buffer send(world(), c, kBytes);
    Buffer recv(world(), c, kBytes);
    send.Write(Payload(5, c.Rank(), 0, kBytes));
    recv.Fill(kPoison);
    // A receive-only request, then a send-only one (see ReceiveFirst).
    const bool receive_first = ReceiveFirst(backend(), c);
    absl::StatusOr<std::unique_ptr<Request>> incoming;
    if (receive_first) incoming = RecvOnly(c, recv.data(), kBytes, Prev(c), Meta(0, kBytes));
    auto outgoing = SendOnly(c, send.data(), kBytes, Next(c), Meta(0, kBytes));
    if (!receive_first) incoming = RecvOnly(c, recv.data(), kBytes, Prev(c), Meta(0, kBytes));
    ASSERT_TRUE(IsOk(incoming.status()));
    ASSERT_TRUE(IsOk(outgoing.status()));
    ASSERT_TRUE(IsOk((*outgoing)->Wait(kWait)));
    ASSERT_TRUE(IsOk((*incoming)->Wait(kWait)));
    EXPECT_TRUE(SameBytes(recv.Read(), Payload(5, Prev(c), 0, kBytes)));

    // A zero-byte message (non-null buffers) is still a message: it is
    // matched, its header checked, and it keeps the order.
    Buffer empty_send(world(), c, 0);
    Buffer empty_recv(world(), c, 0);
    ASSERT_TRUE(IsOk(Exchange(c, empty_send.data(), 0, Next(c), Meta(1, 0), empty_recv.data(), 0,
                              Prev(c), Meta(1, 0))));
    recv.Fill(kPoison);
    ASSERT_TRUE(IsOk(Exchange(c, send.data(), kBytes, Next(c), Meta(2, kBytes), recv.data(), kBytes,
                              Prev(c), Meta(2, kBytes))));
    EXPECT_TRUE(SameBytes(recv.Read(), Payload(5, Prev(c), 0, kBytes)));

    // Neither half: complete at once.
    auto nothing = c.SendRecv(nullptr, 0, 0, MessageMeta{}, nullptr, 0, 0, MessageMeta{});
    ASSERT_TRUE(IsOk(nothing.status()));
    absl::StatusOr<bool> done = (*nothing)->Test();
    ASSERT_TRUE(IsOk(done.status()));
    EXPECT_TRUE(*done);
  });
}

TEST_P(CommConformanceTest, InvalidArgumentsAreRefusedBeforeAnythingIsPosted) {
  RunWorld(kWait, [&](Communicator& c) {
    constexpr int64_t kBytes = 64;
    Buffer send(world(), c, kBytes);
    Buffer recv(world(), c, kBytes);
    const MessageMeta meta = Meta(99, kBytes);
    MessageMeta bad_ndim = meta;
    bad_ndim.ndim = 7;
    MessageMeta negative_ndim = meta;
    negative_ndim.ndim = -1;
    struct Case {
      const char* name;
      absl::StatusOr<std::unique_ptr<Request>> result;
    };
    void* s = send.data();
    void* r = recv.data();
    const int w = c.Size();
    Case cases[] = {
        {"to == size", c.SendRecv(s, kBytes, w, meta, r, kBytes, Prev(c), meta)},
        {"to < 0", c.SendRecv(s, kBytes, -1, meta, r, kBytes, Prev(c), meta)},
        {"from out of range", c.SendRecv(s, kBytes, Next(c), meta, r, kBytes, w + 3, meta)},
        {"negative send bytes", c.SendRecv(s, -1, Next(c), meta, r, kBytes, Prev(c), meta)},
        {"negative recv bytes", c.SendRecv(s, kBytes, Next(c), meta, r, -8, Prev(c), meta)},
        {"null send with bytes",
         c.SendRecv(nullptr, kBytes, Next(c), meta, r, kBytes, Prev(c), meta)},
        {"null recv with bytes",
         c.SendRecv(s, kBytes, Next(c), meta, nullptr, kBytes, Prev(c), meta)},
        {"send ndim 7", c.SendRecv(s, kBytes, Next(c), bad_ndim, r, kBytes, Prev(c), meta)},
        {"recv ndim -1", c.SendRecv(s, kBytes, Next(c), meta, r, kBytes, Prev(c), negative_ndim)},
    };
    for (const Case& k : cases) {
      EXPECT_TRUE(HasCode(k.result.status(), absl::StatusCode::kInvalidArgument)) << k.name;
    }
    EXPECT_EQ(c.BytesSent(), 0);
    // Nothing was posted by the refused calls: the next exchange (step 0)
    // would otherwise meet a step-99 message.
    send.Write(Payload(6, c.Rank(), 0, kBytes));
    ASSERT_TRUE(IsOk(
        Exchange(c, s, kBytes, Next(c), Meta(0, kBytes), r, kBytes, Prev(c), Meta(0, kBytes))));
    EXPECT_TRUE(SameBytes(recv.Read(), Payload(6, Prev(c), 0, kBytes)));
  });
}

TEST_P(CommConformanceTest, HeaderMismatchIsRefusedOnReceipt) {
  struct Case {
    const char* name;
    int64_t bytes;                                        // what both sides agree on
    std::function<void(MessageMeta&, int64_t&)> perturb;  // rank 0's send
  };
  const std::vector<Case> cases = {
      {"shape", 4096,
       [](MessageMeta& m, int64_t&) {
         m.shape[0] = 2;
         m.shape[1] = 2048;
       }},
      {"ndim", 4096,
       [](MessageMeta& m, int64_t&) {
         m.ndim = 3;
         m.shape[2] = 1;
       }},
      {"dtype", 4096, [](MessageMeta& m, int64_t&) { m.dtype += 1; }},
      {"step", 4096, [](MessageMeta& m, int64_t&) { m.step += 1; }},
      {"kind", 4096, [](MessageMeta& m, int64_t&) { m.kind = 1; }},
      {"oversized", 4096, [](MessageMeta&, int64_t& b) { b += 8; }},
      {"truncated", 4096, [](MessageMeta&, int64_t& b) { b -= 8; }},
      {"zero-byte step", 0, [](MessageMeta& m, int64_t&) { m.step += 1; }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    RunWorld(kWait, [&](Communicator& c) {
      const int r = c.Rank();
      const int receiver = Mod(1, c.Size());  // receives rank 0's message
      Buffer send(world(), c, k.bytes + 8);
      Buffer recv(world(), c, k.bytes + kGuard);
      send.Write(Payload(7, r, 0, k.bytes + 8));
      recv.Fill(kPoison);
      MessageMeta send_meta = Meta(3, k.bytes);
      int64_t send_bytes = k.bytes;
      if (r == 0) k.perturb(send_meta, send_bytes);
      const absl::Status status = Exchange(c, send.data(), send_bytes, Next(c), send_meta,
                                           recv.data(), k.bytes, Prev(c), Meta(3, k.bytes));
      MessageMeta sent_meta = Meta(3, k.bytes);
      int64_t sent_bytes = k.bytes;
      k.perturb(sent_meta, sent_bytes);
      const std::string sent = HeaderToString(Header(0, receiver, sent_bytes, sent_meta));
      const std::string expected = HeaderToString(Header(0, receiver, k.bytes, Meta(3, k.bytes)));
      if (r == receiver) {
        EXPECT_TRUE(HasCode(status, absl::StatusCode::kInvalidArgument));
        EXPECT_TRUE(Mentions(status, sent));
        EXPECT_TRUE(Mentions(status, expected));
        EXPECT_TRUE(SameBytes(recv.Read(), Poison(k.bytes + kGuard))) << "bytes were written";
      } else if (r == 0) {
        if (backend().sender_sees_header_mismatch) {
          EXPECT_TRUE(HasCode(status, absl::StatusCode::kInvalidArgument));
          EXPECT_TRUE(Mentions(status, sent));
          EXPECT_TRUE(Mentions(status, expected));
        } else if (!status.ok()) {
          EXPECT_TRUE(HasCode(status, absl::StatusCode::kInvalidArgument));
        }
      } else {
        EXPECT_TRUE(IsOk(status));
        EXPECT_TRUE(SameBytes(recv.Read(0, k.bytes), Payload(7, Prev(c), 0, k.bytes)));
      }
    });
  }
}

TEST_P(CommConformanceTest, SilentPeerTimesOutNamingPeerAndStep) {
  if (size() < 2) GTEST_SKIP() << "needs a peer";
  RunWorld(kShort, [&](Communicator& c) {
    if (c.Rank() == 1) {
      constexpr int64_t kBytes = 64;
      Buffer recv(world(), c, kBytes);
      recv.Fill(kPoison);
      {  // Rank 0 never sends.
        auto request = RecvOnly(c, recv.data(), kBytes, 0, Meta(3, kBytes));
        ASSERT_TRUE(IsOk(request.status()));
        const absl::Time start = absl::Now();
        const absl::Status status = (*request)->Wait(kShort);
        EXPECT_TRUE(Within(absl::Now() - start, kShort * 0.9, kShort + kSlack));
        EXPECT_TRUE(HasCode(status, absl::StatusCode::kDeadlineExceeded));
        EXPECT_TRUE(Mentions(status, "rank 0"));
        EXPECT_TRUE(Mentions(status, "step 3"));
        const absl::Time destroy = absl::Now();
        request->reset();
        EXPECT_TRUE(Within(absl::Now() - destroy, absl::ZeroDuration(), kShort + kSlack));
      }
      EXPECT_TRUE(SameBytes(recv.Read(), Poison(kBytes)));
      {  // Rank 0 never receives.
        Buffer send(world(), c, kBytes);
        auto request = SendOnly(c, send.data(), kBytes, 0, Meta(4, kBytes));
        ASSERT_TRUE(IsOk(request.status()));
        const absl::Time start = absl::Now();
        const absl::Status status = (*request)->Wait(kShort);
        // A transport may complete a small send before it is received.
        if (!status.ok()) {
          EXPECT_TRUE(Within(absl::Now() - start, kShort * 0.9, kShort + kSlack));
          EXPECT_TRUE(HasCode(status, absl::StatusCode::kDeadlineExceeded));
          EXPECT_TRUE(Mentions(status, "rank 0"));
          EXPECT_TRUE(Mentions(status, "step 4"));
        }
      }
    }
    EXPECT_TRUE(IsOk(c.Barrier(kWait)));
  });
}

TEST_P(CommConformanceTest, AbortMidRingFailsEveryRankPromptly) {
  if (!backend().abort_reaches_peers && size() > 1) {
    GTEST_SKIP() << "Abort does not reach this backend's peers (CommBackend::abort_reaches_peers)";
  }
  const int steps = size() + 6;  // more than any rank can finish once one stops
  RunWorld(kWait, [&](Communicator& c) {
    const int aborter = c.Size() - 1;
    constexpr int64_t kBytes = 65536;
    constexpr absl::Duration kLongWait = absl::Seconds(3);
    Buffer send(world(), c, kBytes);
    Buffer recv(world(), c, kBytes);
    send.Write(Payload(8, c.Rank(), 0, kBytes));
    const absl::Time start = absl::Now();
    absl::Status status;
    int step = 0;
    for (; step < steps && status.ok(); ++step) {
      if (c.Rank() == aborter && step == 3) c.Abort(absl::InternalError("injected fault"));
      status = Exchange(c, send.data(), kBytes, Next(c), Meta(step, kBytes), recv.data(), kBytes,
                        Prev(c), Meta(step, kBytes), kLongWait);
    }
    EXPECT_TRUE(Within(absl::Now() - start, absl::ZeroDuration(), kSlack));
    EXPECT_TRUE(HasCode(status, absl::StatusCode::kAborted)) << "ran " << step << " steps";
    EXPECT_TRUE(Mentions(status, absl::StrCat("rank ", aborter)));
    EXPECT_TRUE(Mentions(status, "injected fault"));
    // Later calls fail too, at once.
    const absl::Time later = absl::Now();
    const absl::Status barrier = c.Barrier(kLongWait);
    EXPECT_TRUE(HasCode(barrier, absl::StatusCode::kAborted));
    EXPECT_TRUE(Mentions(barrier, absl::StrCat("rank ", aborter)));
    const absl::Status again =
        Exchange(c, send.data(), kBytes, Next(c), Meta(steps, kBytes), recv.data(), kBytes, Prev(c),
                 Meta(steps, kBytes), kLongWait);
    EXPECT_TRUE(HasCode(again, absl::StatusCode::kAborted));
    EXPECT_TRUE(Within(absl::Now() - later, absl::ZeroDuration(), kSlack));
  });
}

TEST_P(CommConformanceTest, AbortWakesPendingWaits) {
  if (!backend().abort_reaches_peers && size() > 1) {
    GTEST_SKIP() << "Abort does not reach this backend's peers (CommBackend::abort_reaches_peers)";
  }
  // Rank 0 too waits for a message from rank 0.
  if (!backend().independent_requests) GTEST_SKIP() << kNoSelfHalfRequests;
  RunWorld(kWait, [&](Communicator& c) {
    constexpr int kAborter = 0;
    constexpr int64_t kBytes = 64;
    constexpr absl::Duration kLongWait = absl::Seconds(3);
    constexpr absl::Duration kDelay = absl::Milliseconds(100);
    Buffer recv(world(), c, kBytes);
    recv.Fill(kPoison);
    // Everyone waits for a message that rank 0 never sends.
    auto request = RecvOnly(c, recv.data(), kBytes, kAborter, Meta(5, kBytes));
    ASSERT_TRUE(IsOk(request.status()));
    const absl::Time start = absl::Now();
    if (c.Rank() == kAborter) {
      absl::SleepFor(kDelay);
      c.Abort(absl::UnavailableError("node lost"));
    }
    const absl::Status status = (*request)->Wait(kLongWait);
    EXPECT_TRUE(Within(absl::Now() - start, absl::ZeroDuration(), kDelay + kSlack));
    EXPECT_TRUE(HasCode(status, absl::StatusCode::kAborted));
    EXPECT_TRUE(Mentions(status, "rank 0"));
    EXPECT_TRUE(Mentions(status, "node lost"));
    absl::StatusOr<bool> test = (*request)->Test();
    EXPECT_TRUE(HasCode(test.status(), absl::StatusCode::kAborted));
    EXPECT_TRUE(SameBytes(recv.Read(), Poison(kBytes)));
  });
}

TEST_P(CommConformanceTest, TestPollsWithoutBlocking) {
  if (!backend().independent_requests && size() == 1) GTEST_SKIP() << kNoSelfHalfRequests;
  RunWorld(kWait, [&](Communicator& c) {
    constexpr int64_t kBytes = 128 * 1024 + 1;
    Buffer send(world(), c, kBytes);
    Buffer recv(world(), c, kBytes);
    send.Write(Payload(9, c.Rank(), 0, kBytes));
    recv.Fill(kPoison);
    const bool receive_first = ReceiveFirst(backend(), c);
    absl::StatusOr<std::unique_ptr<Request>> incoming;
    if (receive_first) {
      incoming = RecvOnly(c, recv.data(), kBytes, Prev(c), Meta(0, kBytes));
      ASSERT_TRUE(IsOk(incoming.status()));
      // Nobody sends before the barrier: pending.
      absl::StatusOr<bool> done = (*incoming)->Test();
      ASSERT_TRUE(IsOk(done.status()));
      EXPECT_FALSE(*done);
    }
    ASSERT_TRUE(IsOk(c.Barrier(kWait)));
    auto outgoing = SendOnly(c, send.data(), kBytes, Next(c), Meta(0, kBytes));
    ASSERT_TRUE(IsOk(outgoing.status()));
    if (!receive_first) {
      incoming = RecvOnly(c, recv.data(), kBytes, Prev(c), Meta(0, kBytes));
      ASSERT_TRUE(IsOk(incoming.status()));
    }
    const absl::Time deadline = absl::Now() + kWait;
    bool done = false;
    while (!done && absl::Now() < deadline) {
      absl::StatusOr<bool> polled = (*incoming)->Test();
      ASSERT_TRUE(IsOk(polled.status()));
      done = *polled;
      if (!done) absl::SleepFor(absl::Milliseconds(1));
    }
    ASSERT_TRUE(done) << "never completed";
    EXPECT_TRUE(SameBytes(recv.Read(), Payload(9, Prev(c), 0, kBytes)));
    absl::StatusOr<bool> again = (*incoming)->Test();
    ASSERT_TRUE(IsOk(again.status()));
    EXPECT_TRUE(*again);
    EXPECT_TRUE(IsOk((*incoming)->Wait(absl::ZeroDuration())));
    EXPECT_TRUE(IsOk((*outgoing)->Wait(kWait)));
  });
}

TEST_P(CommConformanceTest, BytesSentCountsPayload) {
  RunWorld(kWait, [&](Communicator& c) {
    auto len = [](int step, int origin) { return int64_t{1000} * (step + 1) + 17 * origin; };
    constexpr int kSteps = 5;
    Buffer send(world(), c, len(kSteps, c.Size()));
    Buffer recv(world(), c, len(kSteps, c.Size()));
    EXPECT_EQ(c.BytesSent(), 0);
    int64_t total = 0;
    for (int s = 0; s < kSteps; ++s) {
      ASSERT_TRUE(
          IsOk(Exchange(c, send.data(), len(s, c.Rank()), Next(c), Meta(s, len(s, c.Rank())),
                        recv.data(), len(s, Prev(c)), Prev(c), Meta(s, len(s, Prev(c))))));
      total += len(s, c.Rank());
      EXPECT_EQ(c.BytesSent(), total) << "after step " << s;
    }
    // Zero-byte messages add nothing; receives never count.
    ASSERT_TRUE(IsOk(Exchange(c, send.data(), 0, Next(c), Meta(kSteps, 0), recv.data(), 0, Prev(c),
                              Meta(kSteps, 0))));
    if (backend().independent_requests || c.Size() > 1) {
      const bool receive_first = ReceiveFirst(backend(), c);
      absl::StatusOr<std::unique_ptr<Request>> incoming;
      if (receive_first) incoming = RecvOnly(c, recv.data(), 10, Prev(c), Meta(kSteps + 1, 10));
      ASSERT_TRUE(
          IsOk(SendOnly(c, send.data(), 10, Next(c), Meta(kSteps + 1, 10)).value()->Wait(kWait)));
      if (!receive_first) incoming = RecvOnly(c, recv.data(), 10, Prev(c), Meta(kSteps + 1, 10));
      ASSERT_TRUE(IsOk(incoming.status()));
      ASSERT_TRUE(IsOk((*incoming)->Wait(kWait)));
    } else {  // in-order requests at W = 1: one request both ways
      ASSERT_TRUE(IsOk(Exchange(c, send.data(), 10, Next(c), Meta(kSteps + 1, 10), recv.data(), 10,
                                Prev(c), Meta(kSteps + 1, 10))));
    }
    EXPECT_EQ(c.BytesSent(), total + 10);
  });
}

TEST_P(CommConformanceTest, BarrierWaitsForEveryRank) {
  RunWorld(kWait, [&](Communicator& c) {
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(IsOk(c.Barrier(kWait))) << "barrier " << i;
    constexpr absl::Duration kLate = absl::Milliseconds(120);
    for (int round = 0; round < 3; ++round) {
      const int late = round % c.Size();
      const absl::Time start = absl::Now();
      if (c.Rank() == late) absl::SleepFor(kLate);
      ASSERT_TRUE(IsOk(c.Barrier(kWait)));
      if (c.Rank() != late) {
        EXPECT_TRUE(Within(absl::Now() - start, kLate * 0.6, kLate + kSlack))
            << "rank " << c.Rank() << " passed the barrier before rank " << late << " came";
      }
    }
  });
}

TEST_P(CommConformanceTest, BarrierTimesOut) {
  if (size() < 2) GTEST_SKIP() << "needs a peer";
  RunWorld(kShort, [&](Communicator& c) {
    if (c.Rank() == 0) return;  // never comes
    const absl::Time start = absl::Now();
    const absl::Status status = c.Barrier(kShort);
    EXPECT_TRUE(Within(absl::Now() - start, kShort * 0.9, kShort + kSlack));
    EXPECT_TRUE(HasCode(status, absl::StatusCode::kDeadlineExceeded));
  });
}

TEST_P(CommConformanceTest, TransferProgressesWithoutTestOrWait) {
  // The rank computes and never calls into the communicator; the message
  // must still arrive (the overlap of the ring depends on it).
  // (The size is modest so that sanitizer builds on 2 cores keep up.)
  RunWorld(kWait, [&](Communicator& c) {
    constexpr int64_t kBytes = (256 << 10) + 1;
    Buffer send(world(), c, kBytes);
    Buffer recv(world(), c, kBytes);
    send.Write(Payload(11, c.Rank(), 0, kBytes));
    recv.Fill(kPoison);
    // Every rank posts at about the same time, so the peers' halves are
    // there long before the check.
    ASSERT_TRUE(IsOk(c.Barrier(kWait)));
    auto request = c.SendRecv(send.data(), kBytes, Next(c), Meta(0, kBytes), recv.data(), kBytes,
                              Prev(c), Meta(0, kBytes));
    ASSERT_TRUE(IsOk(request.status()));
    BusyFor(absl::Milliseconds(200));
    absl::SleepFor(absl::Milliseconds(50));
    absl::StatusOr<bool> done = (*request)->Test();
    ASSERT_TRUE(IsOk(done.status()));
    EXPECT_TRUE(*done) << "no progress while the rank computed";
    ASSERT_TRUE(IsOk((*request)->Wait(kWait)));
    EXPECT_TRUE(SameBytes(recv.Read(), Payload(11, Prev(c), 0, kBytes)));
  });
}

TEST_P(CommConformanceTest, DestroyingPendingRequestWaitsForIt) {
  if (size() < 2) GTEST_SKIP() << "needs a peer";
  RunWorld(kWait, [&](Communicator& c) {
    constexpr int64_t kBytes = 1000;
    if (c.Rank() == 1) {
      Buffer recv(world(), c, kBytes);
      recv.Fill(kPoison);
      auto request = RecvOnly(c, recv.data(), kBytes, 0, Meta(2, kBytes));
      ASSERT_TRUE(IsOk(request.status()));
      request->reset();  // rank 0 sends a little later
      EXPECT_TRUE(SameBytes(recv.Read(), Payload(12, 0, 0, kBytes)));
    } else if (c.Rank() == 0) {
      Buffer send(world(), c, kBytes);
      send.Write(Payload(12, 0, 0, kBytes));
      absl::SleepFor(absl::Milliseconds(100));
      auto request = SendOnly(c, send.data(), kBytes, 1, Meta(2, kBytes));
      ASSERT_TRUE(IsOk(request.status()));
      EXPECT_TRUE(IsOk((*request)->Wait(kWait)));
    }
  });
}

TEST_P(CommConformanceTest, DestroyingTimedOutRequestIsSafe) {
  if (size() < 2) GTEST_SKIP() << "needs a peer";
  RunWorld(kShort, [&](Communicator& c) {
    constexpr int64_t kBytes = 1000;
    if (c.Rank() == 1) {
      auto recv = std::make_unique<Buffer>(world(), c, kBytes);
      recv->Fill(kPoison);
      auto request = RecvOnly(c, recv->data(), kBytes, 0, Meta(2, kBytes));
      ASSERT_TRUE(IsOk(request.status()));
      EXPECT_TRUE(
          HasCode((*request)->Wait(absl::Milliseconds(100)), absl::StatusCode::kDeadlineExceeded));
      const absl::Time start = absl::Now();
      request->reset();
      EXPECT_TRUE(Within(absl::Now() - start, absl::ZeroDuration(), kShort + kSlack));
      EXPECT_TRUE(SameBytes(recv->Read(), Poison(kBytes)));
      recv.reset();  // a late message must not land here
    }
    ASSERT_TRUE(IsOk(c.Barrier(kWait)));
    if (c.Rank() == 0) {
      Buffer send(world(), c, kBytes);
      auto request = SendOnly(c, send.data(), kBytes, 1, Meta(2, kBytes));
      ASSERT_TRUE(IsOk(request.status()));
      const absl::Status status = (*request)->Wait(kShort);
      if (!status.ok()) {
        EXPECT_TRUE(HasCode(status, absl::StatusCode::kDeadlineExceeded));
      }
      const absl::Time start = absl::Now();
      request->reset();
      EXPECT_TRUE(Within(absl::Now() - start, absl::ZeroDuration(), kShort + kSlack));
    }
    EXPECT_TRUE(IsOk(c.Barrier(kWait)));
  });
}

// ---- Collectives (AllToAll, AllGather, Split) --------------------------

// Bytes rank a sends rank b in the collective tests: uneven, zero for some
// pairs (self included at times).
int64_t PairBytes(int a, int b) { return (a * 7 + b * 3) % 5 == 0 ? 0 : 97 * (a + 1) + 31 * b; }

// AllToAll with PairBytes on `c`, checked bitwise with guards.
void CheckAllToAll(CommWorld& world, Communicator& c, uint64_t salt, int step) {
  const int w = c.Size(), r = c.Rank();
  std::vector<std::unique_ptr<Buffer>> send, recv;
  std::vector<const void*> sp;
  std::vector<void*> rp;
  std::vector<int64_t> sb, rb;
  for (int j = 0; j < w; ++j) {
    sb.push_back(PairBytes(r, j));
    rb.push_back(PairBytes(j, r));
    send.push_back(std::make_unique<Buffer>(world, c, sb[j] + kGuard));
    recv.push_back(std::make_unique<Buffer>(world, c, rb[j] + kGuard));
    send[j]->Write(Payload(salt, r, j, sb[j]));
    recv[j]->Fill(kPoison);
    sp.push_back(send[j]->data());
    rp.push_back(recv[j]->data());
  }
  ASSERT_TRUE(IsOk(c.AllToAll(sp, sb, rp, rb, step, 5, kWait)));
  for (int j = 0; j < w; ++j) {
    SCOPED_TRACE(absl::StrCat("rank ", r, " from ", j));
    EXPECT_TRUE(SameBytes(recv[j]->Read(0, rb[j]), Payload(salt, j, r, rb[j])));
    EXPECT_TRUE(SameBytes(recv[j]->Read(rb[j]), Poison(kGuard))) << "bytes past the message";
    EXPECT_TRUE(SameBytes(send[j]->Read(0, sb[j]), Payload(salt, r, j, sb[j])));
  }
}

TEST_P(CommConformanceTest, AllToAllUnevenSizes) {
  RunWorld(kWait, [&](Communicator& c) {
    for (int step = 0; step < 3; ++step) CheckAllToAll(world(), c, 40 + step, step);
    // Counted as sent: every pair's bytes (its own included, as SendRecv).
    int64_t sent = 0;
    for (int j = 0; j < c.Size(); ++j) sent += 3 * PairBytes(c.Rank(), j);
    EXPECT_EQ(c.BytesSent(), sent);
  });
}

TEST_P(CommConformanceTest, AllGatherUnevenSizes) {
  RunWorld(kWait, [&](Communicator& c) {
    const int w = c.Size(), r = c.Rank();
    auto bytes = [](int o) { return o % 3 == 1 ? int64_t{0} : int64_t{4096} * o + 13; };
    Buffer send(world(), c, bytes(r) + kGuard);
    send.Write(Payload(50, r, 0, bytes(r)));
    std::vector<std::unique_ptr<Buffer>> recv;
    std::vector<void*> rp;
    std::vector<int64_t> rb;
    for (int j = 0; j < w; ++j) {
      rb.push_back(bytes(j));
      recv.push_back(std::make_unique<Buffer>(world(), c, rb[j] + kGuard));
      recv[j]->Fill(kPoison);
      rp.push_back(recv[j]->data());
    }
    ASSERT_TRUE(IsOk(c.AllGather(send.data(), bytes(r), rp, rb, 1, 6, kWait)));
    for (int j = 0; j < w; ++j) {
      EXPECT_TRUE(SameBytes(recv[j]->Read(0, rb[j]), Payload(50, j, 0, rb[j])));
      EXPECT_TRUE(SameBytes(recv[j]->Read(rb[j]), Poison(kGuard)));
    }
  });
}

TEST_P(CommConformanceTest, CollectiveArgumentsAreRefusedBeforeAnythingIsPosted) {
  RunWorld(kWait, [&](Communicator& c) {
    const int w = c.Size();
    std::vector<const void*> sp(w, nullptr);
    std::vector<void*> rp(w, nullptr);
    std::vector<int64_t> zeros(w, 0), short_sizes(w + 1, 0), negative(w, 0), big(w, 0);
    negative[0] = -1;
    big[w - 1] = 8;  // with a null buffer
    absl::Status s = c.AllToAll(sp, short_sizes, rp, zeros, 0, 0, kWait);
    EXPECT_TRUE(HasCode(s, absl::StatusCode::kInvalidArgument));
    EXPECT_TRUE(Mentions(s, "send_bytes"));
    s = c.AllToAll(sp, negative, rp, zeros, 0, 0, kWait);
    EXPECT_TRUE(Mentions(s, "send_bytes[0]"));
    s = c.AllToAll(sp, zeros, rp, big, 0, 0, kWait);
    EXPECT_TRUE(Mentions(s, absl::StrCat("recv[", w - 1, "]")));
    s = c.AllGather(nullptr, 0, rp, short_sizes, 0, 0, kWait);
    EXPECT_TRUE(Mentions(s, "recv_bytes"));
    const std::vector<int> bad_colors(w, -1);
    EXPECT_TRUE(Mentions(c.Split(bad_colors).status(), "colors[0]"));
    EXPECT_TRUE(Mentions(c.Split(std::vector<int>(w + 1, 0)).status(), "colors"));
    EXPECT_EQ(c.BytesSent(), 0);  // nothing was posted
    // The world still works.
    EXPECT_TRUE(IsOk(c.Barrier(kWait)));
  });
}

TEST_P(CommConformanceTest, SplitGroupsRunCollectivesAndRingsIndependently) {
  RunWorld(kWait, [&](Communicator& c) {
    const int w = c.Size(), r = c.Rank();
    // Two interleaved groups (even and odd ranks), as a hybrid's rings, and
    // contiguous pairs, as its Ulysses groups.
    for (int scheme = 0; scheme < 2; ++scheme) {
      std::vector<int> colors(w);
      for (int j = 0; j < w; ++j) colors[j] = scheme == 0 ? j % 2 : j / 2;
      absl::StatusOr<std::unique_ptr<Communicator>> sub = c.Split(colors);
      ASSERT_TRUE(IsOk(sub.status()));
      Communicator& g = **sub;
      int members = 0, below = 0;
      for (int j = 0; j < w; ++j) {
        members += colors[j] == colors[r];
        below += colors[j] == colors[r] && j < r;
      }
      EXPECT_EQ(g.Size(), members);
      EXPECT_EQ(g.Rank(), below);
      EXPECT_EQ(g.Name(), c.Name());
      CheckAllToAll(world(), g, 60 + scheme, scheme);
      RingRotation(world(), g, 70 + scheme, g.Size() + 1,
                   [](int o) { return int64_t{100} * o + 9; });
      EXPECT_TRUE(IsOk(g.Barrier(kWait)));
    }
    EXPECT_TRUE(IsOk(c.Barrier(kWait)));
  });
}

TEST_P(CommConformanceTest, RankMissingFromCollectiveFailsEverySurvivorWithinTimeout) {
  if (size() < 2) GTEST_SKIP() << "needs a peer";
  RunWorld(kShort, [&](Communicator& c) {
    const int w = c.Size();
    if (c.Rank() == w - 1) return;  // dies before the collective
    std::vector<std::unique_ptr<Buffer>> bufs;
    std::vector<const void*> sp;
    std::vector<void*> rp;
    std::vector<int64_t> sizes(w, 256);
    for (int j = 0; j < 2 * w; ++j) bufs.push_back(std::make_unique<Buffer>(world(), c, 256));
    for (int j = 0; j < w; ++j) {
      sp.push_back(bufs[j]->data());
      rp.push_back(bufs[w + j]->data());
    }
    const absl::Time start = absl::Now();
    const absl::Status s = c.AllToAll(sp, sizes, rp, sizes, 9, 5, kShort);
    EXPECT_TRUE(Within(absl::Now() - start, absl::ZeroDuration(), kShort + kSlack));
    EXPECT_FALSE(s.ok());
    EXPECT_TRUE(s.code() == absl::StatusCode::kDeadlineExceeded ||
                s.code() == absl::StatusCode::kAborted)
        << s;
    EXPECT_TRUE(Mentions(s, "step 9"));
  });
}

}  // namespace
}  // namespace ringattn::comm::conformance
