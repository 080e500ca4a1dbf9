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
// The sm_90a part (ptx_sm90.cuh: mbarriers, TMA, wgmma, named barriers) is
// at the end of this file. Slow (threads and barriers): meant for problems
// of a few hundred rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "attention/cuda/tensor_map.h"
#include "attention/dtype.h"

#define RA_DEVICE inline
#define RA_DEVICE_NOINLINE inline

struct EmuIndex {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuIndex threadIdx, blockIdx, gridDim;

namespace ringattn::cuda::emu {

inline bool kCpAsyncAtIssue = false;
// TMA copies land when some thread waits on their mbarrier (the latest the
// hardware may land them, so a read of a tile before its barrier's wait
// sees the 0xff poison or the previous tile), or at issue with true.
inline bool kTmaAtIssue = false;

struct Warp {
  std::barrier<> bar{32};
  uint32_t a[32][4];
  uint32_t b[32][2];
  uint32_t addr[32];
  float f[32];
};

// The sm_90a state of a block (ptx_sm90.cuh): mbarriers by shared
// address, named barriers by id, and one exchange area per warpgroup for
// the A fragments of a wgmma taken from registers.
struct MBarrier {
  int count = 0, pending = 0;
  int64_t tx = 0;       // bytes still expected in the current phase
  uint32_t phase = 0;   // completed phases
};
struct WarpGroup {
  std::barrier<> bar{128};
  uint32_t a[128][4];
};
// A TMA copy not yet landed: the box's bytes, already swizzled, by shared
// address.
struct PendingTma {
  uint32_t bar = 0, bytes = 0;
  std::vector<std::pair<uint32_t, uint16_t>> data;
};
struct Sm90State {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint32_t, MBarrier> bars;
  std::vector<PendingTma> tma;  // in flight (kTmaAtIssue = false)
  std::map<int, std::unique_ptr<std::barrier<>>> named;
  std::vector<std::unique_ptr<WarpGroup>> groups;
};

struct Block {
  char* smem = nullptr;
  size_t smem_bytes = 0;
  std::barrier<>* bar = nullptr;
  Warp* warps = nullptr;
  Sm90State* sm90 = nullptr;
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

inline void ResetWgmma();  // below, with the sm_90a emulation

// Runs body(smem) for every block of `grid`, one block at a time.
template <class Body>
void Launch(Dim grid, int threads, size_t smem_bytes, Body body) {
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::vector<char> smem(smem_bytes, static_cast<char>(0xff));
        std::barrier<> bar(threads);
        std::unique_ptr<Warp[]> warps(new Warp[threads / 32]);
        Sm90State sm90;
        for (int g = 0; g < threads / 128; ++g) {
          sm90.groups.push_back(std::make_unique<WarpGroup>());
        }
        Block blk{smem.data(), smem_bytes, &bar, warps.get(), &sm90};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            block = &blk;
            threadIdx = {static_cast<unsigned>(t), 0, 0};
            blockIdx = {x, y, z};
            gridDim = {grid.x, grid.y, grid.z};
            groups.clear();
            open_group.clear();
            ResetWgmma();
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

// ------------------------------------------------------------ sm_90a
// ptx_sm90.cuh on the host. The tensor map is TileMapShape itself. A TMA
// copy reads global memory at issue and lands in shared memory, completing
// its bytes on the mbarrier, when a thread waits on that barrier
// (kTmaAtIssue: at issue); a wgmma is
// recorded at issue (its A fragment from registers copied then, as the
// hardware may read it any time before the wait) and computed at
// wgmma.wait_group, reading shared memory then: a stage released or
// overwritten before the wait shows as wrong numbers. Descriptors and
// tensor maps are decoded independently of the kernel, by the PTX ISA's
// canonical 128-byte-swizzle layouts, and only that swizzle is accepted.
namespace ringattn::cuda::detail {

using TensorMap = TileMapShape;

inline emu::Sm90State& Sm90() { return *emu::block->sm90; }

[[noreturn]] inline void EmuFail(const char* what) {
  std::fprintf(stderr, "sm90 emulation: %s\n", what);
  std::abort();
}

inline void MbarCompleteLocked(emu::MBarrier& m) {
  if (m.pending < 0) EmuFail("mbarrier: more arrivals than its count");
  if (m.pending == 0 && m.tx == 0) {
    ++m.phase;
    m.pending = m.count;
    Sm90().cv.notify_all();
  }
}
inline emu::MBarrier& MbarLocked(uint32_t bar) {
  auto it = Sm90().bars.find(bar);
  if (it == Sm90().bars.end()) EmuFail("mbarrier used before mbarrier.init");
  return it->second;
}
inline void MbarInit(uint32_t bar, int count) {
  emu::CheckShared(bar, 8);
  if (bar % 8 != 0) EmuFail("mbarrier not 8-byte aligned");
  std::lock_guard<std::mutex> lk(Sm90().mu);
  Sm90().bars[bar] = emu::MBarrier{count, count, 0, 0};
}
inline void FenceBarrierInit() {}
inline void MbarArrive(uint32_t bar) {
  std::lock_guard<std::mutex> lk(Sm90().mu);
  emu::MBarrier& m = MbarLocked(bar);
  --m.pending;
  MbarCompleteLocked(m);
}
inline void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  std::lock_guard<std::mutex> lk(Sm90().mu);
  emu::MBarrier& m = MbarLocked(bar);
  m.tx += bytes;
  --m.pending;
  MbarCompleteLocked(m);
}
// Lands the TMA copies in flight to `bar`, completing their bytes on it.
inline void LandTmaLocked(uint32_t bar) {
  auto& pending = Sm90().tma;
  for (auto it = pending.begin(); it != pending.end();) {
    if (it->bar != bar) {
      ++it;
      continue;
    }
    for (const auto& [addr, v] : it->data) std::memcpy(emu::block->smem + addr, &v, 2);
    emu::MBarrier& m = MbarLocked(bar);
    m.tx -= it->bytes;
    if (m.tx < 0) EmuFail("mbarrier: more bytes than expected");
    MbarCompleteLocked(m);
    it = pending.erase(it);
  }
}
// Passes once the phase of parity `parity` has completed; a wait that
// lasts 60 s is a deadlock of the kernel under test.
inline void MbarWait(uint32_t bar, uint32_t parity) {
  std::unique_lock<std::mutex> lk(Sm90().mu);
  LandTmaLocked(bar);
  const bool ok = Sm90().cv.wait_for(lk, std::chrono::seconds(60), [&] {
    LandTmaLocked(bar);  // copies issued while this thread waited
    return (MbarLocked(bar).phase & 1) != parity;
  });
  if (!ok) EmuFail("mbarrier wait: no progress in 60 s (deadlock)");
}

// The 128-byte swizzle on a shared address: bits 4-6 ^= bits 7-9.
inline uint32_t Swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7) << 4); }

inline void TmaLoad4D(uint32_t dst, const TensorMap* map, int c0, int c1, int c2, int c3,
                      uint32_t bar) {
  const TensorMap& m = *map;
  if (dst % 1024 != 0) EmuFail("TMA: destination not 1024-byte aligned");
  if (m.box[0] * 2 > 128) EmuFail("TMA: a 128-byte swizzle box is at most 128 bytes wide");
  if (reinterpret_cast<uintptr_t>(m.base) % 16 != 0) EmuFail("TMA: global base not 16-byte aligned");
  for (uint64_t st : m.strides) {
    if (st == 0 || st % 16 != 0) EmuFail("TMA: strides must be non-zero multiples of 16 bytes");
  }
  const uint32_t bytes = m.box[0] * m.box[1] * m.box[2] * m.box[3] * 2;
  emu::CheckShared(dst, bytes);
  const int64_t c[4] = {c0, c1, c2, c3};
  emu::PendingTma copy;
  copy.bar = bar;
  copy.bytes = bytes;
  uint32_t off = 0;
  for (uint32_t i3 = 0; i3 < m.box[3]; ++i3)
    for (uint32_t i2 = 0; i2 < m.box[2]; ++i2)
      for (uint32_t i1 = 0; i1 < m.box[1]; ++i1)
        for (uint32_t i0 = 0; i0 < m.box[0]; ++i0, off += 2) {
          const int64_t x[4] = {c[0] + i0, c[1] + i1, c[2] + i2, c[3] + i3};
          uint16_t v = 0;
          bool in = true;
          for (int d = 0; d < 4; ++d) in = in && x[d] >= 0 && x[d] < static_cast<int64_t>(m.dims[d]);
          if (in) {
            const char* src = static_cast<const char*>(m.base) + x[0] * 2 + x[1] * m.strides[0] +
                              x[2] * m.strides[1] + x[3] * m.strides[2];
            std::memcpy(&v, src, 2);
          }
          copy.data.emplace_back(Swizzle128(dst + off), v);
        }
  std::lock_guard<std::mutex> lk(Sm90().mu);
  Sm90().tma.push_back(std::move(copy));
  if (emu::kTmaAtIssue) LandTmaLocked(bar);
}

inline void FenceProxyAsync() {}

inline void NamedBarrierSync(int id, int count) {
  std::barrier<>* b;
  {
    std::lock_guard<std::mutex> lk(Sm90().mu);
    auto& slot = Sm90().named[id];
    if (!slot) slot = std::make_unique<std::barrier<>>(count);
    b = slot.get();
  }
  b->arrive_and_wait();
}

template <int kRegs>
inline void SetMaxRegsInc() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
}
template <int kRegs>
inline void SetMaxRegsDec() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
}

