// The inner loops of the fused training-mode BatchNorm + SiLU op (bn_silu_kernel.cpp), compiled once
// per instruction set.
//
// bn_silu_kernel.cpp includes bn_silu_loops_impl.h for the baseline ISA (at::vec's generic Vectorized,
// scalar libm), bn_silu_kernel_avx2.cpp and bn_silu_kernel_avx512.cpp for AVX2 + FMA and AVX-512 (at::vec's
// Vectorized of that ISA); the kernel picks the one matching PyTorch's own CPU capability at run time, as
// the SimOTA op does (simota_loops.h).
//
// Every loop works on a channels-last block of `rows` rows of `C` floats (row r, channel c at
// x[r * C + c]); per-channel parameters are arrays of C floats. No c10 types cross the ISA boundary.
#pragma once

#include <cstdint>

namespace yolox_fast {
namespace bn_silu_cpu {

struct Loops {
  const char* name;
  // sum[c] += sum_r (x - pivot[c]), sumsq[c] += sum_r (x - pivot[c])^2 (float partials over a few rows,
  // accumulated in double: the shift keeps E[d^2] - E[d]^2 free of cancellation when |mean| >> std)
  void (*stats)(const float* x, int64_t rows, int64_t C, const float* pivot, double* sum, double* sumsq);
  // y = silu(x * alpha[c] + beta[c]), silu(z) = z / (1 + exp(-z)) (PyTorch's formula; exp as in
  // bn_silu_loops_impl.h)
  void (*forward)(const float* x, int64_t rows, int64_t C, const float* alpha, const float* beta, float* y);
  // The SiLU gradient gz = gy * s * (1 + z * (1 - s)) (PyTorch's silu_backward), z = x * alpha[c] + beta[c]
  // (bit for bit the forward's z), s = 1 / (1 + exp(-z)); accumulates sum_gz[c] += sum_r gz and
  // dot[c] += sum_r gz * (x - mean[c]).
  void (*backward_stats)(const float* gy, const float* x, int64_t rows, int64_t C, const float* alpha,
                         const float* beta, const float* mean, double* sum_gz, double* dot);
  // BatchNorm's input gradient gx = (gz - mean_gz[c] - (x - mean[c]) * k[c]) * scale[c], with gz recomputed
  // from gy and x as in backward_stats (reading gy again costs less than writing gz and reading it back:
  // the pass is memory-bound).
  void (*backward_input)(const float* gy, const float* x, int64_t rows, int64_t C, const float* alpha,
                         const float* beta, const float* mean, const float* mean_gz, const float* k,
                         const float* scale, float* gx);
};

// The baseline table (always there), the AVX2 and AVX-512 ones (nullptr when not compiled in).
const Loops& scalar_loops();
const Loops* avx2_loops();
const Loops* avx512_loops();

}  // namespace bn_silu_cpu
}  // namespace yolox_fast
