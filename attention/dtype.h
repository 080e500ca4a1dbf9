// Storage dtypes of attention tensors and the conversions the CPU kernels
// use. bf16 is stored as raw 16-bit words (upper half of an fp32) and is
// always computed in fp32; fp16 (IEEE binary16) exists for the CUDA kernels,
// and its host conversions here serve the tools and tests that feed them.
#pragma once

#include <cmath>
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

// IEEE binary16, round to nearest even; NaN stays NaN, overflow gives inf.
inline uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u;    // NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;   // rounds to +-inf (65520 and up)
  if (ax < 0x38800000u) {                          // below 2^-14: subnormal or zero
    float af;
    std::memcpy(&af, &ax, 4);
    // |f| * 2^24 is exact; the default rounding mode rounds half to even.
    return sign | static_cast<uint16_t>(std::nearbyint(af * 16777216.0f));
  }
  uint32_t h = ((ax >> 23) - 112) << 10 | ((ax >> 13) & 0x3ffu);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carries into the exponent
  return sign | static_cast<uint16_t>(h);
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float f = std::ldexp(static_cast<float>(m), -24);
    return sign ? -f : f;
  }
  const uint32_t bits = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112) << 23) | (m << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// n floats -> raw storage of dtype t (fp32, bf16 or fp16), and back.
inline void EncodeFloats(const float* x, int64_t n, DType t, void* dst) {
  if (t == DType::kFloat32) {
    std::memcpy(dst, x, static_cast<size_t>(n) * 4);
    return;
  }
  uint16_t* w = static_cast<uint16_t*>(dst);
  if (t == DType::kFloat16) {
    for (int64_t i = 0; i < n; ++i) w[i] = FloatToHalf(x[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) w[i] = FloatToBF16(x[i]);
}
inline void DecodeFloats(const void* src, int64_t n, DType t, float* x) {
  if (t == DType::kFloat32) {
    std::memcpy(x, src, static_cast<size_t>(n) * 4);
    return;
  }
  const uint16_t* w = static_cast<const uint16_t*>(src);
  if (t == DType::kFloat16) {
    for (int64_t i = 0; i < n; ++i) x[i] = HalfToFloat(w[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) x[i] = BF16ToFloat(w[i]);
}

// Value of `f` after a round trip through `t` (what storing it would keep).
inline float RoundTo(DType t, float f) {
  switch (t) {
    case DType::kBFloat16: return BF16ToFloat(FloatToBF16(f));
    case DType::kFloat16: return HalfToFloat(FloatToHalf(f));
    case DType::kFloat32: break;
  }
  return f;
}

}  // namespace ringattn
