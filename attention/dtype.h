// Storage dtypes of attention tensors and the conversions the CPU kernels
// use. bf16 is stored as raw 16-bit words (upper half of an fp32) and is
// always computed in fp32; fp16 exists for the CUDA kernels.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace ringattn {

enum class DType : uint8_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

inline constexpr int64_t DTypeSize(DType t) { return t == DType::kFloat32 ? 4 : 2; }

inline constexpr const char* DTypeName(DType t) {
  switch (t) {
    case DType::kFloat32: return "fp32";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat16: return "fp16";
  }
  return "?";
}

inline bool ParseDType(std::string_view s, DType* out) {
  for (DType t : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    if (s == std::string_view(DTypeName(t))) { *out = t; return true; }
  }
  return false;
}

inline float BF16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN (quiet bit forced).
inline uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// n floats -> raw storage of dtype t (fp32 or bf16), and back.
inline void EncodeFloats(const float* x, int64_t n, DType t, void* dst) {
  if (t == DType::kFloat32) {
    std::memcpy(dst, x, static_cast<size_t>(n) * 4);
    return;
  }
  uint16_t* w = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) w[i] = FloatToBF16(x[i]);
}
inline void DecodeFloats(const void* src, int64_t n, DType t, float* x) {
  if (t == DType::kFloat32) {
    std::memcpy(x, src, static_cast<size_t>(n) * 4);
    return;
  }
  const uint16_t* w = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) x[i] = BF16ToFloat(w[i]);
}

// Value of `f` after a round trip through `t` (what storing it would keep).
inline float RoundTo(DType t, float f) {
  return t == DType::kBFloat16 ? BF16ToFloat(FloatToBF16(f)) : f;
}

}  // namespace ringattn
