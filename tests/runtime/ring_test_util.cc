// See ring_test_util.h.
#include "tests/runtime/ring_test_util.h"

#include <cmath>
#include <memory>
#include <thread>
#include <utility>

#include <map>
#include <mutex>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "base/cuda_memory.h"
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
  return absl::StrCat(c.Name(), "_w", world, "_", ShardingName(sharding), tag.empty() ? "" : "_",
                      tag);
}
void PrintTo(const RingCase& r, std::ostream* os) { *os << r.Name(); }

const char* RingDocsName(RingDocs kind) {
  switch (kind) {
    case RingDocs::kTiny: return "tiny";
    case RingDocs::kMixed: return "mixed";
    case RingDocs::kTileEdges: return "tile_edges";
    case RingDocs::kOne: return "one";
    case RingDocs::kShardEdges: return "shard_edges";
  }
  return "?";
}

Mask WithRingDocuments(Mask m, RingDocs kind, int64_t seqlen, int world) {
  static std::map<std::tuple<int, int64_t, int>, std::vector<int64_t>> pool;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::vector<int64_t>& b = pool[{static_cast<int>(kind), seqlen, world}];
  if (b.empty()) {
    b.push_back(0);
    switch (kind) {
      case RingDocs::kTiny:
      case RingDocs::kMixed:
      case RingDocs::kTileEdges: {
        const DocKind k = kind == RingDocs::kTiny    ? DocKind::kTiny
                          : kind == RingDocs::kMixed ? DocKind::kMixed
                                                     : DocKind::kTileEdges;
        for (int64_t e : TestDocuments(k)) {
          if (e > 0 && e < seqlen) b.push_back(e);
        }
        break;
      }
      case RingDocs::kOne:
        break;
      case RingDocs::kShardEdges:  // the contiguous shards' edges, an empty document at each
        for (int r = 1; r < world; ++r) {
          const int64_t e = r * (seqlen / world) + std::min<int64_t>(r, seqlen % world);
          b.push_back(e);
          b.push_back(e);
        }
        break;
    }
    b.push_back(seqlen);
  }
  Mask out = m;
  out.cu_seqlens = b.data();
  out.num_docs = static_cast<int64_t>(b.size()) - 1;
  return out;
}

Mask WithRingBlocks(Mask m, BlockKind kind, int64_t seqlen, int64_t size, int64_t heads) {
  static std::map<std::tuple<int, int64_t, int64_t, int64_t>, std::vector<uint8_t>> pool;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const int64_t n = (seqlen + size - 1) / size;
  std::vector<uint8_t>& bits = pool[{static_cast<int>(kind), seqlen, size, heads}];
  if (bits.empty()) {
    // The kernel tests' masks, cut to this sequence's blocks.
    const Mask src = WithTestBlocks(Mask{}, kind, size, heads);
    bits.resize(heads * n * n);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) {
          bits[(h * n + a) * n + b] = src.blocks[(h * src.block_rows + a) * src.block_cols + b];
        }
  }
  return m.WithBlocks(bits.data(), heads, n, n, size);
}

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