struct WgmmaOp {
  int n = 0;
  DType t = DType::kBFloat16;
  bool a_in_regs = false, accumulate = false, trans_b = false;
  uint64_t desc_a = 0, desc_b = 0;
  uint32_t a[4] = {};
  float* d = nullptr;
};
inline thread_local std::vector<WgmmaOp> wgmma_open;
inline thread_local std::vector<std::vector<WgmmaOp>> wgmma_groups;

// Byte address of element (row, k) of a K-major operand (row < 64 or N,
// k < 16) or of (k, n) of an MN-major one, through a 128-byte-swizzle
// descriptor: start, LBO and SBO in 16-byte units in bits 0-13, 16-29 and
// 32-45, base offset (bits 49-51) 0, layout type 1 in bits 62-63.
inline uint32_t DescElement(uint64_t desc, bool mn_major, int mn, int k) {
  if ((desc >> 62) != 1) EmuFail("wgmma descriptor: only the 128-byte swizzle is emulated");
  if (((desc >> 49) & 7) != 0) EmuFail("wgmma descriptor: base offset must be 0");
  const uint32_t start = static_cast<uint32_t>(desc & 0x3fff) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3fff) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3fff) << 4;
  const uint32_t logical =
      mn_major ? start + (mn / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + (mn % 64) * 2
               : start + (mn / 8) * sbo + (mn % 8) * 128 + k * 2;
  const uint32_t phys = Swizzle128(logical);
  emu::CheckShared(phys, 2);
  return phys;
}
inline float SmemElement(uint32_t addr, DType t) {
  uint16_t v;
  std::memcpy(&v, emu::block->smem + addr, 2);
  return emu::Bits16ToFloat(v, t);
}

