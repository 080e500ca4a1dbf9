// See ring_test_util.h.
#include "tests/runtime/ring_test_util.h"

#include <cmath>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attention/cuda/memory.h"
#include "comm/local/cuda_local.h"
#include "comm/local/local_comm.h"
#include "gtest/gtest.h"
#include "tools/placement.h"

namespace ringattn::testing {
namespace {

std::vector<uint8_t> Store(const std::vector<float>& x, DType t) {
  std::vector<uint8_t> bytes(x.size() * DTypeSize(t));
  EncodeFloats(x.data(), static_cast<int64_t>(x.size()), t, bytes.data());
  return bytes;
}
std::vector<float> Load(const std::vector<uint8_t>& bytes, DType t) {
  std::vector<float> x(bytes.size() / DTypeSize(t));
  DecodeFloats(bytes.data(), static_cast<int64_t>(x.size()), t, x.data());
  return x;
}

absl::StatusOr<std::unique_ptr<comm::LocalWorld>> MakeWorld(Backend backend, int world) {
  if (backend == Backend::kCuda) return comm::CreateCudaLocalWorld(world);
  return comm::LocalWorld::Create(world);
}

}  // namespace

std::string RingCase::Name() const {
  return absl::StrCat(c.Name(), "_w", world, "_", ShardingName(sharding));
}
void PrintTo(const RingCase& r, std::ostream* os) { *os << r.Name(); }

absl::Status RingResult::Ok() const {
  for (size_t r = 0; r < fwd_status.size(); ++r) {
    if (!fwd_status[r].ok()) {
      return absl::Status(fwd_status[r].code(),
                          absl::StrCat("rank ", r, " forward: ", fwd_status[r].message()));
    }
    if (!bwd_status[r].ok()) {
      return absl::Status(bwd_status[r].code(),
                          absl::StrCat("rank ", r, " backward: ", bwd_status[r].message()));
    }
  }
  return absl::OkStatus();
}

RingResult RunRing(const Problem& pr, int world, Sharding sharding, const RingRunOptions& o) {
  const Case& c = pr.c;
  const int64_t B = c.batch, S = c.seqlen_q, H = c.heads, Hk = c.heads_k, D = c.head_dim;
  const DType t = c.dtype;
  const int64_t es = DTypeSize(t);
  RingResult res;
  res.out.assign(B * S * H * D, NAN);
  res.lse.assign(B * H * S, NAN);
  res.dq.assign(B * S * H * D, NAN);
  res.dk.assign(B * S * Hk * D, NAN);
  res.dv.assign(B * S * Hk * D, NAN);
  res.bytes_sent.assign(world, 0);
  res.fwd_status.assign(world, absl::OkStatus());
  res.bwd_status.assign(world, absl::OkStatus());
  auto world_or = MakeWorld(o.backend, world);
  if (!world_or.ok()) {
    ADD_FAILURE() << "creating the world: " << world_or.status();
    res.fwd_status.assign(world, world_or.status());
    return res;
  }
  comm::LocalWorld& lw = **world_or;
  const auto q_full = Store(pr.q, t), k_full = Store(pr.k, t), v_full = Store(pr.v, t),
             do_full = Store(pr.dout, t);
  std::vector<std::vector<uint8_t>> out_b(world), dq_b(world), dk_b(world), dv_b(world);
  std::vector<std::vector<float>> lse_b(world);
  std::vector<char> fwd_done(world, 0), bwd_done(world, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      if (o.take_part && !o.take_part(r)) return;
      RingOptions opt;
      opt.seqlen = S;
      opt.sharding = sharding;
      opt.stripe = 2;
      opt.causal = c.mask.causal;
      opt.window_left = c.mask.window_left;
      opt.window_right = c.mask.window_right;
      opt.softcap = c.softcap;
      opt.dtype = t;
      opt.timeout = o.timeout;
      opt.num_threads = 1;
      opt.backend = o.backend;
      opt.deterministic = o.deterministic;
      int64_t d_rank = D;
      if (o.tweak) o.tweak(r, &opt, &d_rank);
      auto ring = RingAttention::Create(&lw.Comm(r), opt);
      if (!ring.ok()) {
        res.fwd_status[r] = ring.status();
        FAIL() << "rank " << r << ": " << ring.status();
      }
      const Layout& layout = (*ring)->layout();
      const int64_t Sr = layout.ShardLength(r);
      std::vector<uint8_t> q(B * Sr * H * d_rank * es), k(B * Sr * Hk * d_rank * es), v(k.size()),
          dout(q.size());
      if (d_rank == D) {
        layout.ShardRows(q_full.data(), r, B, H * D * es, q.data());
        layout.ShardRows(k_full.data(), r, B, Hk * D * es, k.data());
        layout.ShardRows(v_full.data(), r, B, Hk * D * es, v.data());
        layout.ShardRows(do_full.data(), r, B, H * D * es, dout.data());
      }
      out_b[r].assign(q.size(), 0xff);
      lse_b[r].assign(B * H * Sr, NAN);
      // Every tensor where the backend reads it (device copies on cuda,
      // uploaded from the host vectors, poison included).
      tools::Placement place(o.backend);
      auto view = [&](std::vector<uint8_t>& x, int64_t heads) -> TensorView {
        auto v_or = place.Place(x, t, {B, Sr, heads, d_rank}, /*upload=*/true);
        EXPECT_TRUE(v_or.ok()) << v_or.status();
        return v_or.ok() ? *v_or : TensorView{};
      };
      auto lse_or = place.Place(lse_b[r], DType::kFloat32, {B, H, Sr}, /*upload=*/true);
      ASSERT_TRUE(lse_or.ok()) << lse_or.status();
      const TensorView qv = view(q, H), kv = view(k, Hk), vv = view(v, Hk), ov = view(out_b[r], H);
      // On a caller's stream: the device inputs are poisoned now and get
      // their bytes on the stream after a delay, from device copies.
      cuda::Stream stream;
      std::vector<cuda::DeviceBuffer> originals;
      cuda::DeviceBuffer scratch;
      auto late = [&](const TensorView& t) {
        const int64_t bytes = t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3] * es;
        auto copy = cuda::DeviceBuffer::Allocate(bytes);
        ASSERT_TRUE(copy.ok()) << copy.status();
        ASSERT_TRUE(cuda::CopyDeviceToDevice(copy->data(), t.data, bytes).ok());
        ASSERT_TRUE(cuda::Fill(t.data, 0xff, bytes).ok());
        ASSERT_TRUE(cuda::CopyAsync(t.data, copy->data(), bytes, stream.get()).ok());
        originals.push_back(std::move(copy).value());
      };
      if (o.caller_stream) {
        auto s = cuda::Stream::Create();
        ASSERT_TRUE(s.ok()) << s.status();
        stream = std::move(s).value();
        auto buf = cuda::DeviceBuffer::Allocate(int64_t{256} << 20);
        ASSERT_TRUE(buf.ok()) << buf.status();
        scratch = std::move(buf).value();
        for (int i = 0; i < 8; ++i) {  // about a millisecond of the stream's time
          ASSERT_TRUE(cuda::FillAsync(scratch.data(), i, scratch.size(), stream.get()).ok());
        }
        for (const TensorView* t : {&qv, &kv, &vv}) late(*t);
      }
      res.fwd_status[r] = (*ring)->ForwardOnStream(stream.get(), qv, kv, vv, ov, *lse_or);
      res.bytes_sent[r] = (*ring)->LastStats().bytes_sent;
      if (!res.fwd_status[r].ok()) return;
      const absl::Status fetched = place.Download(stream.get());
      ASSERT_TRUE(fetched.ok()) << fetched;
      fwd_done[r] = 1;
      if (!o.backward) return;
      dq_b[r].assign(q.size(), 0xff);
      dk_b[r].assign(k.size(), 0xff);
      dv_b[r].assign(k.size(), 0xff);
      const TensorView dov = view(dout, H), dqv = view(dq_b[r], H), dkv = view(dk_b[r], Hk),
                       dvv = view(dv_b[r], Hk);
      if (o.caller_stream) late(dov);
      res.bwd_status[r] =
          (*ring)->BackwardOnStream(stream.get(), qv, kv, vv, ov, *lse_or, dov, dqv, dkv, dvv);
      if (!res.bwd_status[r].ok()) return;
      const absl::Status fetched_b = place.Download(stream.get());
      ASSERT_TRUE(fetched_b.ok()) << fetched_b;
      bwd_done[r] = 1;
    });
  }
  for (auto& th : threads) th.join();
  for (int r = 0; r < world; ++r) res.bytes_sent[r] = lw.Comm(r).BytesSent();
  auto layout = Layout::Create(sharding, S, world, 2);
  auto gather = [&](std::vector<std::vector<uint8_t>>& parts, int64_t heads,
                    std::vector<float>* dst, const std::vector<char>& done) {
    std::vector<uint8_t> f(B * S * heads * D * es);
    for (int r = 0; r < world; ++r) {
      if (!done[r]) return;
      layout->GatherRows(parts[r].data(), r, B, heads * D * es, f.data());
    }
    *dst = Load(f, t);
  };
  gather(out_b, H, &res.out, fwd_done);
  gather(dq_b, H, &res.dq, bwd_done);
  gather(dk_b, Hk, &res.dk, bwd_done);
  gather(dv_b, Hk, &res.dv, bwd_done);
  for (int r = 0; r < world; ++r) {
    if (!fwd_done[r]) continue;
    layout->GatherRows(lse_b[r].data(), r, B * H, 4, res.lse.data());
  }
  return res;
}

