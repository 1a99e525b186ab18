// Training-mode BatchNorm2d followed by SiLU, fused, on the CPU (channels-last float32).
//
// Why: in a CPU training step of YOLOX every BaseConv is conv -> BatchNorm -> SiLU, and the two
// memory-bound layers after each conv cost as much as a third of the step. Unfused, the forward
// writes the BatchNorm output, reads it for SiLU, (with inplace SiLU) copies it for autograd, and
// writes the SiLU output; the backward runs silu_backward and batch_norm_backward as separate passes.
// Fused, the forward reads x twice (statistics, then y = silu(x * alpha + beta)) and writes y once;
// only x is kept for the backward, which recomputes z = x * alpha + beta and makes two passes. The
// measured gain is in yolox_fast/ops/batchnorm_silu.py.
//
// Semantics are nn.BatchNorm2d(training) + nn.SiLU: batch statistics over N, H, W (biased variance
// for normalising, unbiased for running_var), running statistics updated in place with `momentum`.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

#include "bn_silu_loops.h"

namespace yolox_fast {
namespace bn_silu_cpu {
namespace scalar {
#include "bn_silu_loops_impl.h"
const Loops kLoops{"scalar", &stats, &forward, &backward_stats, &backward_input};
}  // namespace scalar

const Loops& scalar_loops() { return scalar::kLoops; }
}  // namespace bn_silu_cpu

namespace {

using bn_silu_cpu::Loops;

// The loops of the ISA PyTorch itself runs (at::get_cpu_capability: AVX512, AVX2 or default, which
// ATEN_CPU_CAPABILITY overrides, e.g. to test the scalar loops), when this CPU has it.
const Loops& pick_loops() {
  static const Loops* chosen = [] {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    const std::string cap = at::get_cpu_capability();
    const Loops* avx512 = bn_silu_cpu::avx512_loops();
    if (avx512 != nullptr && cap == "AVX512" && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return avx512;
    const Loops* avx2 = bn_silu_cpu::avx2_loops();
    if (avx2 != nullptr && (cap == "AVX2" || cap == "AVX512") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
      return avx2;
#endif
    return &bn_silu_cpu::scalar_loops();
  }();
  return *chosen;
}

void check_channel_vector(const at::Tensor& t, const char* name, int64_t channels) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == channels, "batch_norm_silu: ", name, " must be [C] with C = ",
                    channels, ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat, "batch_norm_silu: ", name, " must be float32, got ",
                    t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), "batch_norm_silu: ", name, " must be on the CPU, got ", t.device());
  // The loops read (and the running statistics are written) as C consecutive floats.
  TORCH_CHECK_VALUE(t.is_contiguous(), "batch_norm_silu: ", name, " must be contiguous, got strides ", t.strides());
}

// x: [N, C, H, W] float32 in channels-last memory; returns C.
int64_t check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 4, "batch_norm_silu: ", name, " must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat, "batch_norm_silu: ", name, " must be float32, got ",
                    x.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu(), "batch_norm_silu: ", name, " must be on the CPU, got ", x.device());
  TORCH_CHECK_VALUE(x.is_contiguous(at::MemoryFormat::ChannelsLast), "batch_norm_silu: ", name,
                    " must be in channels_last memory format (x.contiguous(memory_format=torch.channels_last))");
  return x.size(1);
}

// Runs fn(rows_begin, rows_end, thread) over the M rows on PyTorch's intra-op threads; `thread` indexes
// the caller's per-thread accumulators (< at::get_num_threads()).
template <typename Fn>
void for_row_blocks(int64_t rows, int64_t channels, const Fn& fn) {
  // ~32K elements per task: large enough to amortise the dispatch, small enough to balance 2-64 threads.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(channels, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { fn(begin, end, at::get_thread_num()); });
}

