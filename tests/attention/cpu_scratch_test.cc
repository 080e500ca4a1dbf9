// The CPU kernels' scratch pool (attention/cpu/scratch.h): blocks come back
// for the next call of the same shape, small ones are malloc's, and the
// pool's holdings stay bounded.
#include <cstring>
#include <vector>

#include "attention/cpu/scratch.h"
#include "gtest/gtest.h"

namespace ringattn::cpu {
namespace {

TEST(ScratchPool, ASecondCallReusesTheFirstCallsBlocks) {
  const size_t before = ScratchPool::PooledBytes();
  void* first = nullptr;
  {
    Scratch<float> a = Uninit<float>(1 << 20);  // 4 MiB
    first = a.get();
    std::memset(a.get(), 1, 4 << 20);
  }
  EXPECT_GE(ScratchPool::PooledBytes(), before + (4u << 20));
  Scratch<float> b = Uninit<float>(1 << 20);
  EXPECT_EQ(b.get(), first);
  Scratch<float> c = Uninit<float>(1 << 20);  // the pool's block is taken: a fresh one
  EXPECT_NE(c.get(), first);
}

TEST(ScratchPool, ABlockServesOnlyRequestsOfAtLeastHalfItsSize) {
  void* big = nullptr;
  {
    Scratch<float> a = Uninit<float>(4 << 20);  // 16 MiB
    big = a.get();
  }
  Scratch<float> small = Uninit<float>(1 << 20);  // 4 MiB: would waste 12
  EXPECT_NE(small.get(), big);
  Scratch<float> half = Uninit<float>(2 << 20);   // 8 MiB: fits
  EXPECT_EQ(half.get(), big);
}

TEST(ScratchPool, SmallBlocksAreNotPooledAndHoldingsStayBounded) {
  const size_t before = ScratchPool::PooledBytes();
  { Scratch<uint8_t> tiny = Uninit<uint8_t>(1000); }
  EXPECT_EQ(ScratchPool::PooledBytes(), before);
  {
    std::vector<Scratch<float>> many;
    for (int i = 0; i < 40; ++i) many.push_back(Uninit<float>(1 << 18));  // 40 x 1 MiB
  }
  EXPECT_LE(ScratchPool::PooledBytes(), size_t{16} * (4 << 20)) << "at most 16 blocks";
  { Scratch<uint8_t> zero = Uninit<uint8_t>(0); ASSERT_NE(zero.get(), nullptr); }
}

}  // namespace
}  // namespace ringattn::cpu