RingExpectation Expect(const Problem& pr, bool backward) {
  RingExpectation e;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &e.out, &e.lse);
  std::vector<float> out_n, lse_n;
  NaiveForward(pr, &out_n, &lse_n);
  const DType t = pr.c.dtype;
  e.tol_out = Tolerance(MaxError(out_n, e.out), t);
  e.tol_lse = Tolerance(MaxError(lse_n, e.lse), DType::kFloat32);
  if (backward) {
    ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &e.dq, &e.dk,
                      &e.dv);
    std::vector<float> dq_n, dk_n, dv_n;
    NaiveBackward(pr, &dq_n, &dk_n, &dv_n);
    e.tol_dq = Tolerance(MaxError(dq_n, e.dq), t);
    e.tol_dk = Tolerance(MaxError(dk_n, e.dk), t);
    e.tol_dv = Tolerance(MaxError(dv_n, e.dv), t);
  }
  return e;
}

void ExpectClose(const RingResult& r, const RingExpectation& e, bool backward) {
  EXPECT_LE(MaxError(r.out, e.out), e.tol_out) << "out";
  EXPECT_LE(MaxError(r.lse, e.lse), e.tol_lse) << "lse";
  if (!backward) return;
  EXPECT_LE(MaxError(r.dq, e.dq), e.tol_dq) << "dq";
  EXPECT_LE(MaxError(r.dk, e.dk), e.tol_dk) << "dk";
  EXPECT_LE(MaxError(r.dv, e.dv), e.tol_dv) << "dv";
}

}  // namespace ringattn::testing
