// The fused postprocess on the GPU (semantics: yolox_fast/ops/postprocess.py).
//
// Pipeline, all on the current stream, no host synchronisation in the fixed-size (max_det > 0) path:
//   1. score kernel: one warp per anchor row: obj * max cls (first argmax, NaN -> no candidate), the
//      threshold, and a 64-bit sort key per candidate slot (score, then the reference's tie order);
//   2. compaction of the candidate slots of each image (ATen cumsum: deterministic slot order);
//   3. sort of each image's keys, descending and stable: one device-wide radix sort for one image, a cub
//      segmented sort for several, 300 images per call (no hidden host sync: bitmask_nms.cuh's
//      sort_pairs_desc) (float64, single label, class-aware: pre-ordered by (class, anchor) first);
//   4. gather: box corners (float32, as the reference's NMS) and class of the first `cap` candidates;
//   5. bitmask NMS (bitmask_nms.cuh, shared with nms): one 64 x 64 tile per block, bit j of mask[i][w] =
//      box w*64+j (after i, same class) has IoU > thr with box i; tiles past each image's count are skipped;
//   6. mask reduction on the GPU (one block per image): greedy scan 64 rows at a time, stops at max_det;
//      the mask never leaves the device;
//   7. output rows [B, max_det, 7] (zero padded) and counts [B].
// Raw input (grids given): the decode is fused into steps 1, 4 and 7 and runs only for candidates.
#include "bitmask_nms.cuh"


namespace yolox_fast {
namespace {

struct PostprocessShape {
  int64_t B, A, S, C, L;  // images, anchors, row stride, classes, candidate slots per image
  bool agnostic, multi;
};

// ------------------------------------------------------------------------------------------------
// 1. Scores and keys
// ------------------------------------------------------------------------------------------------

template <typename scalar_t, bool RAW, bool MULTI>
__global__ void score_kernel(const scalar_t* __restrict__ pred, PostprocessShape sh,
                             at::opmath_type<scalar_t> conf, int64_t* __restrict__ keys,
                             int32_t* __restrict__ flags, int32_t* __restrict__ label) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x & 31;
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= sh.B * sh.A) return;
  const int64_t b = row / sh.A, a = row % sh.A;
  const scalar_t* p = pred + row * sh.S;
  acc_t obj = static_cast<acc_t>(p[4]);
  if (RAW) obj = sigmoid_as<scalar_t, acc_t>(obj);
  // Raw: class scores are sigmoids <= 1, so obj < conf rules the row out without reading it.
  const bool skip = RAW && obj < conf;
  if (!MULTI) {
    acc_t best = -std::numeric_limits<acc_t>::infinity();
    int idx = INT_MAX;
    bool nan = false;
    if (!skip) {
      for (int64_t c = lane; c < sh.C; c += 32) {
        acc_t x = static_cast<acc_t>(p[5 + c]);
        if (RAW) x = sigmoid_as<scalar_t, acc_t>(x);
        if (x != x) nan = true;
        else if (idx == INT_MAX || x > best) {  // lanes visit their classes in increasing order
          best = x;
          idx = int(c);
        }
      }
    }
    for (int off = 16; off > 0; off >>= 1) {  // max, first index among equals (torch.max)
      const acc_t ob = __shfl_down_sync(0xffffffffu, best, off);
      const int oi = __shfl_down_sync(0xffffffffu, idx, off);
      if (oi != INT_MAX && (idx == INT_MAX || ob > best || (ob == best && oi < idx))) {
        best = ob;
        idx = oi;
      }
    }
    nan = __any_sync(0xffffffffu, nan);
    if (lane == 0) {
      const acc_t score = round_as<scalar_t, acc_t>(obj * best);
      const bool valid = !skip && !nan && idx != INT_MAX && score >= conf;  // NaN score fails, as in torch
      const int64_t slot = b * sh.L + a;
      const uint32_t sec = uint32_t(sh.agnostic ? a * sh.C + idx : int64_t(idx) * sh.A + a);
      keys[slot] = valid ? make_key<acc_t>(score, sec) : kInvalidKey;
      flags[slot] = valid;
      label[row] = valid ? idx : -1;
    }
  } else {
    for (int64_t c = lane; c < sh.C; c += 32) {
      bool valid = false;
      acc_t score = 0;
      if (!skip) {
        acc_t x = static_cast<acc_t>(p[5 + c]);
        if (RAW) x = sigmoid_as<scalar_t, acc_t>(x);
        score = round_as<scalar_t, acc_t>(obj * x);
        valid = score >= conf;
      }
      // Slot layout = the tie order, so that a stable sort keeps it for double scores too.
      const int64_t s = sh.agnostic ? a * sh.C + c : c * sh.A + a;
      keys[b * sh.L + s] = valid ? make_key<acc_t>(score, uint32_t(s)) : kInvalidKey;
      flags[b * sh.L + s] = valid;
    }
  }
}

