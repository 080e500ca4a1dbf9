// The C ABI (include/ringattn/ringattn_c.h) over the C++ API: handles own
// the C++ objects, DLTensors become TensorViews, Status becomes its code
// plus a thread-local message. No exception or C++ type crosses.
#include "ringattn/ringattn_c.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "comm/world.h"
#include "ringattn/version.h"
#include "runtime/ringattn.h"

struct ringattn_world {
  std::unique_ptr<ringattn::comm::World> world;
};

struct ringattn_ring {
  // The mask's arrays, copied (RingAttention::Create copies them too; the
  // options keep pointing here until then).
  std::vector<int64_t> cu_seqlens;
  std::vector<uint8_t> blocks;
  std::unique_ptr<ringattn::comm::World> own_world;  // single-device attention
  std::unique_ptr<ringattn::RingAttention> ring;
  int rank = 0;
};

namespace ringattn {
namespace {

thread_local std::string last_error;

ringattn_status Fail(const absl::Status& s) {
  if (s.ok()) return RINGATTN_OK;
  last_error = std::string(s.message());
  return static_cast<ringattn_status>(s.code());
}

// The ABI's edge: no exception leaves it (an allocation that fails, say).
template <class F>
ringattn_status Guard(F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Fail(absl::ResourceExhaustedError("ringattn: out of host memory"));
  } catch (const std::exception& e) {
    return Fail(absl::InternalError(absl::StrCat("ringattn: ", e.what())));
  } catch (...) {
    return Fail(absl::InternalError("ringattn: unknown exception"));
  }
}

ringattn_status Null(const char* what) {
  return Fail(absl::InvalidArgumentError(absl::StrCat(what, ": null pointer")));
}

absl::StatusOr<DType> FromDLDataType(DLDataType t, const char* what) {
  if (t.lanes == 1 && t.code == kDLFloat && t.bits == 32) return DType::kFloat32;
  if (t.lanes == 1 && t.code == kDLBfloat && t.bits == 16) return DType::kBFloat16;
  if (t.lanes == 1 && t.code == kDLFloat && t.bits == 16) return DType::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat(what, " dtype: expected float32, bfloat16 or float16 (DLDataType code ",
                   static_cast<int>(kDLFloat), "/32, ", static_cast<int>(kDLBfloat), "/16 or ",
                   static_cast<int>(kDLFloat), "/16, one lane), got code ", t.code, " bits ",
                   t.bits, " lanes ", t.lanes));
}

// A DLTensor as a TensorView; the C++ API then checks shapes, strides,
// dtypes and devices against each other and the options.
absl::StatusOr<TensorView> View(const DLTensor* t, const char* what) {
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": null pointer"));
  TensorView v;
  if (t->ndim < 1 || t->ndim > TensorView::kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ndim: expected 1 to ", TensorView::kMaxDims, ", got ", t->ndim));
  }
  if (t->shape == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ".shape: null"));
  ASSIGN_OR_RETURN(v.dtype, FromDLDataType(t->dtype, what));
  switch (t->device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      v.device = Device::kCpu;
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      v.device = Device::kCuda;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          what, " device: expected CPU or CUDA (DLDeviceType 1, 2, 3 or 13), got ",
          static_cast<int>(t->device.device_type)));
  }
  if (t->byte_offset % DTypeSize(v.dtype) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " byte_offset: expected a multiple of ",
                                                   DTypeSize(v.dtype), ", got ", t->byte_offset));
  }
  v.data = t->data == nullptr ? nullptr : static_cast<char*>(t->data) + t->byte_offset;
  v.ndim = t->ndim;
  int64_t compact = 1;
  for (int d = t->ndim - 1; d >= 0; --d) {
    v.shape[d] = t->shape[d];
    v.strides[d] = t->strides != nullptr ? t->strides[d] : compact;
    compact *= t->shape[d];
  }
  return v;
}

// N DLTensors as TensorViews, in order; the first bad one names itself.
template <size_t N>
absl::StatusOr<std::array<TensorView, N>> Views(const std::array<const DLTensor*, N>& tensors,
                                               const std::array<const char*, N>& names) {
  std::array<TensorView, N> views;
  for (size_t i = 0; i < N; ++i) {
    ASSIGN_OR_RETURN(views[i], View(tensors[i], names[i]));
  }
  return views;
}

