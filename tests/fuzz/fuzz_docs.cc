// libFuzzer target: packed documents and the masks built on them. The
// bytes give a sequence length, mask rules and cu_seqlens boundaries, as a
// user (or a peer's tensor) could: ValidateMask must refuse or pass, never
// crash; a mask it passes keeps the Mask contract (one monotone interval
// per row, holding the row, equal to the rules' definition), and the
// balanced sharding of it holds every position exactly once, in order.
#include <cstdint>
#include <cstring>
#include <vector>

#include "attention/reference.h"
#include "runtime/layout.h"
#include "runtime/validate.h"

namespace {

template <typename T>
T Take(const uint8_t*& data, size_t& size) {
  T x{};
  const size_t n = size < sizeof(T) ? size : sizeof(T);
  std::memcpy(&x, data, n);
  data += n;
  size -= n;
  return x;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ringattn::Mask;
  const uint16_t seq_bits = Take<uint16_t>(data, size);
  const uint8_t rules = Take<uint8_t>(data, size);
  const uint8_t world = Take<uint8_t>(data, size) % 9 + 1;
  const int64_t seqlen = seq_bits % 600;
  Mask m;
  m.causal = rules & 1;
  if (rules & 2) m.window_left = Take<uint8_t>(data, size) - 1;
  if (rules & 4) m.window_right = Take<uint8_t>(data, size) - 1;
  if (rules & 8) m.prefix = Take<int16_t>(data, size);
  // The rest: boundaries, as int16 (small, often valid) or raw int64.
  std::vector<int64_t> bounds;
  while (size > 0 && bounds.size() < 400) {
    bounds.push_back(rules & 16 ? Take<int64_t>(data, size) : Take<int16_t>(data, size));
  }
  m = m.WithDocuments(bounds.data(), static_cast<int64_t>(bounds.size()));
  if (!ringattn::ValidateMask(m, seqlen).ok()) return 0;
  // The contract, position by position.
  ringattn::PosRange prev = m.KeyBounds(0);
  for (int64_t q = 0; q < seqlen; ++q) {
    const ringattn::PosRange kb = m.KeyBounds(q);
    if (kb.lo < prev.lo || kb.hi < prev.hi) __builtin_trap();  // not monotone
    if (!kb.Empty() && !kb.Contains(q)) __builtin_trap();
    prev = kb;
    for (int64_t k = q > 40 ? q - 40 : 0; k < seqlen && k < q + 40; ++k) {
      if (kb.Contains(k) != ringattn::ReferenceVisible(m, q, k)) __builtin_trap();
      if (m.QueryBounds(k).Contains(q) != kb.Contains(k)) __builtin_trap();
    }
  }
  auto layout = ringattn::Layout::Create(ringattn::Sharding::kBalanced, seqlen, world, 1, m);
  if (!layout.ok()) __builtin_trap();  // valid options: balanced sharding must exist
  std::vector<int> seen(seqlen, 0);
  for (int r = 0; r < world; ++r) {
    const std::vector<int64_t> pos = layout->Positions(r);
    for (size_t i = 0; i < pos.size(); ++i) {
      if (pos[i] < 0 || pos[i] >= seqlen || (i > 0 && pos[i] <= pos[i - 1])) __builtin_trap();
      ++seen[pos[i]];
    }
  }
  for (int c : seen) {
    if (c != 1) __builtin_trap();
  }
  return 0;
}