RankOutput RunRank(const Problem& pr, comm::Communicator& comm, Sharding sharding,
                   const RingRunOptions& o) {
  const Case& c = pr.c;
  const int64_t B = c.batch, S = c.seqlen_q, H = c.heads, Hk = c.heads_k, D = c.head_dim;
  const DType t = c.dtype;
  const int64_t es = DTypeSize(t);
  const int r = comm.Rank();
  RankOutput res;
  RingOptions opt;
  opt.seqlen = S;
  opt.sharding = sharding;
  opt.stripe = 2;
  opt.mask = c.mask;
  opt.softcap = c.softcap;
  opt.dtype = t;
  opt.timeout = o.timeout;
  opt.num_threads = 1;
  opt.backend = o.backend;
  opt.deterministic = o.deterministic;
  int64_t d_rank = D;
  if (o.tweak) o.tweak(r, &opt, &d_rank);
  auto ring = RingAttention::Create(&comm, opt);
  if (!ring.ok()) {
    res.fwd = ring.status();
    ADD_FAILURE() << "rank " << r << ": " << ring.status();
    return res;
  }
  const Layout& layout = (*ring)->layout();
  const int64_t Sr = layout.ShardLength(r);
  std::vector<uint8_t> q(B * Sr * H * d_rank * es), k(B * Sr * Hk * d_rank * es), v(k.size()),
      dout(q.size());
  if (d_rank == D) {
    layout.ShardRows(Store(pr.q, t).data(), r, B, H * D * es, q.data());
    layout.ShardRows(Store(pr.k, t).data(), r, B, Hk * D * es, k.data());
    layout.ShardRows(Store(pr.v, t).data(), r, B, Hk * D * es, v.data());
    layout.ShardRows(Store(pr.dout, t).data(), r, B, H * D * es, dout.data());
  }
  res.out.assign(q.size(), 0xff);
  res.lse.assign(B * H * Sr, NAN);
  // Every tensor where the backend reads it (device copies on cuda,
  // uploaded from the host vectors, poison included).
  tools::Placement place(o.backend);
  auto view = [&](std::vector<uint8_t>& x, int64_t heads) -> TensorView {
    auto v_or = place.Place(x, t, {B, Sr, heads, d_rank}, /*upload=*/true);
    EXPECT_TRUE(v_or.ok()) << v_or.status();
    return v_or.ok() ? *v_or : TensorView{};
  };
  auto lse_or = place.Place(res.lse, DType::kFloat32, {B, H, Sr}, /*upload=*/true);
  if (!lse_or.ok()) {
    res.fwd = lse_or.status();
    ADD_FAILURE() << lse_or.status();
    return res;
  }
  const TensorView qv = view(q, H), kv = view(k, Hk), vv = view(v, Hk), ov = view(res.out, H);
  // On a caller's stream: the device inputs are poisoned now and get
  // their bytes on the stream after a delay, from device copies.
  cuda::Stream stream;
  std::vector<cuda::DeviceBuffer> originals;
  cuda::DeviceBuffer scratch;
  auto late = [&](const TensorView& x) {
    const int64_t bytes = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] * es;
    auto copy = cuda::DeviceBuffer::Allocate(bytes);
    ASSERT_TRUE(copy.ok()) << copy.status();
    ASSERT_TRUE(cuda::CopyDeviceToDevice(copy->data(), x.data, bytes).ok());
    ASSERT_TRUE(cuda::Fill(x.data, 0xff, bytes).ok());
    // Those ran on the legacy stream, which the caller's does not follow.
    ASSERT_TRUE(cuda::Synchronize(nullptr).ok());
    ASSERT_TRUE(cuda::CopyAsync(x.data, copy->data(), bytes, stream.get()).ok());
    originals.push_back(std::move(copy).value());
  };
  if (o.caller_stream) {
    auto made = cuda::Stream::Create();
    if (!made.ok()) {
      res.fwd = made.status();
      ADD_FAILURE() << made.status();
      return res;
    }
    stream = std::move(made).value();
    auto buf = cuda::DeviceBuffer::Allocate(int64_t{256} << 20);
    EXPECT_TRUE(buf.ok()) << buf.status();
    if (buf.ok()) {
      scratch = std::move(buf).value();
      for (int i = 0; i < 8; ++i) {  // about a millisecond of the stream's time
        EXPECT_TRUE(cuda::FillAsync(scratch.data(), i, scratch.size(), stream.get()).ok());
      }
    }
    for (const TensorView* x : {&qv, &kv, &vv}) late(*x);
  }
  res.fwd = (*ring)->ForwardOnStream(stream.get(), qv, kv, vv, ov, *lse_or);
  res.bytes_sent = (*ring)->LastStats().bytes_sent;
  if (!res.fwd.ok()) return res;
  const absl::Status fetched = place.Download(stream.get());
  EXPECT_TRUE(fetched.ok()) << fetched;
  if (!fetched.ok()) return res;
  res.fwd_done = true;
  if (!o.backward) return res;
  res.dq.assign(q.size(), 0xff);
  res.dk.assign(k.size(), 0xff);
  res.dv.assign(k.size(), 0xff);
  const TensorView dov = view(dout, H), dqv = view(res.dq, H), dkv = view(res.dk, Hk),
                   dvv = view(res.dv, Hk);
  if (o.caller_stream) late(dov);
  res.bwd = (*ring)->BackwardOnStream(stream.get(), qv, kv, vv, ov, *lse_or, dov, dqv, dkv, dvv);
  if (!res.bwd.ok()) return res;
  const absl::Status fetched_b = place.Download(stream.get());
  EXPECT_TRUE(fetched_b.ok()) << fetched_b;
  res.bwd_done = fetched_b.ok();
  return res;
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
  std::vector<RankOutput> ranks(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      if (o.take_part && !o.take_part(r)) return;
      ranks[r] = RunRank(pr, lw.Comm(r), sharding, o);
    });
  }
  for (auto& th : threads) th.join();
  for (int r = 0; r < world; ++r) {
    res.fwd_status[r] = ranks[r].fwd;
    res.bwd_status[r] = ranks[r].bwd;
    res.bytes_sent[r] = lw.Comm(r).BytesSent();
  }
  auto layout = Layout::Create(sharding, S, world, 2, c.mask);
  auto gather = [&](std::vector<uint8_t> RankOutput::*part, int64_t heads, std::vector<float>* dst,
                    bool RankOutput::*done) {
    std::vector<uint8_t> f(B * S * heads * D * es);
    for (int r = 0; r < world; ++r) {
      if (!(ranks[r].*done)) return;
      layout->GatherRows((ranks[r].*part).data(), r, B, heads * D * es, f.data());
    }
    *dst = Load(f, t);
  };
  gather(&RankOutput::out, H, &res.out, &RankOutput::fwd_done);
  gather(&RankOutput::dq, H, &res.dq, &RankOutput::bwd_done);
  gather(&RankOutput::dk, Hk, &res.dk, &RankOutput::bwd_done);
  gather(&RankOutput::dv, Hk, &res.dv, &RankOutput::bwd_done);
  for (int r = 0; r < world; ++r) {
    if (!ranks[r].fwd_done) continue;
    layout->GatherRows(ranks[r].lse.data(), r, B * H, 4, res.lse.data());
  }
  return res;
}

