// RINGATTN_HD marks small inline functions of the shared headers (masks,
// position maps, tile classification) as callable from CUDA device code too,
// so the CPU and CUDA kernels run the very same mask logic. It expands to
// `__host__ __device__` when a CUDA compiler reads the header, and to
// nothing for the host C++ compiler.
#pragma once

#if defined(__CUDACC__)
#define RINGATTN_HD __host__ __device__
#else
#define RINGATTN_HD
#endif
