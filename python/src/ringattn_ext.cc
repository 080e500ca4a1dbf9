// ringattn._C: the nanobind extension behind the Python package. It turns
// DLPack arrays (torch tensors, NumPy arrays) into TensorViews without a
// copy, runs the C++ API (runtime/ringattn.h) with the GIL released, and
// turns every absl::Status into the Python exception of its kind:
//   InvalidArgument -> ValueError, DeadlineExceeded -> TimeoutError,
//   Unimplemented -> NotImplementedError, anything else -> RuntimeError,
// with the C++ message (the argument, expected and actual values). Wrong
// dtypes and devices are TypeErrors, raised here before the C++ API runs.
//
// Objects:
//   World      the communicators of this process (comm/world.h) for one
//              torch.distributed group: ucx for CPU tensors, nccl for CUDA
//              tensors, bootstrapped through a Python callable that
//              exchanges blobs among the group (the package uses the
//              group's c10d store, with a timeout)
//   Attention  one RingAttention (a rank of a World; or one device with no
//              communication, the local strategy), forward and backward into
//              caller-allocated outputs, on a caller's CUDA stream for
//              device tensors
// and the float64 reference (attention/reference.h), which the package's
// float64 path runs so that torch.autograd.gradcheck can check the
// autograd wiring.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "attention/reference.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/world.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"
#include "runtime/tensor.h"
#include "runtime/validate.h"

namespace nb = nanobind;

namespace ringattn::python {
namespace {

// ---- errors -------------------------------------------------------------

[[noreturn]] void Raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw nb::python_error();
}

// Raises the exception of s's kind (the GIL must be held).
void Check(const absl::Status& s) {
  if (s.ok()) return;
  PyObject* type = PyExc_RuntimeError;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: type = PyExc_ValueError; break;
    case absl::StatusCode::kDeadlineExceeded: type = PyExc_TimeoutError; break;
    case absl::StatusCode::kUnimplemented: type = PyExc_NotImplementedError; break;
    default: break;
  }
  Raise(type, std::string(s.message()));
}

// ---- arrays -------------------------------------------------------------

using Array = nb::ndarray<>;

const char* DlpackDtypeName(const nb::dlpack::dtype& t) {
  using Code = nb::dlpack::dtype_code;
  const auto code = static_cast<Code>(t.code);
  if (code == Code::Float && t.bits == 64) return "float64";
  if (code == Code::Float && t.bits == 32) return "float32";
  if (code == Code::Float && t.bits == 16) return "float16";
  if (code == Code::Bfloat && t.bits == 16) return "bfloat16";
  if (code == Code::Int) return "an integer dtype";
  if (code == Code::Bool) return "bool";
  return "an unsupported dtype";
}

// The storage dtype of `a`, or a TypeError naming `name`.
DType DtypeOf(const Array& a, const char* name) {
  using Code = nb::dlpack::dtype_code;
  const nb::dlpack::dtype t = a.dtype();
  if (t.lanes == 1) {
    if (static_cast<Code>(t.code) == Code::Float && t.bits == 32) return DType::kFloat32;
    if (static_cast<Code>(t.code) == Code::Bfloat && t.bits == 16) return DType::kBFloat16;
    if (static_cast<Code>(t.code) == Code::Float && t.bits == 16) return DType::kFloat16;
  }
  Raise(PyExc_TypeError,
        absl::StrCat(name, " dtype: expected float32 or bfloat16 (CPU), bfloat16 or float16 "
                           "(CUDA), got ",
                     DlpackDtypeName(t)));
}

Device DeviceOf(const Array& a, const char* name) {
  if (a.device_type() == nb::device::cpu::value) return Device::kCpu;
  if (a.device_type() == nb::device::cuda::value) return Device::kCuda;
  Raise(PyExc_TypeError, absl::StrCat(name, " device: expected cpu or cuda, got DLPack device type ",
                                      a.device_type()));
}

// A view of `a` (no copy). Up to 4 dims (TensorView's limit).
TensorView View(const Array& a, const char* name) {
  if (a.ndim() > TensorView::kMaxDims) {
    Raise(PyExc_ValueError,
          absl::StrCat(name, " rank: expected at most ", TensorView::kMaxDims, ", got ", a.ndim()));
  }
  TensorView t;
  t.data = const_cast<void*>(a.data());
  t.dtype = DtypeOf(a, name);
  t.device = DeviceOf(a, name);
  t.ndim = static_cast<int>(a.ndim());
  for (int d = 0; d < t.ndim; ++d) {
    t.shape[d] = static_cast<int64_t>(a.shape(d));
    t.strides[d] = a.stride(d);
  }
  return t;
}

