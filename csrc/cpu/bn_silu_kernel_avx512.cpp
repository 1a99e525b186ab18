// AVX-512 versions of the fused BatchNorm + SiLU loops (see bn_silu_loops.h); a copy of
// bn_silu_kernel_avx2.cpp with the other instruction set (at::vec needs one ISA per translation unit).
//
// Why: where PyTorch runs its AVX-512 kernels, its silu computes 16 lanes at a time; with 8 the fused
// op lost most of its gain (yolox-nano 416 B=8 stem, 1 thread: forward 5.7 ms with AVX2 against 4.7 + 2.6
// for BatchNorm + SiLU; see bn_silu_kernel.cpp for the figures with AVX-512).
#include "bn_silu_loops.h"

#include "isa.h"

#if defined(YF_X86_ISA_FILES) && !defined(YOLOX_FAST_NO_AVX512)
#define YF_BN_SILU_AVX512 1
#endif

#ifdef YF_BN_SILU_AVX512
#include "isa_avx512_begin.h"

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

#include "isa_end.h"

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