void ExpectRankClose(const Problem& pr, const RingExpectation& e, const Layout& layout, int rank,
                     const RankOutput& got, bool backward) {
  const Case& c = pr.c;
  const int64_t B = c.batch, H = c.heads, Hk = c.heads_k, D = c.head_dim;
  const int64_t Sr = layout.ShardLength(rank);
  auto rows = [&](const std::vector<double>& full, int64_t batch, int64_t row_elems) {
    std::vector<double> mine(batch * Sr * row_elems);
    layout.ShardRows(full.data(), rank, batch, row_elems * 8, mine.data());
    return mine;
  };
  ASSERT_TRUE(got.fwd_done) << "rank " << rank << " forward: " << got.fwd;
  EXPECT_LE(MaxError(Load(got.out, c.dtype), rows(e.out, B, H * D)), e.tol_out)
      << "out of rank " << rank;
  EXPECT_LE(MaxError(got.lse, rows(e.lse, B * H, 1)), e.tol_lse) << "lse of rank " << rank;
  if (!backward) return;
  ASSERT_TRUE(got.bwd_done) << "rank " << rank << " backward: " << got.bwd;
  EXPECT_LE(MaxError(Load(got.dq, c.dtype), rows(e.dq, B, H * D)), e.tol_dq)
      << "dq of rank " << rank;
  EXPECT_LE(MaxError(Load(got.dk, c.dtype), rows(e.dk, B, Hk * D)), e.tol_dk)
      << "dk of rank " << rank;
  EXPECT_LE(MaxError(Load(got.dv, c.dtype), rows(e.dv, B, Hk * D)), e.tol_dv)
      << "dv of rank " << rank;
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