// A contiguous float64 CPU array, or a TypeError naming `name`.
const double* F64(const Array& a, const char* name, std::vector<int64_t>* shape = nullptr) {
  using Code = nb::dlpack::dtype_code;
  if (!(static_cast<Code>(a.dtype().code) == Code::Float && a.dtype().bits == 64) ||
      a.device_type() != nb::device::cpu::value) {
    Raise(PyExc_TypeError, absl::StrCat(name, ": the reference takes float64 CPU arrays"));
  }
  int64_t expect = 1;
  for (size_t d = a.ndim(); d-- > 0;) {
    if (a.shape(d) > 1 && a.stride(d) != expect) {
      Raise(PyExc_ValueError, absl::StrCat(name, ": the reference takes contiguous arrays"));
    }
    expect *= static_cast<int64_t>(a.shape(d));
  }
  if (shape != nullptr) {
    shape->clear();
    for (size_t d = 0; d < a.ndim(); ++d) shape->push_back(static_cast<int64_t>(a.shape(d)));
  }
  return static_cast<const double*>(a.data());
}

// ---- World ----------------------------------------------------------------

// The bootstrap of a World: blobs exchanged by a Python callable
// allgather(bytes, timeout_seconds) -> list[bytes] (and barrier(timeout)).
class CallableBootstrap final : public comm::Bootstrap {
 public:
  CallableBootstrap(int rank, int size, nb::callable allgather)
      : rank_(rank), size_(size), allgather_(std::move(allgather)) {}
  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Name() const override { return "torch.distributed store"; }

  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& mine,
                                                     absl::Duration timeout) override {
    nb::gil_scoped_acquire gil;
    try {
      nb::object got = allgather_(nb::bytes(mine.data(), mine.size()),
                                  absl::ToDoubleSeconds(timeout));
      std::vector<std::string> out;
      for (nb::handle blob : got) {
        nb::bytes b = nb::cast<nb::bytes>(blob);
        out.emplace_back(b.c_str(), b.size());
      }
      if (static_cast<int>(out.size()) != size_) {
        return absl::InternalError(absl::StrCat("bootstrap: ", out.size(), " blobs for ", size_,
                                                " ranks"));
      }
      return out;
    } catch (nb::python_error& e) {
      const bool timed_out = e.matches(PyExc_TimeoutError);
      const std::string what = e.what();
      return timed_out ? absl::DeadlineExceededError(what) : absl::InternalError(what);
    }
  }
  absl::Status Barrier(absl::Duration timeout) override {
    return AllGather("", timeout).status();
  }

 private:
  int rank_, size_;
  nb::callable allgather_;
};

class World {
 public:
  // backend "ucx" (host memory) or "nccl" (device memory, GPU `device`).
  World(const std::string& backend, int rank, int size, nb::callable allgather,
        double timeout_seconds, int device) {
    if (rank < 0 || size < 1 || rank >= size) {
      Raise(PyExc_ValueError, absl::StrCat("rank ", rank, " of ", size, ": not a rank of the group"));
    }
    CallableBootstrap bootstrap(rank, size, std::move(allgather));
    comm::WorldOptions o;
    o.backend = backend;
    o.ranks = size;
    o.bootstrap = comm::BootstrapKind::kExternal;
    o.external_bootstrap = &bootstrap;
    o.timeout = absl::Seconds(timeout_seconds);
    o.device = device;
    absl::StatusOr<std::unique_ptr<comm::World>> made;
    {
      nb::gil_scoped_release release;
      made = comm::World::Create(o);
    }
    Check(made.status());
    world_ = *std::move(made);
  }
  ~World() {
    nb::gil_scoped_release release;  // the closing barrier waits for peers
    world_.reset();
  }
  comm::Communicator* comm() const { return world_->comms()[0]; }
  int rank() const { return comm()->Rank(); }
  int size() const { return world_->size(); }
  int device() const { return world_->device(); }
  std::string Describe() const { return world_->Describe(); }

 private:
  std::unique_ptr<comm::World> world_;
};

// The single-device case: a world of one rank in this process, made once.
comm::Communicator* SelfComm() {
  static comm::World* world = [] {
    comm::WorldOptions o;
    o.backend = "local";
    o.ranks = 1;
    absl::StatusOr<std::unique_ptr<comm::World>> made = comm::World::Create(o);
    Check(made.status());
    return made->release();
  }();
  return world->comms()[0];
}