absl::StatusOr<RingOptions> ToOptions(const ringattn_options* o, ringattn_ring* h, int world) {
  if (o == nullptr) return absl::InvalidArgumentError("options: null pointer");
  if (o->struct_size < sizeof(ringattn_options)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.struct_size: expected ", sizeof(ringattn_options),
        " (call ringattn_options_init first), got ", o->struct_size));
  }
  RingOptions r;
  r.seqlen = o->seqlen;
  if (o->sharding < RINGATTN_SHARDING_CONTIGUOUS || o->sharding > RINGATTN_SHARDING_BALANCED) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.sharding: expected 0 to 3 (RINGATTN_SHARDING_*), got ", o->sharding));
  }
  r.sharding = static_cast<Sharding>(o->sharding);
  r.stripe = o->stripe;
  Mask m{o->causal != 0, o->window_left, o->window_right, o->prefix_lm};
  m.sink = o->sink;
  if (o->cu_seqlens != nullptr || o->num_cu_seqlens != 0) {
    if (o->cu_seqlens == nullptr || o->num_cu_seqlens < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options.cu_seqlens: expected an array of num_cu_seqlens = ", o->num_cu_seqlens,
          " entries, got ", o->cu_seqlens == nullptr ? "null" : "a negative count"));
    }
    h->cu_seqlens.assign(o->cu_seqlens, o->cu_seqlens + o->num_cu_seqlens);
    m = m.WithDocuments(h->cu_seqlens.data(), o->num_cu_seqlens);
  }
  if (o->block_mask != nullptr) {
    // Bounds before the copy (RingAttention::Create checks the exact shape):
    // at most one block per token on each side, at most 65536 heads.
    const int64_t n = std::max<int64_t>(o->seqlen, 1);
    if (o->block_heads < 1 || o->block_heads > 65536 || o->block_rows < 0 ||
        o->block_rows > n || o->block_cols < 0 || o->block_cols > n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options.block_mask shape: expected [1..65536, 0..S, 0..S] with S = ", o->seqlen,
          ", got [", o->block_heads, ", ", o->block_rows, ", ", o->block_cols, "]"));
    }
    h->blocks.assign(o->block_mask, o->block_mask + o->block_heads * o->block_rows * o->block_cols);
    m = m.WithBlocks(h->blocks.data(), o->block_heads, o->block_rows, o->block_cols,
                     o->block_size);
  }
  r.mask = m;
  r.softcap = o->softcap;
  if (o->scale != 0.0f) r.scale = o->scale;
  ASSIGN_OR_RETURN(r.dtype, FromDLDataType(o->dtype, "options"));
  if (o->backend != RINGATTN_BACKEND_CPU && o->backend != RINGATTN_BACKEND_CUDA) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.backend: expected 0 (CPU) or 1 (CUDA), got ", o->backend));
  }
  r.backend = static_cast<Backend>(o->backend);
  r.device_index = o->device_index;
  r.num_threads = o->num_threads;
  r.deterministic = o->deterministic != 0;
  if (o->timeout_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.timeout_ms: expected >= 0, got ", o->timeout_ms));
  }
  r.timeout = absl::Milliseconds(o->timeout_ms);
  if (o->strategy != nullptr) {
    absl::StatusOr<StrategySpec> spec = ParseStrategySpec(o->strategy);
    if (!spec.ok()) return absl::InvalidArgumentError(absl::StrCat("options.", spec.status().message()));
    if (spec->strategy == Strategy::kLocal) {
      return absl::InvalidArgumentError("options.strategy: 'local' is ringattn_attention_create's");
    }
    if (world > 0) {
      absl::Status fits = CheckStrategy(*spec, world);
      if (!fits.ok()) return absl::InvalidArgumentError(absl::StrCat("options.", fits.message()));
    }
    r.strategy = spec->strategy;
    r.ulysses = spec->ulysses;
  }
  return r;
}

}  // namespace
}  // namespace ringattn

using namespace ringattn;

