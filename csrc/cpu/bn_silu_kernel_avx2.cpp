// AVX2 + FMA versions of the fused BatchNorm + SiLU loops (see bn_silu_loops.h).
//
// Compiled for AVX2 (isa_avx2_begin.h), as simota_kernel_avx2.cpp is, so nothing here may run
// before the run-time check in bn_silu_kernel.cpp. Why: at::vec's AVX2 exp runs 8 lanes at a time; the
// generic Vectorized of the baseline build calls scalar libm per lane.
#include "bn_silu_loops.h"

#include "isa.h"

#if defined(YF_X86_ISA_FILES) && !defined(YOLOX_FAST_NO_AVX2)
#define YF_BN_SILU_AVX2 1
#endif

#ifdef YF_BN_SILU_AVX2
#include "isa_avx2_begin.h"

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

#include "isa_end.h"

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