// Per-thread double accumulators [threads, C], summed into [C].
std::vector<double> reduce_threads(const std::vector<double>& parts, int64_t threads, int64_t channels) {
  std::vector<double> total(channels, 0.0);
  for (int64_t t = 0; t < threads; ++t)
    for (int64_t c = 0; c < channels; ++c) total[c] += parts[t * channels + c];
  return total;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_silu_train_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                                         const at::Tensor& bias,
                                                                         at::Tensor& running_mean,
                                                                         at::Tensor& running_var, double momentum,
                                                                         double eps) {
  const int64_t C = check_input(x, "x");
  check_channel_vector(weight, "weight", C);
  check_channel_vector(bias, "bias", C);
  check_channel_vector(running_mean, "running_mean", C);
  check_channel_vector(running_var, "running_var", C);
  const int64_t M = x.numel() / std::max<int64_t>(C, 1);
  TORCH_CHECK_VALUE(M > 1, "batch_norm_silu: expected more than 1 value per channel when training, got input ",
                    x.sizes());
  const Loops& loops = pick_loops();
  const float* xp = x.data_ptr<float>();
  const int64_t threads = at::get_num_threads();

  // Statistics: shifted sums (pivot = the first row) in double.
  std::vector<float> pivot(xp, xp + C);
  std::vector<double> sums(threads * C, 0.0), squares(threads * C, 0.0);
  for_row_blocks(M, C, [&](int64_t begin, int64_t end, int64_t t) {
    loops.stats(xp + begin * C, end - begin, C, pivot.data(), sums.data() + t * C, squares.data() + t * C);
  });
  const std::vector<double> sum = reduce_threads(sums, threads, C), sumsq = reduce_threads(squares, threads, C);

  at::Tensor mean = at::empty({C}, x.options()), invstd = at::empty({C}, x.options());
  std::vector<float> alpha(C), beta(C);
  float *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
  float *rm = running_mean.data_ptr<float>(), *rv = running_var.data_ptr<float>();
  const float *wp = weight.data_ptr<float>(), *bp = bias.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double shifted_mean = sum[c] / M;
    const double var = std::max(sumsq[c] / M - shifted_mean * shifted_mean, 0.0);  // biased
    mp[c] = static_cast<float>(pivot[c] + shifted_mean);
    ip[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
    alpha[c] = ip[c] * wp[c];
    beta[c] = bp[c] - mp[c] * alpha[c];
    rm[c] = static_cast<float>(momentum * mp[c] + (1.0 - momentum) * rm[c]);
    rv[c] = static_cast<float>(momentum * (var * M / (M - 1)) + (1.0 - momentum) * rv[c]);
  }

  at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  float* yp = y.data_ptr<float>();
  for_row_blocks(M, C, [&](int64_t begin, int64_t end, int64_t) {
    loops.forward(xp + begin * C, end - begin, C, alpha.data(), beta.data(), yp + begin * C);
  });
  return {y, mean, invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_silu_backward_cpu(const at::Tensor& grad_y_in,
                                                                            const at::Tensor& x,
                                                                            const at::Tensor& weight,
                                                                            const at::Tensor& bias,
                                                                            const at::Tensor& mean,
                                                                            const at::Tensor& invstd) {
  const int64_t C = check_input(x, "x");
  TORCH_CHECK_VALUE(grad_y_in.sizes() == x.sizes(), "batch_norm_silu: grad_y must have the shape of x ", x.sizes(),
                    ", got ", grad_y_in.sizes());
  for (const auto& [t, name] : {std::pair{&weight, "weight"}, {&bias, "bias"}, {&mean, "mean"}, {&invstd, "invstd"}})
    check_channel_vector(*t, name, C);
  const at::Tensor grad_y = grad_y_in.contiguous(at::MemoryFormat::ChannelsLast);
  check_input(grad_y, "grad_y");
  const int64_t M = x.numel() / std::max<int64_t>(C, 1);
  const Loops& loops = pick_loops();
  const float *xp = x.data_ptr<float>(), *gyp = grad_y.data_ptr<float>();
  const float *wp = weight.data_ptr<float>(), *bp = bias.data_ptr<float>();
  const float *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
  std::vector<float> alpha(C), beta(C);
  for (int64_t c = 0; c < C; ++c) {  // exactly as in the forward, so z is the forward's z bit for bit
    alpha[c] = ip[c] * wp[c];
    beta[c] = bp[c] - mp[c] * alpha[c];
  }
  // Pass 1: the SiLU gradient gz (into grad_x) and its per-channel sums.
  at::Tensor grad_x = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  float* gxp = grad_x.data_ptr<float>();
  const int64_t threads = at::get_num_threads();
  std::vector<double> sums(threads * C, 0.0), dots(threads * C, 0.0);
  for_row_blocks(M, C, [&](int64_t begin, int64_t end, int64_t t) {
    loops.backward_stats(gyp + begin * C, xp + begin * C, end - begin, C, alpha.data(), beta.data(), mp,
                         sums.data() + t * C, dots.data() + t * C);
  });
  const std::vector<double> sum_gz = reduce_threads(sums, threads, C), dot = reduce_threads(dots, threads, C);

  // Pass 2: BatchNorm's input gradient, in place over gz.
  at::Tensor grad_weight = at::empty({C}, weight.options()), grad_bias = at::empty({C}, bias.options());
  float *gwp = grad_weight.data_ptr<float>(), *gbp = grad_bias.data_ptr<float>();
  std::vector<float> mean_gz(C), k(C), scale(C);
  for (int64_t c = 0; c < C; ++c) {
    const double inv = ip[c];
    mean_gz[c] = static_cast<float>(sum_gz[c] / M);
    k[c] = static_cast<float>(dot[c] * inv * inv / M);
    scale[c] = static_cast<float>(inv * wp[c]);
    gwp[c] = static_cast<float>(dot[c] * inv);
    gbp[c] = static_cast<float>(sum_gz[c]);
  }
  for_row_blocks(M, C, [&](int64_t begin, int64_t end, int64_t) {
    loops.backward_input(gyp + begin * C, xp + begin * C, end - begin, C, alpha.data(), beta.data(), mp,
                         mean_gz.data(), k.data(), scale.data(), gxp + begin * C);
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CPU, m) {
  m.impl("batch_norm_silu_train", &batch_norm_silu_train_cpu);
  m.impl("batch_norm_silu_backward", &batch_norm_silu_backward_cpu);
}

}  // namespace yolox_fast