// ---- Attention ------------------------------------------------------------

// A block mask from Python: its bits (one byte per block pair, nonzero =
// on), shape [nQ, nK] or [H, nQ, nK], and block size. Empty: none.
struct BlockBits {
  std::vector<uint8_t> bits;
  std::vector<int64_t> shape;
  int64_t size = 0;

  static BlockBits Of(const std::optional<nb::bytes>& data, const std::vector<int64_t>& shape,
                      int64_t size) {
    BlockBits b;
    if (!data.has_value()) return b;
    if (shape.size() != 2 && shape.size() != 3) {
      Raise(PyExc_ValueError, absl::StrCat("block_mask rank: expected 2 ([nQ, nK]) or 3 "
                                           "([H, nQ, nK]), got ", shape.size()));
    }
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (n != static_cast<int64_t>(data->size())) {
      Raise(PyExc_ValueError, absl::StrCat("block_mask: ", data->size(), " bytes for ", n,
                                           " block pairs"));
    }
    const auto* p = reinterpret_cast<const uint8_t*>(data->c_str());
    b.bits.assign(p, p + n);
    b.shape = shape;
    b.size = size;
    return b;
  }
  // `m` ANDed with these blocks (a view of `bits`).
  Mask Apply(const Mask& m) const {
    if (shape.empty()) return m;
    const int64_t heads = shape.size() == 3 ? shape[0] : 1;
    return m.WithBlocks(bits.data(), heads, shape[shape.size() - 2], shape.back(), size);
  }
};

struct AttentionOptions {
  int64_t seqlen = 0;
  std::string sharding = "contiguous";
  std::string strategy = "ring";  // "local" for one device; allgather, ulysses, hybrid:UxR, auto
  int64_t stripe = 1;
  bool causal = false;
  int64_t window_left = -1, window_right = -1;
  int64_t prefix = 0;                // prefix-LM (with causal)
  int64_t sink = 0;                  // attention sinks (with a left window)
  std::vector<int64_t> cu_seqlens;   // packed documents [0, ..., S]; empty: none
  BlockBits blocks;                  // a block-sparse mask; set_block_mask
  double softcap = 0.0;
  std::optional<double> scale;
  std::string dtype = "fp32";
  std::string backend = "cpu";
  int device = 0;
  bool deterministic = false;
  double timeout_seconds = 0.0;  // 0: RINGATTN_TIMEOUT_MS, else 60 s
  int num_threads = 0;
};

class Attention {
 public:
  // `world`: a rank of it; none: one device, no communication.
  Attention(World* world, const AttentionOptions& a) : world_(world) {
    RingOptions o;
    o.seqlen = a.seqlen;
    absl::StatusOr<Sharding> sharding = ParseSharding(a.sharding);
    Check(sharding.status());
    o.sharding = *sharding;
    o.stripe = a.stripe;
    absl::StatusOr<StrategySpec> strategy = ParseStrategySpec(a.strategy);
    Check(strategy.status());
    o.strategy = strategy->strategy;
    o.ulysses = strategy->ulysses;
    if (world != nullptr) Check(CheckStrategy(*strategy, world->size()));
    o.mask = Mask::Window(a.window_left, a.window_right, a.causal);
    o.mask.prefix = a.prefix;
    o.mask.sink = a.sink;
    // Create copies the documents; `a` outlives it.
    o.mask = o.mask.WithDocuments(a.cu_seqlens.data(), static_cast<int64_t>(a.cu_seqlens.size()));
    o.mask = a.blocks.Apply(o.mask);
    o.softcap = static_cast<float>(a.softcap);
    if (a.scale.has_value()) o.scale = static_cast<float>(*a.scale);
    if (!ParseDType(a.dtype, &o.dtype)) {
      Raise(PyExc_TypeError, absl::StrCat("dtype: expected fp32, bf16 or fp16, got ", a.dtype));
    }
    absl::StatusOr<Backend> backend = ParseBackend(a.backend);
    Check(backend.status());
    o.backend = *backend;
    o.device_index = a.device;
    o.deterministic = a.deterministic;
    o.timeout = absl::Seconds(a.timeout_seconds);
    o.num_threads = a.num_threads;
    comm::Communicator* comm = world_ != nullptr ? world_->comm() : SelfComm();
    absl::StatusOr<std::unique_ptr<RingAttention>> made = RingAttention::Create(comm, o);
    Check(made.status());
    ring_ = *std::move(made);
  }

