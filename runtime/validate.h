// Argument validation of the public API, run once per call before any
// allocation or communication: options at Create, tensors at every
// Forward / Backward. Every error names the argument with the expected and
// the actual value (docs/ARCHITECTURE.md, Contracts).
#pragma once

#include <cstdint>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/dtype.h"
#include "runtime/backend.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"
#include "runtime/tensor.h"

namespace ringattn {

// The sizes of one rank's call: q [B, S, H, D], k and v [B, S, Hk, D],
// where S is this rank's shard length.
struct ShardDims {
  int64_t B = 0, S = 0, H = 0, Hk = 0, D = 0;
};

// The options alone (Create): ranges, finite scale and softcap, the dtype
// the backend stores, the mask's windows.
absl::Status ValidateOptions(const RingOptions& o);

// The options every rank of a world must share, as a fixed-size message:
// each rank sends its own to the next one at its first call and compares
// what it receives (any disagreement shows between some two neighbours).
struct OptionsDigest {
  uint32_t magic = 0x4F505453;  // "OPTS"
  int32_t sharding = 0, strategy = 0, ulysses = 0, dtype = 0, backend = 0;
  int32_t causal = 0, deterministic = 0, has_scale = 0;
  int64_t seqlen = 0, stripe = 0, window_left = 0, window_right = 0, prefix = 0, sink = 0,
          num_docs = 0;
  uint32_t docs_crc = 0;  // CRC-32C of cu_seqlens
  int64_t block_size = 0, block_heads = 0;  // 0: no block mask
  uint32_t blocks_crc = 0;                  // CRC-32C of the block mask's bits (0/1)
  float softcap = 0, scale = 0;
};
// The mask for a sequence of `seqlen` tokens: prefix and sink in range and
// useful;
// cu_seqlens (when given) starts at 0, never decreases, ends at seqlen;
// a block mask (when given) has a positive block size and ceil(seqlen /
// block_size) blocks per side.
absl::Status ValidateMask(const Mask& m, int64_t seqlen);
// A call's query heads against a per-head block mask's (1 or H).
absl::Status ValidateMaskHeads(const Mask& m, int64_t heads);
OptionsDigest DigestOf(const RingOptions& o);
// InvalidArgument naming each option that differs, with both ranks' values.
absl::Status CompareDigests(const OptionsDigest& mine, int my_rank, const OptionsDigest& theirs,
                            int their_rank);

// `t` has `shape`, `dtype`, the backend's device, data when not empty, an
// innermost stride of 1 and no negative stride.
absl::Status CheckView(const TensorView& t, const char* name, DType dtype,
                       const KernelBackend& backend, std::initializer_list<int64_t> shape);

// The tensors every call takes (q, k, v, out, lse) for `rank` of `layout`:
// their sizes (64-bit products included), shapes, dtypes, devices, strides,
// and what the backend's kernels need of q.
absl::StatusOr<ShardDims> ValidateForwardArgs(const Layout& layout, int rank, DType dtype,
                                              const KernelBackend& backend, const TensorView& q,
                                              const TensorView& k, const TensorView& v,
                                              const TensorView& out, const TensorView& lse);

// The backward's extra tensors (dout, dq, dk, dv) for sizes `d`.
absl::Status ValidateBackwardArgs(const ShardDims& d, DType dtype, const KernelBackend& backend,
                                  const TensorView& dout, const TensorView& dq,
                                  const TensorView& dk, const TensorView& dv);

}  // namespace ringattn
