// End of a region opened by isa_avx2_begin.h or isa_avx512_begin.h: later code is baseline ISA again.
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
