#include "attention/cpu/scratch.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace ringattn::cpu {
namespace {

constexpr size_t kPooledMin = size_t{1} << 20;  // smaller blocks: malloc's business
constexpr size_t kMaxBlocks = 16;

struct Block {
  void* p;
  size_t bytes;
};

struct Pool {
  std::mutex mu;
  std::vector<Block> blocks;  // oldest first
  size_t bytes = 0;
  size_t cap = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? static_cast<size_t>(pages) * page / 16 : size_t{1} << 30;
  }();
  ~Pool() {
    for (const Block& b : blocks) std::free(b.p);
  }
};

Pool& GetPool() {
  static Pool pool;
  return pool;
}

}  // namespace

void* ScratchPool::Take(size_t bytes, size_t* size) {
  *size = bytes;
  if (bytes >= kPooledMin) {
    Pool& pool = GetPool();
    std::lock_guard<std::mutex> lock(pool.mu);
    // The smallest block that fits and wastes at most half of itself.
    auto best = pool.blocks.end();
    for (auto it = pool.blocks.begin(); it != pool.blocks.end(); ++it) {
      if (it->bytes >= bytes && it->bytes / 2 <= bytes &&
          (best == pool.blocks.end() || it->bytes < best->bytes)) {
        best = it;
      }
    }
    if (best != pool.blocks.end()) {
      void* p = best->p;
      *size = best->bytes;
      pool.bytes -= best->bytes;
      pool.blocks.erase(best);
      return p;
    }
  }
  void* p = std::malloc(bytes);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void ScratchPool::Give(void* p, size_t bytes) {  // bytes: the block's size
  if (p == nullptr) return;
  if (bytes < kPooledMin) {
    std::free(p);
    return;
  }
  Pool& pool = GetPool();
  std::vector<void*> release;
  {
    std::lock_guard<std::mutex> lock(pool.mu);
    if (bytes > pool.cap) {
      release.push_back(p);
    } else {
      while (!pool.blocks.empty() &&
             (pool.bytes + bytes > pool.cap || pool.blocks.size() >= kMaxBlocks)) {
        release.push_back(pool.blocks.front().p);
        pool.bytes -= pool.blocks.front().bytes;
        pool.blocks.erase(pool.blocks.begin());
      }
      pool.blocks.push_back({p, bytes});
      pool.bytes += bytes;
    }
  }
  for (void* r : release) std::free(r);
}

size_t ScratchPool::PooledBytes() {
  Pool& pool = GetPool();
  std::lock_guard<std::mutex> lock(pool.mu);
  return pool.bytes;
}

}  // namespace ringattn::cpu
