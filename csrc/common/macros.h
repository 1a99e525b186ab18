// Qualifiers that let one inline function serve the CPU and the CUDA kernels.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define YF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define YF_HOST_DEVICE inline
#endif