  void Forward(const Array& q, const Array& k, const Array& v, const Array& out, const Array& lse,
               uintptr_t stream) {
    const TensorView tq = View(q, "q"), tk = View(k, "k"), tv = View(v, "v"),
                     to = View(out, "out"), tl = View(lse, "lse");
    absl::Status s;
    {
      nb::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      s = ring_->ForwardOnStream(reinterpret_cast<void*>(stream), tq, tk, tv, to, tl);
    }
    Check(s);
  }

  void Backward(const Array& q, const Array& k, const Array& v, const Array& out,
                const Array& lse, const Array& dout, const Array& dq, const Array& dk,
                const Array& dv, uintptr_t stream) {
    const TensorView tq = View(q, "q"), tk = View(k, "k"), tv = View(v, "v"),
                     to = View(out, "out"), tl = View(lse, "lse"), tdo = View(dout, "dout"),
                     tdq = View(dq, "dq"), tdk = View(dk, "dk"), tdv = View(dv, "dv");
    absl::Status s;
    {
      nb::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      s = ring_->BackwardOnStream(reinterpret_cast<void*>(stream), tq, tk, tv, to, tl, tdo, tdq,
                                  tdk, tdv);
    }
    Check(s);
  }

  int64_t ShardLength() const { return ring_->ShardLength(); }
  std::string Describe() const { return ring_->BackendDescription(); }

 private:
  World* world_;  // kept alive by the Python object (keep_alive below)
  std::unique_ptr<RingAttention> ring_;
  std::mutex mu_;
};

// ---- layouts and the reference -----------------------------------------------

// The mask of a reference or layout call, its documents checked against
// seqlen (InvalidArgument naming cu_seqlens -> ValueError). Views
// `cu_seqlens`.
Mask MakeMask(bool causal, int64_t window_left, int64_t window_right, int64_t prefix,
              int64_t sink, const std::vector<int64_t>& cu_seqlens, int64_t seqlen,
              const BlockBits* blocks = nullptr) {
  Mask m = Mask::Window(window_left, window_right, causal);
  m.prefix = prefix;
  m.sink = sink;
  m = m.WithDocuments(cu_seqlens.data(), static_cast<int64_t>(cu_seqlens.size()));
  if (blocks != nullptr) m = blocks->Apply(m);
  Check(ValidateMask(m, seqlen));
  return m;
}

Layout MakeLayout(const std::string& sharding, int64_t seqlen, int world, int64_t stripe,
                  const std::vector<int64_t>& cu_seqlens) {
  absl::StatusOr<Sharding> kind = ParseSharding(sharding);
  Check(kind.status());
  if (seqlen < 0) Raise(PyExc_ValueError, absl::StrCat("seqlen: expected >= 0, got ", seqlen));
  const Mask docs = MakeMask(false, -1, -1, 0, 0, cu_seqlens, seqlen);
  absl::StatusOr<Layout> layout = Layout::Create(*kind, seqlen, world, stripe, docs);
  Check(layout.status());
  return *layout;
}

RefProblem MakeProblem(const std::vector<int64_t>& q_shape, const std::vector<int64_t>& k_shape,
                       bool causal, int64_t window_left, int64_t window_right, int64_t prefix,
                       int64_t sink, const std::vector<int64_t>& cu_seqlens, double softcap,
                       std::optional<double> scale, const BlockBits& blocks) {
  if (q_shape.size() != 4 || k_shape.size() != 4) {
    Raise(PyExc_ValueError, "q, k: expected [B, S, H, D] and [B, S, Hkv, D]");
  }
  RefProblem p;
  p.batch = q_shape[0];
  p.seqlen_q = q_shape[1];
  p.num_heads = q_shape[2];
  p.head_dim = q_shape[3];
  p.seqlen_k = k_shape[1];
  p.num_heads_k = k_shape[2];
  if (k_shape[0] != p.batch || k_shape[3] != p.head_dim || p.num_heads_k < 1 ||
      p.num_heads % p.num_heads_k != 0) {
    Raise(PyExc_ValueError, absl::StrCat("k: shape does not fit q (B, D equal; H % Hkv == 0)"));
  }
  p.scale = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  p.softcap = softcap;
  p.mask = MakeMask(causal, window_left, window_right, prefix, sink, cu_seqlens, p.seqlen_q,
                    &blocks);
  Check(ValidateMaskHeads(p.mask, p.num_heads));
  return p;
}

