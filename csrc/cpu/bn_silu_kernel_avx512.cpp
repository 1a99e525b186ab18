// AVX-512 versions of the fused BatchNorm + SiLU loops (see bn_silu_loops.h); a copy of
// bn_silu_kernel_avx2.cpp with the other instruction set (at::vec needs one ISA per translation unit).
//
// Why: where PyTorch runs its AVX-512 kernels, its silu computes 16 lanes at a time; with 8 the fused
// op lost most of its gain (yolox-nano 416 B=8 stem, 1 thread: forward 5.7 ms with AVX2 against 4.7 + 2.6
// for BatchNorm + SiLU; see bn_silu_kernel.cpp for the figures with AVX-512).
#include "bn_silu_loops.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(YOLOX_FAST_NO_AVX512)
#define YF_BN_SILU_AVX512 1
#endif

#ifdef YF_BN_SILU_AVX512
#pragma GCC diagnostic ignored "-Wunknown-pragmas"  // at::vec's `#pragma unroll`
#pragma GCC diagnostic ignored "-Wpsabi"  // __m256 returns of at::vec's inline helpers, all inside this file
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif
#ifndef CPU_CAPABILITY_AVX512
#define CPU_CAPABILITY_AVX512
#endif
#undef CPU_CAPABILITY
#define CPU_CAPABILITY AVX512
// GCC's target pragma does not define the ISA macros, and sleef.h declares its 16-lane functions
// only under __AVX512F__.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace yolox_fast {
namespace bn_silu_cpu {
namespace avx512 {
#include "bn_silu_loops_impl.h"
const Loops kLoops{"avx512", &stats, &forward, &backward_stats, &backward_input};
}  // namespace avx512
}  // namespace bn_silu_cpu
}  // namespace yolox_fast

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace yolox_fast {
namespace bn_silu_cpu {
// Compiled for the baseline ISA: safe to call before the CPU check.
const Loops* avx512_loops() { return &avx512::kLoops; }
}  // namespace bn_silu_cpu
}  // namespace yolox_fast

#else  // no AVX-512 build

namespace yolox_fast {
namespace bn_silu_cpu {
const Loops* avx512_loops() { return nullptr; }
}  // namespace bn_silu_cpu
}  // namespace yolox_fast

#endif
