// Test support for the attention kernels: random problems with any dtype,
// strides and global positions; the naive same-precision implementation
// that sets the tolerance (flash-attn's rule: kernel error <= 2x naive error
// + atol, both against the float64 reference); error measures.
#pragma once

#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "attention/dtype.h"
#include "attention/mask.h"
#include "attention/params.h"
#include "attention/reference.h"

namespace ringattn::testing {

enum class PosKind { kFromZero, kOffset, kTwoRanges, kStriped };

struct Case {
  int64_t batch = 1, seqlen_q = 64, seqlen_k = 64, heads = 2, heads_k = 2, head_dim = 64;
  Mask mask;
  float softcap = 0.0f;
  DType dtype = DType::kFloat32;
  PosKind q_pos = PosKind::kFromZero;
  PosKind k_pos = PosKind::kFromZero;
  bool strided = false;  // tensors stored [B, H, S, D + 3]
  std::string Name() const;
};
inline void PrintTo(const Case& c, std::ostream* os) { *os << c.Name(); }

// IEEE binary16 (fp16) conversions, round to nearest even, for the CUDA
// kernels' fp16 storage (the ones of dtype.h, kept under these names).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
// Value of `f` after a round trip through `t`, fp16 included.
float RoundToDType(DType t, float f);
// 16-bit storage word of `f` in `t` (bf16 or fp16), and back.
uint16_t ToBits(DType t, float f);
float FromBits(DType t, uint16_t w);

// A dtype-typed tensor [B, S, H, D] stored contiguous or head-major padded.
struct Tensor {
  std::vector<uint16_t> words;  // bf16 or fp16 storage
  std::vector<float> floats;    // fp32 storage
  DType dtype = DType::kFloat32;
  TensorStrides stride;
  void* data() { return dtype == DType::kFloat32 ? static_cast<void*>(floats.data()) : words.data(); }
  const void* data() const {
    return dtype == DType::kFloat32 ? static_cast<const void*>(floats.data()) : words.data();
  }
  // Element (b, i, h, d) as float.
  float At(int64_t b, int64_t i, int64_t h, int64_t d) const;
};

// Builds a tensor from contiguous values (already representable in dtype).
Tensor MakeTensor(const std::vector<float>& contiguous, int64_t B, int64_t S, int64_t H,
                  int64_t D, DType dtype, bool strided);
std::vector<float> ToContiguous(const Tensor& t, int64_t B, int64_t S, int64_t H, int64_t D);

// Random normal values rounded to dtype.
std::vector<float> RandomValues(int64_t n, DType dtype, uint32_t seed, float stddev = 1.0f);

PositionMap MakePositions(PosKind kind, int64_t n, int64_t salt);

// Packed documents for kernel tests (boundaries in global positions; the
// last document runs past every position a test uses). Static storage.
enum class DocKind { kTiny, kMixed, kTileEdges };
const std::vector<int64_t>& TestDocuments(DocKind kind);
Mask WithTestDocuments(Mask m, DocKind kind);

// Block masks for kernel tests over positions [0, kTestBlockSpan) (every
// position a test uses) in blocks of `size` tokens, the same in every head
// (heads = 1) or one per head: random (seeded, about a third on), all off,
// all on, the diagonal (each block sees itself). Static storage.
enum class BlockKind { kRandom, kAllOff, kAllOn, kDiagonal };
constexpr int64_t kTestBlockSpan = 2048;
Mask WithTestBlocks(Mask m, BlockKind kind, int64_t size, int64_t heads = 1);

struct Problem {
  Case c;
  std::vector<float> q, k, v, dout;  // contiguous, rounded to dtype
  Tensor tq, tk, tv, tdout;
  PositionMap qmap, kmap;
  RefProblem ref;
  float scale = 0.0f;

  AttnParams Params() const;  // inputs only; caller sets outputs
};
Problem MakeProblem(const Case& c, uint32_t seed);

// The problem of the "non-finite at masked keys" checks: 100 queries, 300
// keys (keys 100.. in every query's future), NaN and Inf in K and V at keys
// 150, 157, ... and NaN at key 101, which shares a tile with visible keys.
// Under `mask` (causal, or a window that hides them) no output may turn
// non-finite.
Problem NonFiniteAtMaskedKeys(const Mask& mask, int64_t head_dim, DType dtype);

// Gradients of a problem (host, fp32).
struct Grads {
  std::vector<float> dq, dk, dv;
};

// Whether no output of a NonFiniteAtMaskedKeys problem turned non-finite:
// out, lse and dq everywhere, dk and dv at the keys some query sees (0..99).
bool MaskedKeysStayedOut(const Problem& p, const std::vector<float>& out,
                         const std::vector<float>& lse, const Grads& g);
// The backward's params: the problem's inputs, the global lse and dsum
// (contiguous [B, H, S_q]), and `g`'s accumulators, sized and zeroed here.
AttnParams BackwardParams(const Problem& p, const float* lse, const float* dsum, Grads* g);

// Naive unfused attention in fp32 (scores, softmax, P rounded to dtype for
// bf16 and fp16, then P V), output rounded to dtype: the "same precision"
// baseline.
void NaiveForward(const Problem& p, std::vector<float>* out, std::vector<float>* lse);
void NaiveBackward(const Problem& p, std::vector<float>* dq, std::vector<float>* dk,
                   std::vector<float>* dv);

// Max |a - ref| over elements where ref is finite; counts elements where
// the finiteness of a and ref differ as +inf error.
double MaxError(const std::vector<float>& a, const std::vector<double>& ref);
double MaxError(const std::vector<double>& a, const std::vector<double>& ref);
template <typename T>
std::vector<double> ToDouble(const std::vector<T>& x) {
  return std::vector<double>(x.begin(), x.end());
}

// Tolerance by flash-attn's rule.
inline double Tolerance(double naive_error, DType dtype) {
  return 2.0 * naive_error + (dtype == DType::kFloat32 ? 1e-5 : 1e-3);
}

}  // namespace ringattn::testing
