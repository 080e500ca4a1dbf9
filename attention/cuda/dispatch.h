// The one place where the run-time flags of an attention call become the
// kernels' template arguments: input dtype (kT), head dim (kD, through
// WithHeadDim in traits.h), softcap on or off (kCap) and, for the backward,
// the deterministic dQ pass (kDeterministic). Used by the host dispatch
// (kernels.cc), the bench (bench/cuda_attn_bench.cu) and the emulator
// (tests/attention/cuda_emu_check.cc), so that all three run the same
// instantiations; instantiations/ holds one file per direction x head dim x
// dtype, each with every kCap (and kDeterministic) variant.
//
// Impossible combinations are folded here, before anything is
// instantiated: a dtype other than bf16 takes the fp16 kernels (CheckParams
// has refused fp32 inputs before any launch), and a head dim without
// kernels goes to `otherwise`.
#pragma once

#include "attention/cuda/traits.h"
#include "attention/dtype.h"
#include "attention/params.h"

namespace ringattn::cuda {
namespace dispatch_internal {

template <class F>
auto WithFlag(bool on, F&& f) {
  return on ? f.template operator()<true>() : f.template operator()<false>();
}

template <class F>
auto WithInputType(DType t, F&& f) {
  return t == DType::kBFloat16 ? f.template operator()<DType::kBFloat16>()
                               : f.template operator()<DType::kFloat16>();
}

}  // namespace dispatch_internal

// Returns f.template operator()<kT, kD, kCap>() for p's input dtype, head
// dim and softcap (> 0), or otherwise() for a head dim without kernels.
template <class F, class G>
auto DispatchForward(const AttnParams& p, F&& f, G&& otherwise) {
  return WithHeadDim(
      p.head_dim,
      [&]<int kD>() {
        return dispatch_internal::WithInputType(p.dtype, [&]<DType kT>() {
          return dispatch_internal::WithFlag(
              p.softcap > 0.0f, [&]<bool kCap>() { return f.template operator()<kT, kD, kCap>(); });
        });
      },
      otherwise);
}

// The same for the backward: f.template operator()<kT, kD, kCap,
// kDeterministic>(), or otherwise().
template <class F, class G>
auto DispatchBackward(const AttnParams& p, bool deterministic, F&& f, G&& otherwise) {
  return DispatchForward(
      p,
      [&]<DType kT, int kD, bool kCap>() {
        return dispatch_internal::WithFlag(deterministic, [&]<bool kDeterministic>() {
          return f.template operator()<kT, kD, kCap, kDeterministic>();
        });
      },
      otherwise);
}

}  // namespace ringattn::cuda
