// PTX wrappers of the Hopper forward kernel (fwd_sm90_kernel.cuh), sm_90a
// only: mbarriers (init, arrive, arrive with an expected byte count, wait on
// a phase parity), the TMA tensor copy (cp.async.bulk.tensor.4d into
// shared memory, completing on an mbarrier), warpgroup MMA (wgmma m64nNk16,
// fp32 accumulators, A from a shared-memory descriptor or from registers,
// B from a descriptor), the async-proxy fence, named barriers and
// setmaxnreg. Like ptx.cuh, everything the kernel body does below C++
// goes through here, and RINGATTN_CUDA_EMULATE swaps in the host emulation
// (ptx_emu.h), which decodes the same descriptors and tensor maps.
//
// Shared-memory operands use one layout: "panels" of [rows][64] 16-bit
// elements, 128 bytes a row, 1024-byte aligned, the 16-byte chunk index of
// a row XORed with row % 8 (the hardware's 128-byte swizzle, which XORs
// address bits 4-6 with bits 7-9). TMA writes it (CU_TENSOR_MAP_SWIZZLE_128B,
// 64-element boxes) and wgmma reads it through descriptors:
//   K-major (Q, K: the reduced dim contiguous): rows in groups of 8 at
//     SBO = 1024 bytes; a k16 step moves the start address by 32 bytes
//     inside the panel, panels after every 4 steps;
//   MN-major (V for P V: N = head dim contiguous, transposed B): N in
//     64-element panels at LBO = a panel's bytes, K rows in groups of 8 at
//     SBO = 1024 bytes.
#pragma once

#include <cstdint>

#include "attention/cuda/ptx.cuh"

namespace ringattn::cuda::detail {

// A wgmma shared-memory matrix descriptor with the 128-byte swizzle:
// start address, leading and stride byte offsets, all >> 4; layout type
// 1 (128B) in bits 62-63, base offset 0 (panels are 1024-byte aligned).
RA_DEVICE uint64_t SmemDesc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) |
         static_cast<uint64_t>((lbo & 0x3ffff) >> 4) << 16 |
         static_cast<uint64_t>((sbo & 0x3ffff) >> 4) << 32 | uint64_t{1} << 62;
}

}  // namespace ringattn::cuda::detail

#if !defined(RINGATTN_CUDA_EMULATE)

#include <cuda.h>  // CUtensorMap (a type only: the driver is reached at run time)

