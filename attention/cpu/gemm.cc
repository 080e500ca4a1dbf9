// SmallGemm: libxsmm dispatch with a loop-nest fallback.
#include "attention/cpu/gemm.h"

#include <mutex>

#ifdef RINGATTN_HAVE_LIBXSMM
#include <libxsmm.h>
#endif

namespace ringattn::cpu {

SmallGemm::SmallGemm(int m, int n, int k, int lda, int ldb, int ldc, float beta)
    : m_(m), n_(n), k_(k), lda_(lda), ldb_(ldb), ldc_(ldc), beta_(beta) {
#ifdef RINGATTN_HAVE_LIBXSMM
  static std::once_flag init;
  std::call_once(init, [] { libxsmm_init(); });
  const libxsmm_blasint bm = m, bn = n, bk = k, blda = lda, bldb = ldb, bldc = ldc;
  const float alpha = 1.0f;
  const int flags = LIBXSMM_GEMM_FLAG_NONE;
  kernel_ = reinterpret_cast<Kernel>(
      libxsmm_smmdispatch(bm, bn, bk, &blda, &bldb, &bldc, &alpha, &beta_, &flags, nullptr));
#endif
}

void SmallGemm::operator()(const float* a, const float* b, float* c) const {
  if (kernel_) {
    kernel_(a, b, c);
    return;
  }
  for (int j = 0; j < n_; ++j) {
    float* cj = c + static_cast<int64_t>(j) * ldc_;
    if (beta_ == 0.0f)
      for (int i = 0; i < m_; ++i) cj[i] = 0.0f;
    for (int p = 0; p < k_; ++p) {
      const float bpj = b[static_cast<int64_t>(j) * ldb_ + p];
      const float* ap = a + static_cast<int64_t>(p) * lda_;
      for (int i = 0; i < m_; ++i) cj[i] += ap[i] * bpj;
    }
  }
}

const char* SmallGemm::Backend() {
#ifdef RINGATTN_HAVE_LIBXSMM
  return "libxsmm";
#else
  return "reference loops";
#endif
}

}  // namespace ringattn::cpu