// 2. Compaction: candidate slots of each image to the front of its segment, in slot order.
__global__ void compact_kernel(const int64_t* __restrict__ keys, const int32_t* __restrict__ flags,
                               const int32_t* __restrict__ pos, int64_t B, int64_t L,
                               int64_t* __restrict__ keys_out, int32_t* __restrict__ slots_out,
                               int64_t* __restrict__ n_valid, int32_t* __restrict__ seg_begin,
                               int32_t* __restrict__ seg_end) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * L) return;
  const int64_t b = i / L, s = i % L;
  if (flags[i]) {
    const int64_t dst = b * L + pos[i] - 1;
    keys_out[dst] = keys[i];
    slots_out[dst] = int32_t(s);
  }
  if (s == L - 1) {
    n_valid[b] = pos[i];
    seg_begin[b] = int32_t(b * L);
    seg_end[b] = int32_t(b * L + pos[i]);
  }
}

// 3a. float64, single label, class-aware: slot order is anchor order but ties go by (class, anchor). Key
// ~(class * A + anchor) per compacted candidate (descending = ascending tie order; kInvalidKey past the
// count), sorted first: the stable score sort then keeps that order among equal scores.
__global__ void tie_order_kernel(const int32_t* __restrict__ slots, const int32_t* __restrict__ label,
                                 const int64_t* __restrict__ n_valid, int64_t B, int64_t L, int64_t A,
                                 int64_t* __restrict__ tie_keys) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * L) return;
  const int64_t b = i / L, r = i % L;
  if (r < n_valid[b]) {
    const int64_t a = slots[i];
    tie_keys[i] = ~(int64_t(label[b * A + a]) * A + a);
  } else {
    tie_keys[i] = kInvalidKey;
  }
}

// The anchor (slot) back from a tie key of tie_order_kernel.
__global__ void slots_from_tie_keys_kernel(const int64_t* __restrict__ tie_keys, int64_t items, int64_t A,
                                           int32_t* __restrict__ slots) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= items) return;
  const int64_t k = tie_keys[i];
  slots[i] = k == kInvalidKey ? 0 : int32_t((~k) % A);
}

// Box corners of anchor a as the reference computes them (decoded first when raw), in acc_t.
template <typename scalar_t>
__device__ __forceinline__ void anchor_box(const scalar_t* __restrict__ row, const float* __restrict__ grids,
                                           const float* __restrict__ strides, int64_t a,
                                           at::opmath_type<scalar_t>* xyxy) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t b[4] = {acc_t(row[0]), acc_t(row[1]), acc_t(row[2]), acc_t(row[3])};
  if (grids != nullptr) {
    const acc_t gx = round_as<scalar_t, acc_t>(grids[2 * a]);
    const acc_t gy = round_as<scalar_t, acc_t>(grids[2 * a + 1]);
    const acc_t s = round_as<scalar_t, acc_t>(strides[a]);
    acc_t d[4];
    decode_box_as<scalar_t, acc_t>(b[0], b[1], b[2], b[3], gx, gy, s, d);
    for (int k = 0; k < 4; ++k) b[k] = d[k];
  }
  cxcywh_to_xyxy_as<scalar_t, acc_t>(b[0], b[1], b[2], b[3], xyxy);
}

