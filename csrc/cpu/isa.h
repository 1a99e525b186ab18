// Whether this build has the x86 ISA files (*_avx2.cpp, *_avx512.cpp): an x86-64 target and a compiler
// with GCC's target pragmas. YOLOX_FAST_NO_AVX2 / YOLOX_FAST_NO_AVX512 leave one set out.
#pragma once

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define YF_X86_ISA_FILES 1
#endif