void CopyOut(const std::vector<double>& from, const Array& to, const char* name) {
  F64(to, name);
  if (static_cast<size_t>(to.size()) != from.size()) {
    Raise(PyExc_ValueError, absl::StrCat(name, ": expected ", from.size(), " elements, got ",
                                         to.size()));
  }
  std::memcpy(const_cast<void*>(to.data()), from.data(), from.size() * sizeof(double));
}

void ReferenceForward(const Array& q, const Array& k, const Array& v, const Array& out,
                      const Array& lse, bool causal, int64_t window_left, int64_t window_right,
                      int64_t prefix, int64_t sink, const std::vector<int64_t>& cu_seqlens,
                      double softcap, std::optional<double> scale,
                      const std::optional<nb::bytes>& block_bits,
                      const std::vector<int64_t>& block_shape, int64_t block_size) {
  std::vector<int64_t> qs, ks;
  const double* qp = F64(q, "q", &qs);
  const double* kp = F64(k, "k", &ks);
  const double* vp = F64(v, "v");
  const BlockBits blocks = BlockBits::Of(block_bits, block_shape, block_size);
  const RefProblem p = MakeProblem(qs, ks, causal, window_left, window_right, prefix, sink,
                                   cu_seqlens, softcap, scale, blocks);
  std::vector<double> o, l;
  {
    nb::gil_scoped_release release;
    ReferenceForwardF64(p, qp, kp, vp, &o, &l);
  }
  CopyOut(o, out, "out");
  CopyOut(l, lse, "lse");
}

void ReferenceBackward(const Array& q, const Array& k, const Array& v, const Array& dout,
                       const Array& dq, const Array& dk, const Array& dv, bool causal,
                       int64_t window_left, int64_t window_right, int64_t prefix,
                       int64_t sink, const std::vector<int64_t>& cu_seqlens, double softcap,
                       std::optional<double> scale, const std::optional<nb::bytes>& block_bits,
                       const std::vector<int64_t>& block_shape, int64_t block_size) {
  std::vector<int64_t> qs, ks;
  const double* qp = F64(q, "q", &qs);
  const double* kp = F64(k, "k", &ks);
  const double* vp = F64(v, "v");
  const double* dop = F64(dout, "dout");
  const BlockBits blocks = BlockBits::Of(block_bits, block_shape, block_size);
  const RefProblem p = MakeProblem(qs, ks, causal, window_left, window_right, prefix, sink,
                                   cu_seqlens, softcap, scale, blocks);
  std::vector<double> gq, gk, gv;
  {
    nb::gil_scoped_release release;
    ReferenceBackwardF64(p, qp, kp, vp, dop, &gq, &gk, &gv);
  }
  CopyOut(gq, dq, "dq");
  CopyOut(gk, dk, "dk");
  CopyOut(gv, dv, "dv");
}

}  // namespace
}  // namespace ringattn::python

