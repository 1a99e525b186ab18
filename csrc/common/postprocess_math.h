// Scalar arithmetic of the inference postprocess, shared by the CPU and CUDA kernels.
//
// The reference (yolox_fast/ops/reference.py: decode_outputs, box_cxcywh_to_xyxy, postprocess) works in
// the prediction's dtype: every PyTorch op rounds its result to that dtype. The helpers below take
// `scalar_t` (the prediction dtype) and compute in `acc_t` (float for half/bfloat16), rounding back to
// scalar_t after each op the reference rounds after, so that fp16 and bf16 results match too. For float
// and double the rounding is a no-op.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "macros.h"

namespace yolox_fast {

// Round an acc_t value to scalar_t and back (what storing a PyTorch op's result in scalar_t does).
template <typename scalar_t, typename acc_t>
YF_HOST_DEVICE acc_t round_as(acc_t x) {
  return static_cast<acc_t>(static_cast<scalar_t>(x));
}

YF_HOST_DEVICE float yf_exp(float x) { return ::expf(x); }
YF_HOST_DEVICE double yf_exp(double x) { return ::exp(x); }

// torch.sigmoid's formula, 1 / (1 + exp(-x)), rounded to scalar_t. PyTorch's vectorised exp may differ
// from this one in the last bit, so raw (undecoded) inputs match the reference to ~1 ulp, not bitwise.
template <typename scalar_t, typename acc_t>
YF_HOST_DEVICE acc_t sigmoid_as(acc_t x) {
  return round_as<scalar_t, acc_t>(acc_t(1) / (acc_t(1) + yf_exp(-x)));
}

// Corners of a cx, cy, w, h box as box_cxcywh_to_xyxy computes them: cx - w / 2, rounded per op.
template <typename scalar_t, typename acc_t>
YF_HOST_DEVICE void cxcywh_to_xyxy_as(acc_t cx, acc_t cy, acc_t w, acc_t h, acc_t* out) {
  const acc_t hw = round_as<scalar_t, acc_t>(w / acc_t(2));
  const acc_t hh = round_as<scalar_t, acc_t>(h / acc_t(2));
  out[0] = round_as<scalar_t, acc_t>(cx - hw);
  out[1] = round_as<scalar_t, acc_t>(cy - hh);
  out[2] = round_as<scalar_t, acc_t>(cx + hw);
  out[3] = round_as<scalar_t, acc_t>(cy + hh);
}

// decode_outputs for one anchor: xy = (t_xy + grid) * stride, wh = exp(t_wh) * stride, rounded per op.
// t: the 4 raw box values; gx, gy: grid cell (already rounded to scalar_t, as grids.to(dtype) does).
template <typename scalar_t, typename acc_t>
YF_HOST_DEVICE void decode_box_as(acc_t t0, acc_t t1, acc_t t2, acc_t t3, acc_t gx, acc_t gy, acc_t stride,
                                  acc_t* cxcywh) {
  cxcywh[0] = round_as<scalar_t, acc_t>(round_as<scalar_t, acc_t>(t0 + gx) * stride);
  cxcywh[1] = round_as<scalar_t, acc_t>(round_as<scalar_t, acc_t>(t1 + gy) * stride);
  cxcywh[2] = round_as<scalar_t, acc_t>(round_as<scalar_t, acc_t>(yf_exp(t2)) * stride);
  cxcywh[3] = round_as<scalar_t, acc_t>(round_as<scalar_t, acc_t>(yf_exp(t3)) * stride);
}

// Monotone unsigned image of a float: a < b  <=>  key(a) < key(b) for every non-NaN a, b, and
// key(-0) == key(+0) (torch.sort treats them as equal). Used to sort by score with integer compares.
YF_HOST_DEVICE uint32_t float_order_key(float f) {
  f = f + 0.0f;  // -0 -> +0 (needs IEEE semantics: no -ffast-math)
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

YF_HOST_DEVICE uint64_t double_order_key(double f) {
  f = f + 0.0;
  uint64_t u;
  memcpy(&u, &f, sizeof(u));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

}  // namespace yolox_fast
