// TensorView: a non-owning, DLPack-like view (pointer, dtype, device, shape,
// strides in elements). The public API takes these so that training code
// passes its own memory, with any strides, without copies.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attention/dtype.h"

namespace ringattn {

enum class Device : uint8_t { kCpu = 0, kCuda = 1 };

struct TensorView {
  static constexpr int kMaxDims = 4;
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Device device = Device::kCpu;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  int64_t strides[kMaxDims] = {0, 0, 0, 0};

  // A contiguous (row-major) view.
  static TensorView Contiguous(void* data, DType dtype, std::initializer_list<int64_t> dims,
                               Device device = Device::kCpu) {
    TensorView t;
    t.data = data;
    t.dtype = dtype;
    t.device = device;
    t.ndim = static_cast<int>(dims.size());
    int i = 0;
    for (int64_t d : dims) t.shape[i++] = d;
    int64_t s = 1;
    for (int k = t.ndim - 1; k >= 0; --k) {
      t.strides[k] = s;
      s *= t.shape[k];
    }
    return t;
  }

  // Whether the elements are dense in row-major order.
  bool IsContiguous() const {
    int64_t expect = 1;
    for (int d = ndim - 1; d >= 0; --d) {
      if (shape[d] > 1 && strides[d] != expect) return false;
      expect *= shape[d];
    }
    return true;
  }

  std::string ShapeString() const {
    return absl::StrCat("[", absl::StrJoin(shape, shape + ndim, ", "), "]");
  }
};

}  // namespace ringattn
