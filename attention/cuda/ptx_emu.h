// Host emulation of attention/cuda/ptx.cuh, for checking the kernel bodies'
// index math, fragment layouts, masks and pipelining on a machine without a
// GPU (most sessions here). Compiled only into tests, with
// RINGATTN_CUDA_EMULATE defined: cuda_emu_check (the kernel bodies) and
// cuda_tiles_test (device.cuh's tile bookkeeping); never part of the
// library. It lives here, beside ptx.cuh, rather than under tests/, because
// it is the other variant of ptx.cuh, which includes it itself: the device
// code (ptx.cuh, device.cuh, the kernel bodies) reaches it when compiled for
// the host, so a library header never includes a test header.
//
// One std::thread per CUDA thread of a block; __syncthreads is a block
// barrier; warp collectives (shuffle, ldmatrix, mma) exchange operands
// through a per-warp barrier and rebuild the 16x16 / 16x8 matrices from the
// fragment layouts of the PTX ISA, independently of the kernel code; the
// data of a cp.async lands at cp.async.wait_group (kCpAsyncAtIssue = true
// makes it land at issue instead: the other extreme of the hardware's
// freedom). Shared memory starts as 0xff bytes (NaN) so that reads of
// unwritten data show; shared addresses and cp.async alignment are checked.
// Slow (threads and barriers): meant for problems of a few hundred rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "attention/dtype.h"

#define RA_DEVICE inline
#define RA_DEVICE_NOINLINE

struct EmuIndex {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuIndex threadIdx, blockIdx, gridDim;

namespace ringattn::cuda::emu {

inline bool kCpAsyncAtIssue = false;

struct Warp {
  std::barrier<> bar{32};
  uint32_t a[32][4];
  uint32_t b[32][2];
  uint32_t addr[32];
  float f[32];
};

struct Block {
  char* smem = nullptr;
  size_t smem_bytes = 0;
  std::barrier<>* bar = nullptr;
  Warp* warps = nullptr;
};

struct Copy {
  uint32_t dst;
  const void* src;
  int bytes;  // 16, 0 (zero fill) or -1 (already done at issue)
};

inline thread_local Block* block = nullptr;
inline thread_local std::vector<std::vector<Copy>> groups;
inline thread_local std::vector<Copy> open_group;

inline Warp& ThisWarp() { return block->warps[threadIdx.x / 32]; }
inline int Lane() { return static_cast<int>(threadIdx.x % 32); }

inline float Bits16ToFloat(uint16_t h, DType t) {
  if (t == DType::kBFloat16) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half_raw raw;
  raw.x = h;
  return __half2float(__half(raw));
}

inline void CheckShared(uint32_t addr, uint32_t bytes) {
  if (addr + bytes > block->smem_bytes) throw std::runtime_error("shared address out of range");
}

inline void DoCopy(const Copy& c) {
  if (c.bytes == 16) {
    std::memcpy(block->smem + c.dst, c.src, 16);
  } else if (c.bytes == 0) {
    std::memset(block->smem + c.dst, 0, 16);
  }
}

struct Dim {
  unsigned x = 1, y = 1, z = 1;
};

// Runs body(smem) for every block of `grid`, one block at a time.
template <class Body>
void Launch(Dim grid, int threads, size_t smem_bytes, Body body) {
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::vector<char> smem(smem_bytes, static_cast<char>(0xff));
        std::barrier<> bar(threads);
        std::unique_ptr<Warp[]> warps(new Warp[threads / 32]);
        Block blk{smem.data(), smem_bytes, &bar, warps.get()};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            block = &blk;
            threadIdx = {static_cast<unsigned>(t), 0, 0};
            blockIdx = {x, y, z};
            gridDim = {grid.x, grid.y, grid.z};
            groups.clear();
            open_group.clear();
            body(smem.data());
          });
        }
        for (std::thread& t : pool) t.join();
      }
}

}  // namespace ringattn::cuda::emu

inline void __syncthreads() { ringattn::cuda::emu::block->bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ringattn::cuda::emu::ThisWarp().bar.arrive_and_wait(); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }

namespace ringattn::cuda::detail {

inline void AtomicAdd2(float* p, float a, float b) {
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
}

inline uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(static_cast<const char*>(p) - emu::block->smem);
}

