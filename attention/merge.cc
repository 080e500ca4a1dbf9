// MergePartial: see merge.h.
#include "attention/merge.h"

namespace ringattn {

void MergePartial(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                  int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim,
                  int num_threads) {
  const int64_t rows = batch * seqlen;
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / seqlen;
    const int64_t i = r % seqlen;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t li = (b * heads + h) * seqlen + i;
      float lse, wa, wb;
      MergeWeights(acc_lse[li], part_lse[li], &lse, &wa, &wb);
      acc_lse[li] = lse;
      float* o = acc_out + (r * heads + h) * head_dim;
      const float* po = part_out + (r * heads + h) * head_dim;
      if (wb == 0.0f) {
        // Nothing to add; keep acc (a fully masked acc is already 0).
        if (wa == 0.0f)
          for (int64_t d = 0; d < head_dim; ++d) o[d] = 0.0f;
        continue;
      }
      if (wa == 0.0f) {
        for (int64_t d = 0; d < head_dim; ++d) o[d] = po[d];
        continue;
      }
      for (int64_t d = 0; d < head_dim; ++d) o[d] = wa * o[d] + wb * po[d];
    }
  }
}

}  // namespace ringattn