// 4. The first min(n_valid, cap) sorted candidates of each image: float32 corners, class, anchor.
template <typename scalar_t>
__global__ void gather_kernel(const scalar_t* __restrict__ pred, PostprocessShape sh,
                              const float* __restrict__ grids, const float* __restrict__ strides,
                              const int32_t* __restrict__ slots, const int32_t* __restrict__ label,
                              const int64_t* __restrict__ n_valid, int64_t cap, float4* __restrict__ boxes,
                              int64_t* __restrict__ cls, int32_t* __restrict__ anchor) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= sh.B * cap) return;
  const int64_t b = i / cap, r = i % cap;
  if (r >= n_valid[b]) return;
  const int64_t s = slots[b * sh.L + r];
  int64_t a, c;
  if (!sh.multi) {
    a = s;
    c = label[b * sh.A + a];
  } else if (sh.agnostic) {
    a = s / sh.C;
    c = s % sh.C;
  } else {
    a = s % sh.A;
    c = s / sh.A;
  }
  acc_t xyxy[4];
  anchor_box(pred + (b * sh.A + a) * sh.S, grids, strides, a, xyxy);
  boxes[i] = make_float4(float(xyxy[0]), float(xyxy[1]), float(xyxy[2]), float(xyxy[3]));
  cls[i] = c;
  anchor[i] = int32_t(a);
}

// ------------------------------------------------------------------------------------------------
// 7. Output rows
// ------------------------------------------------------------------------------------------------

template <typename scalar_t>
__global__ void write_rows_kernel(const scalar_t* __restrict__ pred, PostprocessShape sh,
                                  const float* __restrict__ grids, const float* __restrict__ strides,
                                  const int32_t* __restrict__ keep, const int64_t* __restrict__ kept,
                                  int64_t limit, const int64_t* __restrict__ cls, const int32_t* __restrict__ anchor,
                                  int64_t cap, int64_t M, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= sh.B * M) return;
  const int64_t b = i / M, k = i % M;
  scalar_t* o = out + i * 7;
  if (k >= kept[b]) {
    for (int j = 0; j < 7; ++j) o[j] = scalar_t(0);
    return;
  }
  const int64_t r = keep[b * limit + k];
  const int64_t a = anchor[b * cap + r], c = cls[b * cap + r];
  const scalar_t* row = pred + (b * sh.A + a) * sh.S;
  acc_t xyxy[4];
  anchor_box(row, grids, strides, a, xyxy);
  for (int j = 0; j < 4; ++j) o[j] = static_cast<scalar_t>(xyxy[j]);
  if (grids != nullptr) {
    o[4] = static_cast<scalar_t>(sigmoid_as<scalar_t, acc_t>(acc_t(row[4])));
    o[5] = static_cast<scalar_t>(sigmoid_as<scalar_t, acc_t>(acc_t(row[5 + c])));
  } else {
    o[4] = row[4];
    o[5] = row[5 + c];
  }
  o[6] = static_cast<scalar_t>(acc_t(c));
}