inline void LdMatrixEmu(uint32_t (&r)[4], uint32_t addr, bool trans) {
  emu::Warp& w = emu::ThisWarp();
  const int lane = emu::Lane();
  w.addr[lane] = addr;
  w.bar.arrive_and_wait();
  const int g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) {  // row g, columns 2t and 2t+1 of matrix i
      const uint32_t row = w.addr[8 * i + g];
      emu::CheckShared(row, 16);
      const uint16_t* p = reinterpret_cast<const uint16_t*>(emu::block->smem + row);
      lo = p[2 * t];
      hi = p[2 * t + 1];
    } else {  // (row 2t, col g) and (row 2t+1, col g)
      const uint32_t r0 = w.addr[8 * i + 2 * t], r1 = w.addr[8 * i + 2 * t + 1];
      emu::CheckShared(r0, 16);
      emu::CheckShared(r1, 16);
      lo = reinterpret_cast<const uint16_t*>(emu::block->smem + r0)[g];
      hi = reinterpret_cast<const uint16_t*>(emu::block->smem + r1)[g];
    }
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  w.bar.arrive_and_wait();
}
inline void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) { LdMatrixEmu(r, addr, false); }
inline void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) { LdMatrixEmu(r, addr, true); }

template <DType kT>
inline void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::Warp& w = emu::ThisWarp();
  const int lane = emu::Lane();
  for (int i = 0; i < 4; ++i) w.a[lane][i] = a[i];
  w.b[lane][0] = b0;
  w.b[lane][1] = b1;
  w.bar.arrive_and_wait();
  float A[16][16], B[16][8];
  auto lo = [](uint32_t x) { return emu::Bits16ToFloat(static_cast<uint16_t>(x & 0xffff), kT); };
  auto hi = [](uint32_t x) { return emu::Bits16ToFloat(static_cast<uint16_t>(x >> 16), kT); };
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    A[g][2 * t] = lo(w.a[l][0]);
    A[g][2 * t + 1] = hi(w.a[l][0]);
    A[g + 8][2 * t] = lo(w.a[l][1]);
    A[g + 8][2 * t + 1] = hi(w.a[l][1]);
    A[g][2 * t + 8] = lo(w.a[l][2]);
    A[g][2 * t + 9] = hi(w.a[l][2]);
    A[g + 8][2 * t + 8] = lo(w.a[l][3]);
    A[g + 8][2 * t + 9] = hi(w.a[l][3]);
    B[2 * t][g] = lo(w.b[l][0]);
    B[2 * t + 1][g] = hi(w.b[l][0]);
    B[2 * t + 8][g] = lo(w.b[l][1]);
    B[2 * t + 9][g] = hi(w.b[l][1]);
  }
  const int g = lane >> 2, t = lane & 3;
  for (int k = 0; k < 16; ++k) {
    c[0] += A[g][k] * B[k][2 * t];
    c[1] += A[g][k] * B[k][2 * t + 1];
    c[2] += A[g + 8][k] * B[k][2 * t];
    c[3] += A[g + 8][k] * B[k][2 * t + 1];
  }
  w.bar.arrive_and_wait();
}

inline void CpAsync16(uint32_t dst, const void* src, bool pred) {
  emu::CheckShared(dst, 16);
  if (dst % 16 != 0) throw std::runtime_error("cp.async: shared address not 16-byte aligned");
  if (pred && reinterpret_cast<uintptr_t>(src) % 16 != 0) {
    throw std::runtime_error("cp.async: global address not 16-byte aligned");
  }
  emu::Copy c{dst, src, pred ? 16 : 0};
  if (emu::kCpAsyncAtIssue) {
    emu::DoCopy(c);
    c.bytes = -1;
  }
  emu::open_group.push_back(c);
}
inline void CpAsyncCommit() {
  emu::groups.push_back(emu::open_group);
  emu::open_group.clear();
}
template <int kPending>
inline void CpAsyncWait() {
  while (static_cast<int>(emu::groups.size()) > kPending) {
    for (const emu::Copy& c : emu::groups.front()) emu::DoCopy(c);
    emu::groups.erase(emu::groups.begin());
  }
}

inline float Exp2(float x) { return std::exp2(x); }

inline float ShflXor(float v, int mask) {
  emu::Warp& w = emu::ThisWarp();
  const int lane = emu::Lane();
  w.f[lane] = v;
  w.bar.arrive_and_wait();
  const float r = w.f[lane ^ mask];
  w.bar.arrive_and_wait();
  return r;
}

template <DType kT>
inline uint32_t PackPair(float lo, float hi) {
  uint32_t r;
  if constexpr (kT == DType::kBFloat16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    std::memcpy(&r, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    std::memcpy(&r, &v, 4);
  }
  return r;
}

}  // namespace ringattn::cuda::detail
