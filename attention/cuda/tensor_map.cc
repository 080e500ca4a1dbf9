// EncodeTileMap (tensor_map.h): the driver's cuTensorMapEncodeTiled,
// reached through the runtime's entry-point query, so that the library
// links libcudart only (the driver it finds at run time is the one the
// runtime uses).
#include "attention/cuda/tensor_map.h"

#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

namespace ringattn::cuda {

CudaResult EncodeTileMap(const TileMapShape& shape, DType t, CUtensorMap* map) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  static cudaError_t lookup = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                     cudaEnableDefault, &found);
    if (e == cudaSuccess && found != cudaDriverEntryPointSuccess) e = cudaErrorNotSupported;
    encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    return e;
  }();
  if (lookup != cudaSuccess) {
    return RINGATTN_CUDA_RESULT(lookup, "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled)");
  }
  const cuuint64_t dims[4] = {shape.dims[0], shape.dims[1], shape.dims[2], shape.dims[3]};
  const cuuint64_t strides[3] = {shape.strides[0], shape.strides[1], shape.strides[2]};
  const cuuint32_t box[4] = {shape.box[0], shape.box[1], shape.box[2], shape.box[3]};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUresult r = encode(
      map,
      t == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      const_cast<void*>(shape.base), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return RINGATTN_CUDA_RESULT(cudaErrorInvalidValue, "cuTensorMapEncodeTiled");
  return CudaResult{};
}

}  // namespace ringattn::cuda
