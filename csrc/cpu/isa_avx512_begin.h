// Start of an AVX-512 region (F, BW, VL, DQ, with AVX2 + FMA): as isa_avx2_begin.h, for *_avx512.cpp
// files; end it with isa_end.h. at::vec then gives its 16-lane Vectorized<float>.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"  // at::vec's `#pragma unroll`
#pragma GCC diagnostic ignored "-Wpsabi"  // __m512 returns of at::vec's inline helpers, all inside the file
// GCC 12's own avx512fintrin.h (_mm512_undefined_* inlined into at::vec) trips this one: a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                             apply_to = function)
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
