// AVX2 + FMA versions of the fused BatchNorm + SiLU loops (see bn_silu_loops.h).
//
// Compiled for AVX2 through the pragma below, as simota_kernel_avx2.cpp is, so nothing here may run
// before the run-time check in bn_silu_kernel.cpp. Why: at::vec's AVX2 exp (Sleef) is what PyTorch's
// own silu uses; the generic Vectorized of the baseline build calls scalar libm per lane.
#include "bn_silu_loops.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(YOLOX_FAST_NO_AVX2)
#define YF_BN_SILU_AVX2 1
#endif

#ifdef YF_BN_SILU_AVX2
#pragma GCC diagnostic ignored "-Wunknown-pragmas"  // at::vec's `#pragma unroll`
#pragma GCC diagnostic ignored "-Wpsabi"  // __m256 returns of at::vec's inline helpers, all inside this file
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#ifndef CPU_CAPABILITY_AVX2
#define CPU_CAPABILITY_AVX2
#endif
#undef CPU_CAPABILITY
#define CPU_CAPABILITY AVX2
// GCC's target pragma does not define the ISA macros, and sleef.h declares its 8-lane functions
// only under __AVX__.
#ifndef __AVX__
#define __AVX__ 1
#endif

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace yolox_fast {
namespace bn_silu_cpu {
namespace avx2 {
#include "bn_silu_loops_impl.h"
const Loops kLoops{"avx2", &stats, &forward, &backward_stats, &backward_input};
}  // namespace avx2
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
const Loops* avx2_loops() { return &avx2::kLoops; }
}  // namespace bn_silu_cpu
}  // namespace yolox_fast

#else  // no AVX2 build

namespace yolox_fast {
namespace bn_silu_cpu {
const Loops* avx2_loops() { return nullptr; }
}  // namespace bn_silu_cpu
}  // namespace yolox_fast

#endif
