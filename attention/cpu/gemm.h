// Small fp32 GEMMs for the CPU kernels: C = A * B + beta * C, COLUMN-major
// (BLAS convention), with fixed m, n, k and leading dimensions. Backed by
// libxsmm's JIT kernels when the build has libxsmm (see docs/PERF.md for the
// measurement behind that choice), by a plain loop nest otherwise.
#pragma once

#include <cstdint>

namespace ringattn::cpu {

class SmallGemm {
 public:
  SmallGemm() = default;
  // beta must be 0 or 1.
  SmallGemm(int m, int n, int k, int lda, int ldb, int ldc, float beta);

  void operator()(const float* a, const float* b, float* c) const;

  // Name of the library in use ("libxsmm 1.17" / "reference loops").
  static const char* Backend();

 private:
  using Kernel = void (*)(const float*, const float*, float*, ...);
  Kernel kernel_ = nullptr;
  int m_ = 0, n_ = 0, k_ = 0, lda_ = 0, ldb_ = 0, ldc_ = 0;
  float beta_ = 0.0f;
};

}  // namespace ringattn::cpu
