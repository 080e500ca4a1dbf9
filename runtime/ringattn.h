// The public C++ API of ringattn. Training code creates one RingAttention per
// rank from a communicator and options, then calls Forward and Backward on
// its own shard:
//
//   q, out, dout, dq   [B, S_r, H,   D]   (any strides, D contiguous)
//   k, v, dk, dv       [B, S_r, Hkv, D]
//   lse                [B, H, S_r]        fp32 contiguous, natural log
//
// where S_r = layout.ShardLength(rank) for the global length `seqlen` and
// the chosen sharding. Every argument is validated before any allocation or
// communication; errors name the argument with expected and actual values.
// Results are bitwise reproducible for a given world size, layout and
// thread count (on the CUDA backend: the backward with `deterministic`).
//
// Backends: kCpu (host tensors, fp32 or bf16, any head dim up to 512) and
// kCuda (device tensors on GPU `device_index`, bf16 or fp16, head dim 64,
// 128 or 256, q and dout with 16-byte aligned rows; the communicator must move
// device memory, e.g. comm/local/cuda_local.h). Tensors must live on the
// backend's device (TensorView::device); a backend not built answers
// Unimplemented from Create.
//
// How the ranks share the work is a strategy (RingOptions::strategy): the
// ring, which rotates the key/value blocks past every rank; an all-gather of
// keys and values; Ulysses (all-to-all to head shards); a hybrid of Ulysses
// and the ring; or `auto`, which picks from measured costs. All take the
// same tensors and give the same results within the tolerance rule.
//
// Example (one rank of a W-rank ring):
//   RingOptions opt;  opt.seqlen = 65536;  opt.sharding = Sharding::kZigzag;
//   opt.mask = Mask::Causal();
//   ASSIGN_OR_RETURN(auto ring, RingAttention::Create(comm, opt));
//   RETURN_IF_ERROR(ring->Forward(q, k, v, out, lse));
//   RETURN_IF_ERROR(ring->Backward(q, k, v, out, lse, dout, dq, dk, dv));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attention/mask.h"
#include "comm/communicator.h"
#include "runtime/layout.h"
#include "runtime/tensor.h"

namespace ringattn {

// Which kernels run the ring, and where its tensors live.
enum class Backend : uint8_t { kCpu = 0, kCuda = 1 };
const char* BackendName(Backend b);  // "cpu", "cuda"
absl::StatusOr<Backend> ParseBackend(const std::string& name);
// Whether this build has the backend's kernels (a device may still be
// missing: Create says so).
bool BackendBuilt(Backend b);

// How the ranks share one attention call (runtime/strategy.h; the cost of
// each, and how `auto` chooses, in docs/PLANNER.md).
//   kRing       each rank keeps its queries; the key/value blocks rotate
//               around the ring, overlapped with the compute, and stop early
//               when no later step has work for anyone (sliding windows)
//   kLocal      one device, no communication (a world of one rank): the
//               kernels run on the caller's tensors in place, with no
//               packing or copy back -- single-device attention (the Python
//               ringattn.attention)
//   kAllGather  each rank gathers the key/value rows some local query can
//               see (all of them without a window or documents) and attends
//               once; the backward reduce-scatters dK/dV in fp32
//   kUlysses    all-to-all from sequence shards to head shards (any head
//               count >= W, uneven allowed; GQA with Hkv < W replicates KV
//               heads only across the ranks that share them), full-sequence
//               attention, all-to-all back
//   kHybrid     Ulysses over groups of `ulysses` consecutive ranks, the ring
//               over the W / ulysses groups ("hybrid:UxR")
//   kAuto       the planner (runtime/planner.h) picks one of the four at the
//               first call, from the call's shapes, the mask and measured
//               costs, the same on every rank
enum class Strategy : uint8_t {
  kRing = 0,
  kLocal = 1,
  kAllGather = 2,
  kUlysses = 3,
  kHybrid = 4,
  kAuto = 5,
};
const char* StrategyName(Strategy s);  // "ring", "local", "allgather", "ulysses", "hybrid", "auto"
// A plain name; "hybrid" needs its shape: use ParseStrategySpec.
absl::StatusOr<Strategy> ParseStrategy(const std::string& name);
// "ring", "allgather", "ulysses", "auto", "local" or "hybrid:UxR" (U ranks
// per Ulysses group, R groups in the ring): the strategy and U (0 unless
// hybrid). Whether U x R is the world size is checked at Create.
struct StrategySpec {
  Strategy strategy = Strategy::kRing;
  int ulysses = 0;
  int ring = 0;
};
absl::StatusOr<StrategySpec> ParseStrategySpec(const std::string& text);
// Whether `spec` runs on `world` ranks with `heads` query heads (0: not
// known yet): hybrid's U x R must be the world size, and every rank of a
// Ulysses group (U = W for ulysses) needs a query head. InvalidArgument
// naming `strategy` or `q heads` otherwise -- the one check the tools,
// Python and the C ABI make before anything runs.
absl::Status CheckStrategy(const StrategySpec& spec, int world, int64_t heads = 0);
// "hybrid:2x4", or the plain name.
std::string StrategySpecName(Strategy s, int ulysses, int world);

struct RingOptions {
  int64_t seqlen = 0;  // GLOBAL sequence length (sum of all shards)
  Sharding sharding = Sharding::kContiguous;
  int64_t stripe = 1;  // striped sharding: tokens per stripe
  Mask mask;                   // by global position (attention/mask.h)
  Strategy strategy = Strategy::kRing;
  int ulysses = 0;             // kHybrid: ranks per Ulysses group (U); R = W / U
  // kAuto: the planner's costs, instead of calibrating at the first call
  // (all three > 0 to use them): a rank's attention TFLOP/s (forward; the
  // backward is taken at 0.8 of it), the link's GB/s each way, latency.
  double plan_tflops = 0, plan_link_gbps = 0, plan_latency_us = 0;
  float softcap = 0.0f;        // 0: off
  std::optional<float> scale;  // default 1/sqrt(D)
  DType dtype = DType::kFloat32;
  // Waits on peers; zero means comm::DefaultTimeout() (RINGATTN_TIMEOUT_MS).
  absl::Duration timeout = absl::ZeroDuration();
  // CPU threads of this rank; 0 means hardware threads / world size (>= 1).
  int num_threads = 0;
  static constexpr int kMaxThreads = 1024;  // num_threads' bound (a pool of 100000 crashed)
  Backend backend = Backend::kCpu;
  int device_index = 0;        // kCuda: the GPU of this rank
  // kCuda: bitwise reproducible backward (dQ without atomics; slower). The
  // CPU backend is always deterministic.
  bool deterministic = false;
};

// Figures of the last Forward or Backward call on this rank.
struct RingStats {
  double wall_seconds = 0;     // whole call, validation excluded
  double compute_seconds = 0;  // attention kernels and merges (on CUDA: GPU time, from events)
  // Host time blocked on peers. On CUDA with a stream-ordered communicator
  // the host waits until each transfer is queued on the device, which may
  // be after the kernels queued before it (the previous step's), so this
  // includes any part of them that outlasts the current step's enqueueing.
  double wait_seconds = 0;
  // Payload bytes this rank posted (on the synchronous calls, sent once the
  // call returned OK; on a caller's stream, the last may still be moving).
  int64_t bytes_sent = 0;
  int steps = 0;               // ring steps run (rotations + 1)
  int steps_with_work = 0;     // steps where this rank computed
  int64_t workspace_bytes = 0;  // ring buffers held by this rank (KV, accumulators)
};

class RingAttention {
 public:
  // `comm` must outlive the RingAttention. Fails on bad options (naming the
  // option) or a layout that does not fit the communicator.
  static absl::StatusOr<std::unique_ptr<RingAttention>> Create(comm::Communicator* comm,
                                                               const RingOptions& options);
  virtual ~RingAttention() = default;

