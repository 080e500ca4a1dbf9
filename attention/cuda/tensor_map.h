// The TMA view of a [B, S, H, D] 16-bit tensor with any strides, as the
// Hopper forward loads it: a 4-d tensor map (d, seq, head, batch;
// innermost first) whose box is [rows][64] -- one 128-byte swizzled panel
// of `rows` sequence positions of one head. Rows past the end of the
// sequence arrive as zeros (the tails of Q and K/V tiles).
//
// TileMapShape is plain data, shared by the host encoding (EncodeTileMap,
// through the driver's cuTensorMapEncodeTiled, reached at run time so that
// nothing links libcuda) and the emulator (ptx_emu.h), which reads it
// directly as its tensor map.
#pragma once

#include <cstdint>

#include "attention/dtype.h"
#include "attention/params.h"

namespace ringattn::cuda {

struct TileMapShape {
  const void* base = nullptr;
  uint64_t dims[4] = {};     // d, seq, head, batch
  uint64_t strides[3] = {};  // bytes from one seq, head, batch index to the next
  uint32_t box[4] = {};      // 64, rows, 1, 1
};

// The map of `base` ([batch, seq, heads, head_dim] elements at strides `s`)
// with boxes of `box_rows` rows. A dimension of extent 1 never moves, so
// its stride is given as 16 bytes (the map wants a non-zero multiple of 16,
// and a caller may pass 0 there).
inline TileMapShape TileMapOf(const void* base, const TensorStrides& s, int64_t batch,
                              int64_t seq, int64_t heads, int64_t head_dim, int box_rows) {
  TileMapShape m;
  m.base = base;
  const int64_t extent[3] = {seq, heads, batch};
  const int64_t stride[3] = {s.seq, s.head, s.batch};
  m.dims[0] = static_cast<uint64_t>(head_dim);
  for (int i = 0; i < 3; ++i) {
    m.dims[i + 1] = static_cast<uint64_t>(extent[i]);
    m.strides[i] = extent[i] == 1 ? 16 : static_cast<uint64_t>(stride[i]) * 2;
  }
  m.box[0] = 64;
  m.box[1] = static_cast<uint32_t>(box_rows);
  m.box[2] = m.box[3] = 1;
  return m;
}

}  // namespace ringattn::cuda

#if !defined(RINGATTN_CUDA_EMULATE)
#include <cuda.h>  // CUtensorMap and its enums (types only)

#include "base/cuda_result.h"

namespace ringattn::cuda {

// Encodes `shape` (16-bit elements of type t) for TMA: 128-byte swizzle,
// out-of-bounds elements read as zero. The driver's cuTensorMapEncodeTiled
// is looked up once through the runtime; a failure comes back as
// cudaErrorInvalidValue naming the call.
CudaResult EncodeTileMap(const TileMapShape& shape, DType t, CUtensorMap* map);

}  // namespace ringattn::cuda
#endif
