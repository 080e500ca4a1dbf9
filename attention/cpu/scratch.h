// Scratch memory for the CPU kernels' packed panels, kept between calls.
// A training loop calls the kernels with the same shapes again and again;
// fresh pages cost a fault each, and a D=64 backward at S=8192 allocates
// 128 MiB of panels: 5% of its time on a VM (docs/PERF.md). Blocks of 1 MiB
// or more are therefore handed back to a small pool when a call ends and
// reused by the next call that fits them; smaller ones use malloc. The pool
// keeps at most 1/16 of physical memory (and 16 blocks); beyond that,
// blocks go back to the system. Contents are uninitialised either way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace ringattn::cpu {

class ScratchPool {
 public:
  // At least `bytes`; *size says how many the block holds (what Give takes
  // back). Never null: throws std::bad_alloc.
  static void* Take(size_t bytes, size_t* size);
  static void Give(void* p, size_t size);
  static size_t PooledBytes();              // what the pool holds now (tests)
};

struct ScratchDeleter {
  size_t bytes = 0;
  void operator()(void* p) const { ScratchPool::Give(p, bytes); }
};
template <typename T>
using Scratch = std::unique_ptr<T[], ScratchDeleter>;

// n uninitialised elements (at least one).
template <typename T>
Scratch<T> Uninit(int64_t n) {
  size_t size = 0;
  void* p = ScratchPool::Take(sizeof(T) * static_cast<size_t>(n > 1 ? n : 1), &size);
  return Scratch<T>(static_cast<T*>(p), ScratchDeleter{size});
}

}  // namespace ringattn::cpu