NB_MODULE(_C, m) {
  using namespace ringattn::python;
  m.doc() = "ringattn's C++ engine (see the ringattn package for the Python API)";
  // The package caches engines and worlds for the life of the process and
  // does not tear them down at exit (a World's teardown waits for its
  // peers, which may be gone): nanobind would report them as leaks.
  nb::set_leak_warnings(false);

  nb::class_<World>(m, "World")
      .def(nb::init<const std::string&, int, int, nb::callable, double, int>(), nb::arg("backend"),
           nb::arg("rank"), nb::arg("size"), nb::arg("allgather"), nb::arg("timeout"),
           nb::arg("device") = -1)
      .def_prop_ro("rank", &World::rank)
      .def_prop_ro("size", &World::size)
      .def_prop_ro("device", &World::device)
      .def("describe", &World::Describe);

  nb::class_<AttentionOptions>(m, "AttentionOptions")
      .def(nb::init<>())
      .def_rw("seqlen", &AttentionOptions::seqlen)
      .def_rw("sharding", &AttentionOptions::sharding)
      .def_rw("strategy", &AttentionOptions::strategy)
      .def_rw("stripe", &AttentionOptions::stripe)
      .def_rw("causal", &AttentionOptions::causal)
      .def_rw("window_left", &AttentionOptions::window_left)
      .def_rw("window_right", &AttentionOptions::window_right)
      .def_rw("prefix", &AttentionOptions::prefix)
      .def_rw("sink", &AttentionOptions::sink)
      .def_rw("cu_seqlens", &AttentionOptions::cu_seqlens)
      .def(
          "set_block_mask",
          [](AttentionOptions& o, const nb::bytes& bits, const std::vector<int64_t>& shape,
             int64_t size) { o.blocks = BlockBits::Of(bits, shape, size); },
          nb::arg("bits"), nb::arg("shape"), nb::arg("block_size"),
          "a block mask: one byte per block pair (nonzero = on) of shape [nQ, nK] or "
          "[H, nQ, nK] over blocks of block_size tokens")
      .def_rw("softcap", &AttentionOptions::softcap)
      .def_rw("scale", &AttentionOptions::scale, nb::arg().none())
      .def_rw("dtype", &AttentionOptions::dtype)
      .def_rw("backend", &AttentionOptions::backend)
      .def_rw("device", &AttentionOptions::device)
      .def_rw("deterministic", &AttentionOptions::deterministic)
      .def_rw("timeout", &AttentionOptions::timeout_seconds)
      .def_rw("num_threads", &AttentionOptions::num_threads);

  nb::class_<Attention>(m, "Attention")
      .def(nb::init<World*, const AttentionOptions&>(), nb::arg("world").none(),
           nb::arg("options"), nb::keep_alive<1, 2>())
      .def("forward", &Attention::Forward, nb::arg("q"), nb::arg("k"), nb::arg("v"),
           nb::arg("out"), nb::arg("lse"), nb::arg("stream") = 0)
      .def("backward", &Attention::Backward, nb::arg("q"), nb::arg("k"), nb::arg("v"),
           nb::arg("out"), nb::arg("lse"), nb::arg("dout"), nb::arg("dq"), nb::arg("dk"),
           nb::arg("dv"), nb::arg("stream") = 0)
      .def_prop_ro("shard_length", &Attention::ShardLength)
      .def("describe", &Attention::Describe);

  m.def(
      "positions",
      [](const std::string& sharding, int64_t seqlen, int world, int rank, int64_t stripe,
         const std::vector<int64_t>& cu_seqlens) {
        if (rank < 0 || rank >= world) {
          Raise(PyExc_ValueError, absl::StrCat("rank: expected 0..", world - 1, ", got ", rank));
        }
        return MakeLayout(sharding, seqlen, world, stripe, cu_seqlens).Positions(rank);
      },
      nb::arg("sharding"), nb::arg("seqlen"), nb::arg("world"), nb::arg("rank"),
      nb::arg("stripe") = 1, nb::arg("cu_seqlens") = std::vector<int64_t>(),
      "the global positions of `rank`'s tokens, in local order");
  m.def(
      "shard_lengths",
      [](const std::string& sharding, int64_t seqlen, int world, int64_t stripe,
         const std::vector<int64_t>& cu_seqlens) {
        const ringattn::Layout layout = MakeLayout(sharding, seqlen, world, stripe, cu_seqlens);
        std::vector<int64_t> out;
        for (int r = 0; r < world; ++r) out.push_back(layout.ShardLength(r));
        return out;
      },
      nb::arg("sharding"), nb::arg("seqlen"), nb::arg("world"), nb::arg("stripe") = 1,
      nb::arg("cu_seqlens") = std::vector<int64_t>());
  m.def("reference_forward", &ReferenceForward, nb::arg("q"), nb::arg("k"), nb::arg("v"),
        nb::arg("out"), nb::arg("lse"), nb::arg("causal"), nb::arg("window_left"),
        nb::arg("window_right"), nb::arg("prefix"), nb::arg("sink"), nb::arg("cu_seqlens"),
        nb::arg("softcap"), nb::arg("scale").none(), nb::arg("block_bits").none() = nb::none(),
        nb::arg("block_shape") = std::vector<int64_t>(), nb::arg("block_size") = 0);
  m.def("reference_backward", &ReferenceBackward, nb::arg("q"), nb::arg("k"), nb::arg("v"),
        nb::arg("dout"), nb::arg("dq"), nb::arg("dk"), nb::arg("dv"), nb::arg("causal"),
        nb::arg("window_left"), nb::arg("window_right"), nb::arg("prefix"), nb::arg("sink"),
        nb::arg("cu_seqlens"), nb::arg("softcap"), nb::arg("scale").none(),
        nb::arg("block_bits").none() = nb::none(), nb::arg("block_shape") = std::vector<int64_t>(),
        nb::arg("block_size") = 0);
  m.def("backend_built", [](const std::string& name) {
    if (name == "cuda") return ringattn::BackendBuilt(ringattn::Backend::kCuda);
    return ringattn::comm::BackendBuilt(name);
  });
}
