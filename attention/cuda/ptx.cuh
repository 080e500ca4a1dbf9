// PTX wrappers of the CUDA attention kernels (sm_80+ instructions, also
// used on sm_90): mma.sync m16n8k16 with fp32 accumulation, ldmatrix x4
// (plain and .trans), cp.async 16-byte copies with zero fill and their
// groups, ex2.approx, warp shuffles, fp32 pair reductions, and 16-bit pair
// packing. Everything warp- or memory-level that the kernel bodies use goes
// through this file, so a host-side emulation of these few functions can
// run the bodies.
//
// With RINGATTN_CUDA_EMULATE defined (host C++ only, never in the library),
// ptx_emu.h provides the same functions on the CPU instead; see
// tests/attention/cuda_emu_check.cc and cuda_tiles_test.cc.
#pragma once

#if defined(RINGATTN_CUDA_EMULATE)
#include "attention/cuda/ptx_emu.h"
#else

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "attention/dtype.h"

#define RA_DEVICE __device__ __forceinline__
// Out of line to keep code small (StripedPos), except in kernels that use
// setmaxnreg (the sm_90a forward: RINGATTN_CUDA_NO_CALLS), which ptxas
// ignores in a kernel that makes calls.
#if defined(RINGATTN_CUDA_NO_CALLS)
#define RA_DEVICE_NOINLINE __device__ __forceinline__
#else
#define RA_DEVICE_NOINLINE __device__ __noinline__ inline
#endif

namespace ringattn::cuda::detail {

RA_DEVICE uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 16-bit matrices; lanes 8i..8i+7 give the row addresses of
// matrix i, and r[i] receives matrix i (lane holds row lane/4, cols
// 2*(lane%4) and +1; with .trans, the transposed matrix).
RA_DEVICE void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
RA_DEVICE void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a * b for one m16n8k16 tile.
template <DType kT>
RA_DEVICE void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(kT == DType::kBFloat16 || kT == DType::kFloat16, "16-bit inputs only");
  if constexpr (kT == DType::kBFloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// 16-byte global -> shared copy; copies nothing and writes zeros when !pred.
RA_DEVICE void CpAsync16(uint32_t dst, const void* src, bool pred) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
RA_DEVICE void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most kPending committed groups are still in flight.
template <int kPending>
RA_DEVICE void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// 2^x with one special-function instruction; 2^-inf = 0.
RA_DEVICE float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

RA_DEVICE float ShflXor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }

// p[0] += a and p[1] += b in global memory, atomically per element, result
// unused: one vector reduction (red.global.add.v2.f32) on sm_90, half the
// atomic instructions of two scalar ones (the only way before sm_90).
// p must be 8-byte aligned.
RA_DEVICE void AtomicAdd2(float* p, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}

// Two floats rounded to a 16-bit pair; `lo` lands in the low half, which
// mma reads as the element of the smaller column (or k) index.
template <DType kT>
RA_DEVICE uint32_t PackPair(float lo, float hi) {
  if constexpr (kT == DType::kBFloat16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

}  // namespace ringattn::cuda::detail

#endif  // RINGATTN_CUDA_EMULATE
