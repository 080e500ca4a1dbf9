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
      const RowMerge m = MergeRow(acc_lse[li], part_lse[li]);
      acc_lse[li] = m.lse;
      float* o = acc_out + (r * heads + h) * head_dim;
      const float* po = part_out + (r * heads + h) * head_dim;
      if (m.kind == MergeKind::kKeep) continue;
      for (int64_t d = 0; d < head_dim; ++d) o[d] = MergeValue(m, o[d], po[d]);
    }
  }
}

}  // namespace ringattn