inline void WgmmaExecute(const WgmmaOp& op) {
  const int tid = static_cast<int>(threadIdx.x % 128);
  emu::WarpGroup& g = *Sm90().groups.at(threadIdx.x / 128);
  for (int i = 0; i < 4; ++i) g.a[tid][i] = op.a[i];
  g.bar.arrive_and_wait();
  const int w = tid / 32, lane = tid % 32, gq = lane >> 2, t = lane & 3;
  auto a_elem = [&](int row, int k) {  // row within the warpgroup's 64
    if (!op.a_in_regs) return SmemElement(DescElement(op.desc_a, false, row, k), op.t);
    const int rl = row % 16, owner = 32 * (row / 16) + 4 * (rl % 8) + (k % 8) / 2;
    const uint32_t reg = g.a[owner][(k >= 8 ? 2 : 0) + rl / 8];
    const uint16_t bits = static_cast<uint16_t>(k % 2 ? reg >> 16 : reg & 0xffff);
    return emu::Bits16ToFloat(bits, op.t);
  };
  auto b_elem = [&](int k, int col) {
    return SmemElement(op.trans_b ? DescElement(op.desc_b, true, col, k)
                                  : DescElement(op.desc_b, false, col, k),
                       op.t);
  };
  for (int half = 0; half < 2; ++half) {
    const int row = 16 * w + gq + 8 * half;
    float a[16];
    for (int k = 0; k < 16; ++k) a[k] = a_elem(row, k);
    for (int j = 0; j < op.n / 8; ++j)
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * j + 2 * t + e;
        float acc = op.accumulate ? op.d[4 * j + 2 * half + e] : 0.0f;
        for (int k = 0; k < 16; ++k) acc += a[k] * b_elem(k, col);
        op.d[4 * j + 2 * half + e] = acc;
      }
  }
  g.bar.arrive_and_wait();
}

inline void WgmmaFence() {}
inline void WgmmaCommit() {
  wgmma_groups.push_back(std::move(wgmma_open));
  wgmma_open.clear();
}
template <int kPending>
inline void WgmmaWait() {
  while (static_cast<int>(wgmma_groups.size()) > kPending) {
    for (const WgmmaOp& op : wgmma_groups.front()) WgmmaExecute(op);
    wgmma_groups.erase(wgmma_groups.begin());
  }
}
template <class T, int kN>
inline void FenceRegs(T (&)[kN]) {}

template <int kN, DType kT>
inline void WgmmaSS(float (&d)[kN / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  wgmma_open.push_back(WgmmaOp{
      .n = kN, .t = kT, .accumulate = accumulate, .desc_a = desc_a, .desc_b = desc_b, .d = d});
}
template <int kN, DType kT>
inline void WgmmaRS(float (&d)[kN / 2], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
  wgmma_open.push_back(WgmmaOp{.n = kN,
                               .t = kT,
                               .a_in_regs = true,
                               .accumulate = accumulate,
                               .trans_b = true,
                               .desc_b = desc_b,
                               .a = {a[0], a[1], a[2], a[3]},
                               .d = d});
}

}  // namespace ringattn::cuda::detail

namespace ringattn::cuda::emu {
inline void ResetWgmma() {
  detail::wgmma_open.clear();
  detail::wgmma_groups.clear();
}
}  // namespace ringattn::cuda::emu