template <typename scalar_t, bool RAW, bool MULTI>
void launch_score(const at::Tensor& pred, const PostprocessShape& sh, double conf, at::Tensor& keys, at::Tensor& flags,
                  at::Tensor& label, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = sh.B * sh.A;
  const int threads = 256;  // 8 rows (warps) per block
  const int64_t blocks = (rows * 32 + threads - 1) / threads;
  score_kernel<scalar_t, RAW, MULTI><<<unsigned(blocks), threads, 0, stream>>>(
      pred.data_ptr<scalar_t>(), sh, round_as<scalar_t, acc_t>(acc_t(conf)), keys.data_ptr<int64_t>(),
      flags.data_ptr<int32_t>(), label.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> postprocess_cuda(const at::Tensor& prediction, int64_t num_classes,
                                                    double conf_thre, double nms_thre, bool class_agnostic,
                                                    bool multi_label, int64_t pre_nms_topk, int64_t max_det,
                                                    const std::optional<at::Tensor>& grids,
                                                    const std::optional<at::Tensor>& strides) {
  check_postprocess_args(prediction, num_classes, grids, strides);
  const c10::cuda::CUDAGuard guard(prediction.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  PostprocessShape sh;
  sh.B = prediction.size(0);
  sh.A = prediction.size(1);
  sh.C = num_classes;
  sh.agnostic = class_agnostic;
  sh.multi = multi_label;
  sh.L = multi_label ? sh.A * sh.C : sh.A;
  TORCH_CHECK(sh.A * sh.C < (int64_t(1) << 32), "anchors x classes must be < 2^32, got ", sh.A, " x ", sh.C);
  TORCH_CHECK(sh.B * sh.L < (int64_t(1) << 31), "images x candidate slots must be < 2^31 on the GPU, got ", sh.B,
              " x ", sh.L);
  at::Tensor g, s;
  if (grids.has_value()) {
    g = grids->to(at::kFloat).contiguous();
    s = strides->to(at::kFloat).contiguous();
  }
  auto pred = prediction.contiguous();
  sh.S = pred.size(2);
  auto opts = pred.options();
  const int64_t M_fixed = max_det;
  if (sh.B == 0 || sh.L == 0) {
    const int64_t M = std::max<int64_t>(M_fixed, 0);
    return {at::zeros({sh.B, M, 7}, opts), at::zeros({sh.B}, opts.dtype(at::kLong))};
  }

  // 1-3: keys, compaction, per-image sort.
  auto keys = at::empty({sh.B, sh.L}, opts.dtype(at::kLong));
  auto flags = at::empty({sh.B, sh.L}, opts.dtype(at::kInt));
  auto label = at::empty({sh.B, sh.A}, opts.dtype(at::kInt));
  const float* gp = g.defined() ? g.data_ptr<float>() : nullptr;
  const float* sp = s.defined() ? s.data_ptr<float>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "postprocess_cuda_score", [&] {
    if (gp && multi_label) launch_score<scalar_t, true, true>(pred, sh, conf_thre, keys, flags, label, stream);
    else if (gp) launch_score<scalar_t, true, false>(pred, sh, conf_thre, keys, flags, label, stream);
    else if (multi_label) launch_score<scalar_t, false, true>(pred, sh, conf_thre, keys, flags, label, stream);
    else launch_score<scalar_t, false, false>(pred, sh, conf_thre, keys, flags, label, stream);
  });
  auto pos = at::cumsum(flags, 1, at::kInt);
  // One image: the radix sort takes the whole row, so the slots past the count must sort last.
  auto keys_c = sh.B == 1 ? at::full_like(keys, kInvalidKey) : at::empty_like(keys);
  auto slots_c = at::empty({sh.B, sh.L}, opts.dtype(at::kInt));
  auto n_valid = at::empty({sh.B}, opts.dtype(at::kLong));
  auto seg = at::empty({2, sh.B}, opts.dtype(at::kInt));
  {
    const int64_t items = sh.B * sh.L;
    compact_kernel<<<unsigned((items + 255) / 256), 256, 0, stream>>>(
        keys.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), pos.data_ptr<int32_t>(), sh.B, sh.L,
        keys_c.data_ptr<int64_t>(), slots_c.data_ptr<int32_t>(), n_valid.data_ptr<int64_t>(), seg.data_ptr<int32_t>(),
        seg.data_ptr<int32_t>() + sh.B);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const int32_t* seg_begin = seg.data_ptr<int32_t>();
  const int32_t* seg_end = seg_begin + sh.B;
  const int64_t items = sh.B * sh.L;
  if (pred.scalar_type() == at::kDouble && !multi_label && !class_agnostic) {
    // float64 keys have no room for the tie-break: pre-order the candidates by (class, anchor).
    auto tie = at::empty_like(keys);
    tie_order_kernel<<<unsigned((items + 255) / 256), 256, 0, stream>>>(
        slots_c.data_ptr<int32_t>(), label.data_ptr<int32_t>(), n_valid.data_ptr<int64_t>(), sh.B, sh.L, sh.A,
        tie.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto tie_s = at::empty_like(tie);
    auto keys_pre = sh.B == 1 ? at::full_like(keys, kInvalidKey) : at::empty_like(keys);
    sort_pairs_desc<int64_t>(tie, tie_s, keys_c, keys_pre, items, sh.B, seg_begin, seg_end, stream);
    slots_from_tie_keys_kernel<<<unsigned((items + 255) / 256), 256, 0, stream>>>(
        tie_s.data_ptr<int64_t>(), items, sh.A, slots_c.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    keys_c = keys_pre;
  }
  auto keys_s = at::empty_like(keys);  // `keys` is no longer needed after the sort input is built
  auto slots_s = at::empty_like(slots_c);
  sort_pairs_desc<int32_t>(keys_c, keys_s, slots_c, slots_s, items, sh.B, seg_begin, seg_end, stream);

  // Candidate capacity per image. Fixed size (max_det > 0): every slot or pre_nms_topk, no sync.
  // max_det <= 0 (the list output, which syncs anyway): the actual largest count.
  int64_t cap = pre_nms_topk > 0 ? std::min(pre_nms_topk, sh.L) : sh.L;
  if (M_fixed <= 0) cap = std::min(cap, n_valid.max().item<int64_t>());
  const int64_t limit = M_fixed > 0 ? std::min(M_fixed, cap) : cap;

  // 4: gather the candidates.
  auto cand_boxes = at::empty({sh.B, std::max<int64_t>(cap, 1), 4}, opts.dtype(at::kFloat));
  auto cand_cls = at::empty({sh.B, std::max<int64_t>(cap, 1)}, opts.dtype(at::kLong));
  auto cand_anchor = at::empty({sh.B, std::max<int64_t>(cap, 1)}, opts.dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "postprocess_cuda_gather", [&] {
    const int64_t items = sh.B * cap;
    if (items > 0) {
      gather_kernel<scalar_t><<<unsigned((items + 255) / 256), 256, 0, stream>>>(
          pred.data_ptr<scalar_t>(), sh, gp, sp, slots_s.data_ptr<int32_t>(), label.data_ptr<int32_t>(),
          n_valid.data_ptr<int64_t>(), cap, reinterpret_cast<float4*>(cand_boxes.data_ptr<float>()),
          cand_cls.data_ptr<int64_t>(), cand_anchor.data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });

  // 5-6: bitmask NMS (class-aware: classes compared in the mask kernel).
  auto ws = run_bitmask_nms(cand_boxes, class_agnostic ? nullptr : cand_cls.data_ptr<int64_t>(), n_valid, sh.B, cap,
                            static_cast<float>(nms_thre), limit, stream);

  // 7: rows.
  const int64_t M = M_fixed > 0 ? M_fixed : limit;
  auto out = at::empty({sh.B, M, 7}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "postprocess_cuda_rows", [&] {
    const int64_t items = sh.B * M;
    if (items > 0) {
      write_rows_kernel<scalar_t><<<unsigned((items + 255) / 256), 256, 0, stream>>>(
          pred.data_ptr<scalar_t>(), sh, gp, sp, ws.keep.data_ptr<int32_t>(), ws.count.data_ptr<int64_t>(),
          std::max<int64_t>(limit, 1), cand_cls.data_ptr<int64_t>(), cand_anchor.data_ptr<int32_t>(),
          std::max<int64_t>(cap, 1), M, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  if (M_fixed <= 0) {  // data-dependent size: trim to the largest count (this path syncs anyway)
    const int64_t m = sh.B > 0 ? ws.count.max().item<int64_t>() : 0;
    out = out.narrow(1, 0, m).contiguous();
  }
  return {out, ws.count};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CUDA, m) {
  m.impl("postprocess", &postprocess_cuda);
}

}  // namespace yolox_fast
