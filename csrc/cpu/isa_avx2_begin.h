// Start of an AVX2 + FMA region: include at the top of a *_avx2.cpp file, after its baseline-ISA
// includes, then <ATen/cpu/vec/vec.h> and the code; end it with isa_end.h. Everything in between is
// compiled for AVX2, so none of it may run before the caller's run-time CPU check, and its functions
// belong in an ISA-named namespace (no inline function of another file may get an AVX2 copy).
//
// No include guard: each *_avx2.cpp translation unit includes it once.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"  // at::vec's `#pragma unroll`
#pragma GCC diagnostic ignored "-Wpsabi"  // __m256 returns of at::vec's inline helpers, all inside the file
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
// only under __AVX__ (setup.py builds every file with the same flags, so no -mavx2 here).
#ifndef __AVX__
#define __AVX__ 1
#endif