extern "C" {

const char* ringattn_last_error(void) { return last_error.c_str(); }

const char* ringattn_version(void) { return RINGATTN_VERSION_STRING; }

void ringattn_options_init(ringattn_options* o) {
  if (o == nullptr) return;
  std::memset(o, 0, sizeof(*o));
  o->struct_size = sizeof(*o);
  o->sharding = RINGATTN_SHARDING_ZIGZAG;
  o->stripe = 1;
  o->window_left = o->window_right = -1;
  o->block_size = 128;
  o->dtype = DLDataType{kDLFloat, 32, 1};
  o->backend = RINGATTN_BACKEND_CPU;
}

ringattn_status ringattn_world_create(const char* backend, int size, ringattn_world** world) {
  return Guard([&]() -> ringattn_status {
    if (world == nullptr) return Null("world");
    *world = nullptr;
    if (backend == nullptr) return Null("backend");
    comm::WorldOptions o;
    o.backend = backend;
    o.ranks = size;
    absl::StatusOr<std::unique_ptr<comm::World>> made = comm::World::Create(o);
    if (!made.ok()) return Fail(made.status());
    *world = new ringattn_world{*std::move(made)};
    return RINGATTN_OK;
  });
}

int ringattn_world_size(const ringattn_world* w) { return w == nullptr ? 0 : w->world->size(); }

int ringattn_world_local_ranks(const ringattn_world* w) {
  return w == nullptr ? 0 : static_cast<int>(w->world->comms().size());
}

int ringattn_world_rank(const ringattn_world* w, int i) {
  if (w == nullptr || i < 0 || i >= static_cast<int>(w->world->comms().size())) return -1;
  return w->world->comms()[i]->Rank();
}

void ringattn_world_destroy(ringattn_world* w) { delete w; }

ringattn_status ringattn_ring_create(ringattn_world* w, int rank, const ringattn_options* options,
                                     ringattn_ring** ring) {
  return Guard([&]() -> ringattn_status {
    if (ring == nullptr) return Null("ring");
    *ring = nullptr;
    if (w == nullptr) return Null("world");
    comm::Communicator* comm = nullptr;
    for (comm::Communicator* c : w->world->comms()) {
      if (c->Rank() == rank) comm = c;
    }
    if (comm == nullptr) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("rank: expected a rank this process drives (ringattn_world_rank), got ", rank)));
    }
    auto h = std::make_unique<ringattn_ring>();
    absl::StatusOr<RingOptions> o = ToOptions(options, h.get(), comm->Size());
    if (!o.ok()) return Fail(o.status());
    absl::StatusOr<std::unique_ptr<RingAttention>> made = RingAttention::Create(comm, *o);
    if (!made.ok()) return Fail(made.status());
    h->ring = *std::move(made);
    h->rank = rank;
    *ring = h.release();
    return RINGATTN_OK;
  });
}

ringattn_status ringattn_attention_create(const ringattn_options* options, ringattn_ring** ring) {
  return Guard([&]() -> ringattn_status {
    if (ring == nullptr) return Null("ring");
    *ring = nullptr;
    auto h = std::make_unique<ringattn_ring>();
    absl::StatusOr<RingOptions> o = ToOptions(options, h.get(), /*world=*/0);
    if (!o.ok()) return Fail(o.status());
    o->strategy = Strategy::kLocal;
    o->sharding = Sharding::kContiguous;
    comm::WorldOptions wo;
    wo.backend = "local";
    absl::StatusOr<std::unique_ptr<comm::World>> world = comm::World::Create(wo);
    if (!world.ok()) return Fail(world.status());
    h->own_world = *std::move(world);
    absl::StatusOr<std::unique_ptr<RingAttention>> made =
        RingAttention::Create(h->own_world->comms()[0], *o);
    if (!made.ok()) return Fail(made.status());
    h->ring = *std::move(made);
    *ring = h.release();
    return RINGATTN_OK;
  });
}

int64_t ringattn_ring_shard_length(const ringattn_ring* ring) {
  return ring == nullptr ? 0 : ring->ring->ShardLength();
}

void ringattn_ring_positions(const ringattn_ring* ring, int64_t* positions) {
  if (ring == nullptr || positions == nullptr) return;
  const std::vector<int64_t> p = ring->ring->layout().Positions(ring->rank);
  std::memcpy(positions, p.data(), p.size() * sizeof(int64_t));
}

ringattn_status ringattn_ring_forward(ringattn_ring* ring, const DLTensor* q, const DLTensor* k,
                                      const DLTensor* v, const DLTensor* out,
                                      const DLTensor* lse) {
  return Guard([&]() -> ringattn_status {
    if (ring == nullptr) return Null("ring");
    const absl::Status s = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(const auto t, Views<5>({q, k, v, out, lse}, {"q", "k", "v", "out", "lse"}));
      return ring->ring->Forward(t[0], t[1], t[2], t[3], t[4]);
    }();
    return Fail(s);
  });
}

ringattn_status ringattn_ring_backward(ringattn_ring* ring, const DLTensor* q, const DLTensor* k,
                                       const DLTensor* v, const DLTensor* out,
                                       const DLTensor* lse, const DLTensor* dout,
                                       const DLTensor* dq, const DLTensor* dk,
                                       const DLTensor* dv) {
  return Guard([&]() -> ringattn_status {
    if (ring == nullptr) return Null("ring");
    const absl::Status s = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(const auto t,
                       Views<9>({q, k, v, out, lse, dout, dq, dk, dv},
                                {"q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv"}));
      return ring->ring->Backward(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]);
    }();
    return Fail(s);
  });
}

void ringattn_ring_destroy(ringattn_ring* ring) { delete ring; }

}  // extern "C"