  virtual absl::Status Forward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& out, const TensorView& lse) = 0;
  virtual absl::Status Backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const TensorView& lse,
                                const TensorView& dout, const TensorView& dq,
                                const TensorView& dk, const TensorView& dv) = 0;

  // The same on a caller's CUDA stream (a cudaStream_t; kCuda only, else
  // InvalidArgument naming `stream`), for training code: the ring's kernels
  // run after the work already queued on `stream`, and work the caller
  // queues on it after the call sees the results. The call returns without
  // waiting for the GPU: with a stream-ordered communicator (cuda-local,
  // nccl) the host waits only until each transfer is matched, its headers
  // checked and its copy queued, and the rank's stream waits for the bytes;
  // so when it returns, kernels and transfers may still be running. The
  // ring keeps those transfers' requests and waits for them at the start of
  // its next call (or when destroyed): a transfer or kernel that fails after
  // the return surfaces there or at the caller's own synchronization. A
  // call that fails makes `stream` wait for the work it had enqueued.
  // Forward and Backward above are these with a
  // null stream: the legacy default stream (PyTorch's default stream), and
  // the call waits for the rank's stream (polling, within the timeout) and
  // returns with the results in place. The timeout also covers the
  // caller's work queued before the call, which the first transfer waits
  // for. Neither is capturable in a CUDA graph: the transfers' header
  // checks and progress run on the host.
  virtual absl::Status ForwardOnStream(void* stream, const TensorView& q, const TensorView& k,
                                       const TensorView& v, const TensorView& out,
                                       const TensorView& lse) = 0;
  virtual absl::Status BackwardOnStream(void* stream, const TensorView& q, const TensorView& k,
                                        const TensorView& v, const TensorView& out,
                                        const TensorView& lse, const TensorView& dout,
                                        const TensorView& dq, const TensorView& dk,
                                        const TensorView& dv) = 0;

  // After a call on a caller's stream, the first LastStats waits for that
  // call's kernels to learn compute_seconds (GPU time, from events).
  virtual const RingStats& LastStats() const = 0;
  virtual const Layout& layout() const = 0;
  virtual int64_t ShardLength() const = 0;
  // The strategy running ("ring", "hybrid:2x4", ...; with kAuto, "auto"
  // until the first call has chosen).
  virtual std::string StrategyInUse() const = 0;
  // The backend of this rank in one line ("cuda: device 0, NVIDIA H100 ...").
  virtual std::string BackendDescription() const = 0;
};

}  // namespace ringattn