namespace ringattn::cuda::detail {

using TensorMap = CUtensorMap;

RA_DEVICE void MbarInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the async proxy (TMA).
RA_DEVICE void FenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
RA_DEVICE void MbarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives and adds `bytes` to the phase's expected transaction count.
RA_DEVICE void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Waits until the phase of parity `parity` has completed (on a fresh
// barrier, parity 1 passes at once and parity 0 waits for the first phase).
RA_DEVICE void MbarWait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
  __syncwarp();  // reconverged for the .sync.aligned instructions (wgmma, bar.sync) after it
}

// A [64][rows] box of a 4-d tensor map at coordinates (c0 innermost) into
// shared memory `dst`, completing `bytes` on `bar`; elements outside the
// tensor arrive as zeros.
RA_DEVICE void TmaLoad4D(uint32_t dst, const TensorMap* map, int c0, int c1, int c2, int c3,
                         uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}

// Ordinary shared-memory stores of this thread become visible to the async
// proxy (wgmma operands, TMA) after a following barrier.
RA_DEVICE void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// bar.sync on named barrier `id` (1-15; 0 is __syncthreads) of `count` threads.
RA_DEVICE void NamedBarrierSync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

template <int kRegs>
RA_DEVICE void SetMaxRegsInc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
RA_DEVICE void SetMaxRegsDec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

RA_DEVICE void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
RA_DEVICE void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
RA_DEVICE void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Tells the compiler that the registers change here, so that no read of an
// accumulator moves above a WgmmaWait (nor a write below an issue).
template <int kN>
RA_DEVICE void FenceRegs(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int kN>
RA_DEVICE void FenceRegs(uint32_t (&a)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+r"(a[i])::"memory");
}

#define RA_WG_R0_31 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define RA_WG_R32_63 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define RA_WG_D32(o) \
  "+f"(d[o+0]), "+f"(d[o+1]), "+f"(d[o+2]), "+f"(d[o+3]), "+f"(d[o+4]), "+f"(d[o+5]), "+f"(d[o+6]), "+f"(d[o+7]), "+f"(d[o+8]), "+f"(d[o+9]), "+f"(d[o+10]), "+f"(d[o+11]), "+f"(d[o+12]), "+f"(d[o+13]), "+f"(d[o+14]), "+f"(d[o+15]), "+f"(d[o+16]), "+f"(d[o+17]), "+f"(d[o+18]), "+f"(d[o+19]), "+f"(d[o+20]), "+f"(d[o+21]), "+f"(d[o+22]), "+f"(d[o+23]), "+f"(d[o+24]), "+f"(d[o+25]), "+f"(d[o+26]), "+f"(d[o+27]), "+f"(d[o+28]), "+f"(d[o+29]), "+f"(d[o+30]), "+f"(d[o+31])

// d (+)= A B for m64nNk16, N = 64 or 128, fp32 accumulators d[N / 2] in the
// layout of mma.sync's C per warp (warp w of the warpgroup: rows 16w + g and
// 16w + g + 8; d[4j + {0,1}] = row g, cols 8j + 2t, +1; d[4j + {2,3}] =
// row g + 8). accumulate = false overwrites d.
// SS: A (K-major, 64 x 16) and B (K-major, N x 16) from descriptors.
template <int kN, DType kT>
RA_DEVICE void WgmmaSS(float (&d)[kN / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(kN == 64 || kN == 128, "m64n64 or m64n128");
  static_assert(kT == DType::kBFloat16 || kT == DType::kFloat16, "16-bit inputs only");
#define RA_WG_SS(TY, REGS, OPS, A, B, P)                                                     \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " P ", 0;\n"                               \
               " wgmma.mma_async.sync.aligned.m64n" #REGS "k16.f32." TY "." TY " {" OPS "}, " \
               A ", " B ", p, 1, 1, 0, 0;\n}\n"
  if constexpr (kN == 64 && kT == DType::kBFloat16) {
    RA_WG_SS("bf16", 64, RA_WG_R0_31, "%32", "%33", "%34")
                 : RA_WG_D32(0) : "l"(desc_a), "l"(desc_b), "r"(int{accumulate}));
  } else if constexpr (kN == 64) {
    RA_WG_SS("f16", 64, RA_WG_R0_31, "%32", "%33", "%34")
                 : RA_WG_D32(0) : "l"(desc_a), "l"(desc_b), "r"(int{accumulate}));
  } else if constexpr (kT == DType::kBFloat16) {
    RA_WG_SS("bf16", 128, RA_WG_R0_31 ", " RA_WG_R32_63, "%64", "%65", "%66")
                 : RA_WG_D32(0), RA_WG_D32(32) : "l"(desc_a), "l"(desc_b), "r"(int{accumulate}));
  } else {
    RA_WG_SS("f16", 128, RA_WG_R0_31 ", " RA_WG_R32_63, "%64", "%65", "%66")
                 : RA_WG_D32(0), RA_WG_D32(32) : "l"(desc_a), "l"(desc_b), "r"(int{accumulate}));
  }
#undef RA_WG_SS
}

// RS: A (64 x 16) from registers in mma.sync's A layout per warp (a[0..3]
// as for m16n8k16), B (K x N = 16 x N) MN-major from a descriptor
// (transposed: N contiguous in shared memory).
template <int kN, DType kT>
RA_DEVICE void WgmmaRS(float (&d)[kN / 2], const uint32_t (&a)[4], uint64_t desc_b,
                       bool accumulate) {
  static_assert(kN == 64 || kN == 128, "m64n64 or m64n128");
  static_assert(kT == DType::kBFloat16 || kT == DType::kFloat16, "16-bit inputs only");
#define RA_WG_RS(TY, REGS, OPS, A, B, P)                                                     \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " P ", 0;\n"                               \
               " wgmma.mma_async.sync.aligned.m64n" #REGS "k16.f32." TY "." TY " {" OPS "}, " \
               A ", " B ", p, 1, 1, 1;\n}\n"
  if constexpr (kN == 64 && kT == DType::kBFloat16) {
    RA_WG_RS("bf16", 64, RA_WG_R0_31, "{%32, %33, %34, %35}", "%36", "%37")
                 : RA_WG_D32(0)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int{accumulate}));
  } else if constexpr (kN == 64) {
    RA_WG_RS("f16", 64, RA_WG_R0_31, "{%32, %33, %34, %35}", "%36", "%37")
                 : RA_WG_D32(0)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int{accumulate}));
  } else if constexpr (kT == DType::kBFloat16) {
    RA_WG_RS("bf16", 128, RA_WG_R0_31 ", " RA_WG_R32_63, "{%64, %65, %66, %67}", "%68", "%69")
                 : RA_WG_D32(0), RA_WG_D32(32)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int{accumulate}));
  } else {
    RA_WG_RS("f16", 128, RA_WG_R0_31 ", " RA_WG_R32_63, "{%64, %65, %66, %67}", "%68", "%69")
                 : RA_WG_D32(0), RA_WG_D32(32)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int{accumulate}));
  }
#undef RA_WG_RS
}

#undef RA_WG_R0_31
#undef RA_WG_R32_63
#undef RA_WG_D32

}  // namespace ringattn::cuda::detail

#endif  // !RINGATTN_CUDA_EMULATE
