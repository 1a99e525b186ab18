// SimOTA assignment on the GPU: four kernels on the current stream, no host sync, fixed-size outputs.
//
//   1. candidates_kernel  (thread per anchor, GTs staged in shared memory): candidate flags;
//   2. bce_sum_kernel     (warp per candidate anchor): S_u = sum_c L1(p_c) (docs/design.md), so no
//                         [G, A, C] tensor exists anywhere;
//   3. select_kernel      (block per (image, GT)): every thread keeps its 10 largest candidate IoUs and
//                         10 cheapest (cost, anchor) pairs while striding over the anchors; 10 rounds
//                         of block-wide selection give dynamic k and the k picks, counted per anchor
//                         with atomics (number of takers, highest taker);
//   4. resolve_kernel     (thread per anchor): an anchor with several takers goes to the argmin of the
//                         cost over ALL real GTs (lowest GT index on ties); writes the outputs.
//
// All arithmetic comes from csrc/common/simota_math.h, as in the CPU op; nvcc runs with --fmad=false
// (setup.py) so products are never fused into additions, like the reference's float32 operations.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "../common/simota_checks.h"
#include "../common/simota_math.h"

namespace yolox_fast {
namespace {

using namespace simota;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ Box<float> pred_box(const float* p, float& area) {
  area = p[2] * p[3];
  return box_from_cxcywh<float>(p[0], p[1], p[2], p[3]);
}

// ---- 1. candidates ---------------------------------------------------------------------------------
__global__ void candidates_kernel(const float* __restrict__ grids, const float* __restrict__ strides,
                                  const float* __restrict__ gt, const bool* __restrict__ gmask,
                                  uint8_t* __restrict__ cand, int64_t A, int64_t G, float rscale, bool center_only) {
  __shared__ float s_gt[kThreads][4];
  __shared__ bool s_real[kThreads];
  const int64_t b = blockIdx.y;
  const int64_t u = blockIdx.x * (int64_t)kThreads + threadIdx.x;
  float x = 0.f, y = 0.f, r = 0.f;
  if (u < A) {
    const float st = strides[u];
    x = anchor_center(grids[2 * u], st);
    y = anchor_center(grids[2 * u + 1], st);
    r = rscale * st;
  }
  bool hit = false;
  for (int64_t g0 = 0; g0 < G; g0 += kThreads) {
    const int64_t gi = g0 + threadIdx.x;
    if (gi < G) {
      const float* q = gt + (b * G + gi) * 4;
      s_gt[threadIdx.x][0] = q[0], s_gt[threadIdx.x][1] = q[1], s_gt[threadIdx.x][2] = q[2], s_gt[threadIdx.x][3] = q[3];
      s_real[threadIdx.x] = gmask[b * G + gi];
    }
    __syncthreads();
    const int n = G - g0 < kThreads ? static_cast<int>(G - g0) : kThreads;
    for (int j = 0; j < n && !hit; ++j)
      if (s_real[j]) hit = pair_geometry(x, y, r, s_gt[j][0], s_gt[j][1], s_gt[j][2], s_gt[j][3], center_only).candidate;
    __syncthreads();
  }
  if (u < A) cand[b * A + u] = hit;
}

// ---- 2. per-anchor BCE sums --------------------------------------------------------------------------
template <typename scalar_t>
__global__ void bce_sum_kernel(const scalar_t* __restrict__ logits, int64_t lsb, int64_t lsa,
                               const float* __restrict__ obj, const uint8_t* __restrict__ cand, float* __restrict__ S,
                               int64_t A, int64_t C) {
  const int64_t b = blockIdx.y;
  const int64_t u = blockIdx.x * (int64_t)kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (u >= A || !cand[b * A + u]) return;  // uniform per warp
  const float so = sigmoidf(obj[b * A + u]);
  const scalar_t* row = logits + b * lsb + u * lsa;
  float s = 0.f;
  for (int64_t c = lane; c < C; c += 32) s = s + bce_target0(joint_score(static_cast<float>(row[c]), so));
  for (int off = 16; off > 0; off >>= 1) s = s + __shfl_down_sync(0xffffffffu, s, off);
  if (lane == 0) S[b * A + u] = s;
}

// ---- 3. per-GT selection -------------------------------------------------------------------------------

// Block-wide best of one (value, index) per thread; `better(v1, i1, t1, v2, i2, t2)` is a strict
// order including the thread id t. Every thread returns the winner's thread id, value and index.
template <typename Better>
__device__ int block_best(float& v, int32_t& i, float sentinel_v, Better better, float* sv, int32_t* si, int* st) {
  int t = threadIdx.x;
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_down_sync(0xffffffffu, v, off);
    const int32_t oi = __shfl_down_sync(0xffffffffu, i, off);
    const int ot = __shfl_down_sync(0xffffffffu, t, off);
    if (better(ov, oi, ot, v, i, t)) v = ov, i = oi, t = ot;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = v, si[warp] = i, st[warp] = t;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? sv[lane] : sentinel_v;
    i = lane < kWarps ? si[lane] : INT32_MAX;
    t = lane < kWarps ? st[lane] : INT32_MAX;
    for (int off = 16; off > 0; off >>= 1) {
      const float ov = __shfl_down_sync(0xffffffffu, v, off);
      const int32_t oi = __shfl_down_sync(0xffffffffu, i, off);
      const int ot = __shfl_down_sync(0xffffffffu, t, off);
      if (better(ov, oi, ot, v, i, t)) v = ov, i = oi, t = ot;
    }
    if (lane == 0) sv[0] = v, si[0] = i, st[0] = t;
  }
  __syncthreads();
  v = sv[0], i = si[0], t = st[0];
  __syncthreads();  // the buffers are reused by the next round
  return t;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) select_kernel(
    const float* __restrict__ pred, const scalar_t* __restrict__ logits, int64_t lsb, int64_t lsa,
    const float* __restrict__ obj, const float* __restrict__ grids, const float* __restrict__ strides,
    const float* __restrict__ gt, const int64_t* __restrict__ gcls, const bool* __restrict__ gmask,
    const uint8_t* __restrict__ cand, const float* __restrict__ S, int* __restrict__ takers, int* __restrict__ owner,
    int64_t A, int64_t G, int64_t C, float rscale, float penalty, bool center_only) {
  __shared__ float sv[kWarps];
  __shared__ int32_t si[kWarps];
  __shared__ int st[kWarps];
  const int64_t pid = blockIdx.x, b = pid / G;
  const int32_t g = static_cast<int32_t>(pid % G);
  if (!gmask[pid]) return;  // uniform per block
  const float* q = gt + pid * 4;
  const float cx = q[0], cy = q[1], w = q[2], h = q[3];
  const Box<float> gb = box_from_cxcywh<float>(cx, cy, w, h);
  const float garea = w * h;
  const int64_t cls_g = gcls[pid];
  CUDA_KERNEL_ASSERT(cls_g >= 0 && cls_g < C);

  // Per thread: the 10 largest candidate IoUs and the 10 cheapest (cost, anchor), anchors ascending.
  float tv[kTopIou];
  int tn = 0;
  float cv[kMaxK];
  int32_t ci[kMaxK];
  int cn = 0;
  for (int64_t u = threadIdx.x; u < A; u += kThreads) {
    const int64_t bi = b * A + u;
    if (!cand[bi]) continue;
    float parea;
    const Box<float> pb = pred_box(pred + bi * 4, parea);
    const float iou = box_iou<float>(gb, garea, pb, parea);
    if (tn < kTopIou || iou > tv[kTopIou - 1]) insert_largest(tv, tn, kTopIou, iou);
    const float s = strides[u];
    const bool geo =
        pair_geometry(anchor_center(grids[2 * u], s), anchor_center(grids[2 * u + 1], s), rscale * s, cx, cy, w, h,
                      center_only).geometry;
    const float pg = joint_score(static_cast<float>(logits[b * lsb + u * lsa + cls_g]), sigmoidf(obj[bi]));
    const float cost = pair_cost(S[bi], pg, iou, geo, penalty);
    if (cn < kMaxK || cost_before(cost, static_cast<int32_t>(u), cv[kMaxK - 1], ci[kMaxK - 1]))
      insert_smallest(cv, ci, cn, kMaxK, cost, static_cast<int32_t>(u));
  }

  // dynamic k: the block's 10 largest IoUs, summed from the largest down
  const auto larger = [](float v1, int32_t, int t1, float v2, int32_t, int t2) {
    return v1 > v2 || (v1 == v2 && t1 < t2);
  };
  float total = 0.f;
  int tp = 0;
  for (int r = 0; r < kTopIou; ++r) {
    float v = tp < tn ? tv[tp] : -INFINITY;
    int32_t unused = 0;
    const int t = block_best(v, unused, -INFINITY, larger, sv, si, st);
    if (t == static_cast<int>(threadIdx.x)) ++tp;
    if (v >= 0.f) total = total + v;  // -inf: fewer than 10 candidates in the image
  }
  const int k = total >= static_cast<float>(kMaxK) ? kMaxK : (total >= 1.f ? static_cast<int>(total) : 1);

  // the k cheapest (cost, anchor) of the block
  const auto cheaper = [](float v1, int32_t i1, int t1, float v2, int32_t i2, int t2) {
    if (i1 == INT32_MAX || i2 == INT32_MAX) return i2 == INT32_MAX && (i1 != INT32_MAX || t1 < t2);
    return cost_before(v1, i1, v2, i2);
  };
  int cp = 0;
  for (int r = 0; r < k; ++r) {
    float v = cp < cn ? cv[cp] : INFINITY;
    int32_t i = cp < cn ? ci[cp] : INT32_MAX;
    const int t = block_best(v, i, INFINITY, cheaper, sv, si, st);
    if (t == static_cast<int>(threadIdx.x)) ++cp;
    if (threadIdx.x == 0 && i != INT32_MAX) {
      atomicAdd(takers + b * A + i, 1);
      atomicMax(owner + b * A + i, g);
    }
  }
}

// ---- 4. conflicts and outputs ------------------------------------------------------------------------
template <typename scalar_t>
__global__ void resolve_kernel(const float* __restrict__ pred, const scalar_t* __restrict__ logits, int64_t lsb,
                               int64_t lsa, const float* __restrict__ obj, const float* __restrict__ grids,
                               const float* __restrict__ strides, const float* __restrict__ gt,
                               const int64_t* __restrict__ gcls, const bool* __restrict__ gmask,
                               const float* __restrict__ S, const int* __restrict__ takers,
                               const int* __restrict__ owner, bool* __restrict__ fg, int64_t* __restrict__ matched,
                               float* __restrict__ miou, int64_t A, int64_t G, int64_t C, float rscale, float penalty,
                               bool center_only) {
  const int64_t b = blockIdx.y;
  const int64_t u = blockIdx.x * (int64_t)kThreads + threadIdx.x;
  if (u >= A) return;
  const int64_t bi = b * A + u;
  const int n = takers[bi];
  if (n == 0) {
    fg[bi] = false, matched[bi] = -1, miou[bi] = 0.f;
    return;
  }
  float parea;
  const Box<float> pb = pred_box(pred + bi * 4, parea);
  int32_t o = owner[bi];
  if (n > 1) {  // contested: argmin over ALL real GTs, lowest GT index on ties
    const float s = strides[u];
    const float x = anchor_center(grids[2 * u], s), y = anchor_center(grids[2 * u + 1], s), r = rscale * s;
    const float so = sigmoidf(obj[bi]);
    const scalar_t* row = logits + b * lsb + u * lsa;
    float best = 0.f;
    int32_t best_g = -1;
    for (int64_t g = 0; g < G; ++g) {
      if (!gmask[b * G + g]) continue;
      const float* q = gt + (b * G + g) * 4;
      const int64_t cls_g = gcls[b * G + g];
      CUDA_KERNEL_ASSERT(cls_g >= 0 && cls_g < C);
      const float iou = box_iou<float>(box_from_cxcywh<float>(q[0], q[1], q[2], q[3]), q[2] * q[3], pb, parea);
      const bool geo = pair_geometry(x, y, r, q[0], q[1], q[2], q[3], center_only).geometry;
      const float cost = pair_cost(S[bi], joint_score(static_cast<float>(row[cls_g]), so), iou, geo, penalty);
      if (best_g < 0 || cost_before(cost, static_cast<int32_t>(g), best, best_g)) best = cost, best_g = g;
    }
    o = best_g;
  }
  const float* q = gt + (b * G + o) * 4;
  fg[bi] = true;
  matched[bi] = o;
  miou[bi] = box_iou<float>(box_from_cxcywh<float>(q[0], q[1], q[2], q[3]), q[2] * q[3], pb, parea);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> simota_assign_cuda(
    const at::Tensor& pred_boxes, const at::Tensor& cls_logits, const at::Tensor& obj_logits, const at::Tensor& grids,
    const at::Tensor& strides, const at::Tensor& gt_boxes, const at::Tensor& gt_classes, const at::Tensor& gt_mask,
    double center_radius, bool center_only, double penalty) {
  const auto [B, A, C, G] = check_simota_inputs(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes,
                                                gt_classes, gt_mask);
  const c10::cuda::CUDAGuard guard(pred_boxes.device());
  const auto opts = pred_boxes.options();
  auto fg = at::empty({B, A}, opts.dtype(at::kBool));
  auto matched = at::empty({B, A}, opts.dtype(at::kLong));
  auto miou = at::empty({B, A}, opts.dtype(at::kFloat));
  if (B == 0 || A == 0) return {fg, matched, miou};
  TORCH_CHECK(B <= 65535, "simota_assign on CUDA supports at most 65535 images, got ", B);

  const auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
  const at::Tensor pb = f32(pred_boxes), ob = f32(obj_logits.reshape({B, A})), gr = f32(grids), st = f32(strides);
  const at::Tensor gtb = f32(gt_boxes), gtc = gt_classes.to(at::kLong).contiguous(), gm = gt_mask.contiguous();
  const at::Tensor cls = cls_logits.stride(2) == 1 ? cls_logits : cls_logits.contiguous();
  auto cand = at::empty({B, A}, opts.dtype(at::kByte));
  auto S = at::empty({B, A}, opts.dtype(at::kFloat));
  auto takers = at::zeros({B, A}, opts.dtype(at::kInt));
  auto owner = at::full({B, A}, -1, opts.dtype(at::kInt));
  const float rscale = static_cast<float>(center_radius), pen = static_cast<float>(penalty);
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 anchor_grid((A + kThreads - 1) / kThreads, B);

  candidates_kernel<<<anchor_grid, kThreads, 0, stream>>>(gr.data_ptr<float>(), st.data_ptr<float>(),
                                                          gtb.data_ptr<float>(), gm.data_ptr<bool>(),
                                                          cand.data_ptr<uint8_t>(), A, G, rscale, center_only);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cls.scalar_type(), "simota_assign_cuda", [&] {
    const scalar_t* lp = cls.data_ptr<scalar_t>();
    const int64_t lsb = cls.stride(0), lsa = cls.stride(1);
    if (G > 0) {
      bce_sum_kernel<scalar_t><<<dim3((A + kWarps - 1) / kWarps, B), kThreads, 0, stream>>>(
          lp, lsb, lsa, ob.data_ptr<float>(), cand.data_ptr<uint8_t>(), S.data_ptr<float>(), A, C);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      select_kernel<scalar_t><<<B * G, kThreads, 0, stream>>>(
          pb.data_ptr<float>(), lp, lsb, lsa, ob.data_ptr<float>(), gr.data_ptr<float>(), st.data_ptr<float>(),
          gtb.data_ptr<float>(), gtc.data_ptr<int64_t>(), gm.data_ptr<bool>(), cand.data_ptr<uint8_t>(),
          S.data_ptr<float>(), takers.data_ptr<int>(), owner.data_ptr<int>(), A, G, C, rscale, pen, center_only);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    resolve_kernel<scalar_t><<<anchor_grid, kThreads, 0, stream>>>(
        pb.data_ptr<float>(), lp, lsb, lsa, ob.data_ptr<float>(), gr.data_ptr<float>(), st.data_ptr<float>(),
        gtb.data_ptr<float>(), gtc.data_ptr<int64_t>(), gm.data_ptr<bool>(), S.data_ptr<float>(),
        takers.data_ptr<int>(), owner.data_ptr<int>(), fg.data_ptr<bool>(), matched.data_ptr<int64_t>(),
        miou.data_ptr<float>(), A, G, C, rscale, pen, center_only);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {fg, matched, miou};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CUDA, m) { m.impl("simota_assign", &simota_assign_cuda); }

}  // namespace yolox_fast
