// AttnParams: the one plain struct every attention kernel reads (CPU and
// CUDA, forward and backward), passed by value. Strides are in elements and
// 64-bit; the layout is bshd with arbitrary strides.
//
//   q            [B, S_q, H,   D]    dtype
//   k, v         [B, S_k, Hkv, D]    dtype
//   out          [B, S_q, H,   D]    out_dtype   (forward output)
//   lse          [B, H, S_q]         fp32        (forward output, natural log)
//   dout         [B, S_q, H,   D]    dtype       (backward input)
//   dsum         [B, H, S_q]         fp32        (backward input: rowsum(dO*O))
//   dq_accum     [B, S_q, H,   D]    fp32 contiguous, ADDED to
//   dk/dv_accum  [B, S_k, Hkv, D]    fp32 contiguous, ADDED to
//
// In backward, `lse` is the GLOBAL (merged) lse of the query rows, so that a
// ring can run the backward block pair by block pair.
#pragma once

#include <cmath>
#include <cstdint>

#include "attention/dtype.h"
#include "attention/mask.h"

namespace ringattn {

struct TensorStrides {
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t head = 0;
  // Contiguous bshd strides for [B, S, H, D].
  static TensorStrides Contiguous(int64_t seq, int64_t heads, int64_t dim) {
    return {seq * heads * dim, heads * dim, dim};
  }
};

struct AttnParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  TensorStrides q_stride, k_stride, v_stride;
  DType dtype = DType::kFloat32;

  void* out = nullptr;
  TensorStrides out_stride;
  DType out_dtype = DType::kFloat32;
  float* lse = nullptr;  // [B, H, S_q]: element (b, h, i) at b*lse_batch_stride + h*lse_head_stride + i
  int64_t lse_batch_stride = 0;
  int64_t lse_head_stride = 0;

  // Backward only.
  const void* dout = nullptr;
  TensorStrides dout_stride;
  const float* dsum = nullptr;  // same indexing as lse
  float* dq_accum = nullptr;
  float* dk_accum = nullptr;
  float* dv_accum = nullptr;

  int64_t batch = 0;
  int64_t seqlen_q = 0;
  int64_t seqlen_k = 0;
  int64_t num_heads = 0;
  int64_t num_heads_k = 0;
  int64_t head_dim = 0;

  float scale = 0.0f;    // softmax scale; callers default it to 1/sqrt(D)
  float softcap = 0.0f;  // 0 disables
  Mask mask;
  PositionMap q_pos;  // global positions of the query rows
  PositionMap k_pos;  // global positions of the key rows

  int64_t GroupSize() const { return num_heads / num_heads_k; }
  // Whether the mask has a sink and some key of this block lies below it
  // (key positions increase): the kernels then run its sink part too.
  bool HasSinkKeys() const { return mask.HasSink() && seqlen_k > 0 && k_pos.Global(0) < mask.sink; }
};

inline float DefaultScale(int64_t head_dim) {
  return 1.0f / std::sqrt(static_cast<float>(head_dim));
}

}  // namespace ringattn
