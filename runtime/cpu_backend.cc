// The CPU KernelBackend: attention/cpu kernels over `num_threads` OpenMP
// threads, host memory.
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "attention/cpu/kernels.h"
#include "attention/merge.h"
#include "runtime/backend.h"

namespace ringattn {
namespace {

class CpuBackend final : public KernelBackend {
 public:
  explicit CpuBackend(int num_threads) : threads_(num_threads < 1 ? 1 : num_threads) {}
  const char* Name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  std::string Describe() const override { return absl::StrCat("cpu: ", threads_, " thread(s)"); }

  absl::Status Forward(const AttnParams& p) override { return cpu::Forward(p, threads_); }
  absl::Status Backward(const AttnParams& p) override { return cpu::Backward(p, threads_); }
  absl::Status Merge(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                     int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim) override {
    MergePartial(acc_out, acc_lse, part_out, part_lse, batch, seqlen, heads, head_dim, threads_);
    return absl::OkStatus();
  }
  absl::Status RowDot(const TensorView& dout, const TensorView& out, float* dsum) override {
    cpu::RowDot(dout.data, BshdStrides(dout), dout.dtype, out.data, BshdStrides(out), out.dtype, dsum,
                out.shape[0], out.shape[1], out.shape[2], out.shape[3], threads_);
    return absl::OkStatus();
  }

  absl::StatusOr<void*> Allocate(int64_t bytes) override {
    // 64-byte aligned; rounded up so aligned_alloc accepts the size.
    const size_t size = static_cast<size_t>((bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, size == 0 ? 64 : size);
    if (p == nullptr) return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    return p;
  }
  void Free(void* ptr) override { std::free(ptr); }
  absl::Status Fill(float* dst, int64_t n, float value) override {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = value;
    return absl::OkStatus();
  }
  absl::Status Add(float* dst, const float* src, int64_t n) override {
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
    return absl::OkStatus();
  }
  absl::Status Pack(const TensorView& src, void* dst) override {
    const int64_t B = src.shape[0], S = src.shape[1], H = src.shape[2], D = src.shape[3];
    const int64_t es = DTypeSize(src.dtype);
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t r = 0; r < B * S; ++r) {
      const int64_t b = r / S, i = r % S;
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(static_cast<char*>(dst) + ((r * H + h) * D) * es,
                    static_cast<const char*>(src.data) +
                        (b * src.strides[0] + i * src.strides[1] + h * src.strides[2]) * es,
                    D * es);
    }
    return absl::OkStatus();
  }
  absl::Status Unpack(const float* src, const TensorView& dst) override {
    if (dst.ndim == 3) {  // lse [B, H, S] fp32
      const int64_t B = dst.shape[0], H = dst.shape[1], S = dst.shape[2];
      float* out = static_cast<float*>(dst.data);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < S; ++i)
            out[b * dst.strides[0] + h * dst.strides[1] + i * dst.strides[2]] = src[(b * H + h) * S + i];
      return absl::OkStatus();
    }
    const int64_t B = dst.shape[0], S = dst.shape[1], H = dst.shape[2], D = dst.shape[3];
#pragma omp parallel for num_threads(threads_) schedule(static)
    for (int64_t r = 0; r < B * S; ++r) {
      const int64_t b = r / S, i = r % S;
      for (int64_t h = 0; h < H; ++h) {
        const float* s = src + (r * H + h) * D;
        const int64_t off = b * dst.strides[0] + i * dst.strides[1] + h * dst.strides[2];
        if (dst.dtype == DType::kFloat32) {
          std::memcpy(static_cast<float*>(dst.data) + off, s, D * sizeof(float));
        } else {
          uint16_t* d = static_cast<uint16_t*>(dst.data) + off;
          for (int64_t x = 0; x < D; ++x) d[x] = FloatToBF16(s[x]);
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  int threads_;
};

}  // namespace

std::unique_ptr<KernelBackend> MakeCpuBackend(int num_threads) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace ringattn
