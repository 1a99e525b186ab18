// nms, batched_nms and the fused postprocess on the GPU (semantics: yolox_fast/ops/nms.py, postprocess.py).
//
// Pipeline, all on the current stream, no host synchronisation in the fixed-size (max_det > 0) path:
//   1. score kernel: one warp per anchor row: obj * max cls (first argmax, NaN -> no candidate), the
//      threshold, and a 64-bit sort key per candidate slot (score, then the reference's tie order);
//   2. compaction of the candidate slots of each image (ATen cumsum: deterministic slot order);
//   3. sort of each image's keys, descending and stable: one device-wide radix sort for one image, a cub
//      segmented sort for several (float64, single label, class-aware: pre-ordered by (class, anchor) first);
//   4. gather: box corners (float32, as the reference's NMS) and class of the first `cap` candidates;
//   5. bitmask NMS: one 64 x 64 tile per block, bit j of mask[i][w] = box w*64+j (after i, same class)
//      has IoU > thr with box i; tiles past each image's candidate count are skipped on the GPU;
//   6. mask reduction on the GPU (one block per image): greedy scan 64 rows at a time, stops at max_det;
//      the mask never leaves the device;
//   7. output rows [B, max_det, 7] (zero padded) and counts [B].
// Raw input (grids given): the decode is fused into steps 1, 4 and 7 and runs only for candidates.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <limits>
#include <tuple>

#include "../common/box_math.h"
#include "../common/checks.h"
#include "../common/postprocess_math.h"

namespace yolox_fast {
namespace {

constexpr int kTile = 64;  // boxes per mask word
constexpr int64_t kInvalidKey = std::numeric_limits<int64_t>::min();
constexpr int64_t kMaxMaskBytes = int64_t(4) << 30;

// Sort key, larger = better: (score descending, sec ascending). float/half/bf16 scores fit in the high
// 32 bits with the tie-break below; double scores take all 64 bits and ties keep the input order (stable
// sort), which is the tie order by construction (slot layout, or the pre-order of tie_order_kernel).
template <typename acc_t>
__device__ __forceinline__ int64_t make_key(acc_t score, uint32_t sec) {
  uint64_t u;
  if constexpr (std::is_same_v<acc_t, double>) {
    u = double_order_key(score);
  } else {
    u = (uint64_t(float_order_key(score)) << 32) | uint64_t(0xFFFFFFFFu - sec);
  }
  return int64_t(u ^ (uint64_t(1) << 63));  // unsigned order -> signed order
}

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
// 5-6. Bitmask NMS over G independent problems of n[g] boxes in priority order (shared with nms)
// ------------------------------------------------------------------------------------------------

// Tiles (row block, column block >= row block) are spread over gridDim.x blocks per problem; tiles past
// the problem's own count are never visited, so a fixed grid serves any count without a host sync.
__global__ void nms_mask_kernel(const float4* __restrict__ boxes, const int64_t* __restrict__ cls,
                                const int64_t* __restrict__ n_in, int64_t cap, int64_t words, float thr,
                                unsigned long long* __restrict__ mask) {
  const int64_t g = blockIdx.y;
  const int64_t n = std::min<int64_t>(n_in[g], cap);
  const int64_t nb = (n + kTile - 1) / kTile;
  const float4* gb = boxes + g * cap;
  const int64_t* gc = cls == nullptr ? nullptr : cls + g * cap;
  __shared__ float4 sb[kTile];
  __shared__ float sa[kTile];
  __shared__ int64_t sc[kTile];
  for (int64_t t = blockIdx.x; t < nb * nb; t += gridDim.x) {
    const int64_t rb = t / nb, cbk = t % nb;
    if (cbk < rb) continue;  // only boxes after the row's box matter
    const int64_t row0 = rb * kTile, col0 = cbk * kTile;
    const int rows = int(std::min<int64_t>(kTile, n - row0)), cols = int(std::min<int64_t>(kTile, n - col0));
    __syncthreads();  // the previous tile is done with the shared arrays
    if (threadIdx.x < cols) {
      const float4 bx = gb[col0 + threadIdx.x];
      sb[threadIdx.x] = bx;
      sa[threadIdx.x] = (bx.z - bx.x) * (bx.w - bx.y);
      sc[threadIdx.x] = gc == nullptr ? 0 : gc[col0 + threadIdx.x];
    }
    __syncthreads();
    if (threadIdx.x < rows) {
      const int64_t i = row0 + threadIdx.x;
      const float4 bi = gb[i];
      const float ai = (bi.z - bi.x) * (bi.w - bi.y);
      const int64_t ci = gc == nullptr ? 0 : gc[i];
      unsigned long long bits = 0;
      for (int j = (rb == cbk ? threadIdx.x + 1 : 0); j < cols; ++j) {
        const float4 bj = sb[j];
        if (sc[j] == ci && box_iou_nms<float>(bi.x, bi.y, bi.z, bi.w, ai, bj.x, bj.y, bj.z, bj.w, sa[j]) > thr) {
          bits |= 1ull << j;
        }
      }
      mask[(g * cap + i) * words + cbk] = bits;
    }
  }
}

// Greedy reduction of the mask, one block per problem: rows 64 at a time; thread 0 resolves the
// diagonal word (staged in shared memory), then all threads OR the kept rows into later words.
// Writes kept ranks (positions in priority order) to keep[g, :limit] and their number to count[g].
__global__ void nms_reduce_kernel(const unsigned long long* __restrict__ mask, const int64_t* __restrict__ n_in,
                                  int64_t cap, int64_t words, int64_t limit, int32_t* __restrict__ keep,
                                  int64_t* __restrict__ count) {
  extern __shared__ unsigned long long removed[];  // `words` words
  __shared__ unsigned long long diag[kTile];
  __shared__ int s_new[kTile];
  __shared__ int s_nnew, s_cnt;
  __shared__ bool s_done;
  const int64_t g = blockIdx.x;
  const int64_t n = std::min<int64_t>(n_in[g], cap);
  const int64_t nb = (n + kTile - 1) / kTile;
  const unsigned long long* m = mask + g * cap * words;
  for (int64_t w = threadIdx.x; w < nb; w += blockDim.x) removed[w] = 0;
  if (threadIdx.x == 0) {
    s_cnt = 0;
    s_done = limit <= 0;
  }
  __syncthreads();
  for (int64_t rb = 0; rb < nb && !s_done; ++rb) {
    const int rows = int(std::min<int64_t>(kTile, n - rb * kTile));
    if (threadIdx.x < rows) diag[threadIdx.x] = m[(rb * kTile + threadIdx.x) * words + rb];
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long rem = removed[rb];
      int nn = 0;
      for (int i = 0; i < rows && s_cnt + nn < limit; ++i) {
        if (!((rem >> i) & 1ull)) {
          s_new[nn++] = i;
          rem |= diag[i];
        }
      }
      removed[rb] = rem;
      for (int k = 0; k < nn; ++k) keep[g * limit + s_cnt + k] = int32_t(rb * kTile + s_new[k]);
      s_cnt += nn;
      s_nnew = nn;
    }
    __syncthreads();
    const int nn = s_nnew;
    const bool done = s_cnt >= limit;
    for (int64_t w = rb + 1 + threadIdx.x; w < nb; w += blockDim.x) {
      unsigned long long acc = removed[w];
      for (int k = 0; k < nn; ++k) acc |= m[(rb * kTile + s_new[k]) * words + w];
      removed[w] = acc;
    }
    __syncthreads();  // everyone has read s_nnew/s_cnt before thread 0 writes them again
    if (threadIdx.x == 0) s_done = done;
    __syncthreads();
  }
  if (threadIdx.x == 0) count[g] = s_cnt;
}

struct MaskWorkspace {
  at::Tensor mask, keep, count;
};

// Steps 5 and 6 for G problems of at most `cap` boxes (boxes [G, cap] float4, cls [G, cap] or null).
MaskWorkspace run_bitmask_nms(const at::Tensor& boxes, const int64_t* cls, const at::Tensor& n_valid, int64_t G,
                              int64_t cap, float thr, int64_t limit, cudaStream_t stream) {
  const int64_t words = (cap + kTile - 1) / kTile;
  TORCH_CHECK(G * cap * words * 8 <= kMaxMaskBytes, "NMS on the GPU would need a ", G * cap * words * 8 >> 20,
              " MiB suppression mask for ", G, " x ", cap,
              " candidate boxes; lower the candidate count (pre_nms_topk, a higher conf_thre, or max_det=None "
              "for the list output, which sizes it from the actual count)");
  TORCH_CHECK(words * 8 <= 48 * 1024, "NMS on the GPU supports at most ", 48 * 1024 / 8 * kTile,
              " boxes per problem, got ", cap);
  auto opts = boxes.options();
  MaskWorkspace ws;
  ws.mask = at::empty({G, cap, words}, opts.dtype(at::kLong));
  ws.keep = at::empty({G, std::max<int64_t>(limit, 1)}, opts.dtype(at::kInt));
  ws.count = at::empty({G}, opts.dtype(at::kLong));
  if (cap == 0) {
    ws.count.zero_();
    return ws;
  }
  auto* mask = reinterpret_cast<unsigned long long*>(ws.mask.data_ptr<int64_t>());
  const int64_t tiles = words * words;
  const int64_t per_problem = std::max<int64_t>(1, std::min<int64_t>(tiles, 4096 / std::max<int64_t>(G, 1)));
  TORCH_CHECK(G <= 65535, "at most 65535 images per call on the GPU, got ", G);
  const dim3 grid(static_cast<unsigned>(per_problem), static_cast<unsigned>(G));
  nms_mask_kernel<<<grid, kTile, 0, stream>>>(reinterpret_cast<const float4*>(boxes.data_ptr<float>()), cls,
                                              n_valid.data_ptr<int64_t>(), cap, words, thr, mask);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  nms_reduce_kernel<<<unsigned(G), 256, words * 8, stream>>>(mask, n_valid.data_ptr<int64_t>(), cap, words, limit,
                                                             ws.keep.data_ptr<int32_t>(), ws.count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return ws;
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

// Stable descending sort of int64 keys with values of `segments` segments [begin[s], end[s]) within arrays of
// `items` entries. One segment: cub's device-wide radix sort over all `items` (stable; entries past the
// segment's end must hold kInvalidKey so that they sort last; begin/end unused). DeviceSegmentedSort
// would sort a single segment in one thread block.
template <typename value_t>
void sort_pairs_desc(const at::Tensor& keys_in, at::Tensor& keys_out, const at::Tensor& vals_in, at::Tensor& vals_out,
                     int64_t items, int64_t segments, const int32_t* begin, const int32_t* end, cudaStream_t stream) {
  const int64_t* ki = keys_in.data_ptr<int64_t>();
  int64_t* ko = keys_out.data_ptr<int64_t>();
  const value_t* vi = vals_in.data_ptr<value_t>();
  value_t* vo = vals_out.data_ptr<value_t>();
  size_t temp_bytes = 0;
  if (segments == 1) {
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, ki, ko, vi, vo, items, 0, 64,
                                                             stream));
  } else {
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(nullptr, temp_bytes, ki, ko, vi, vo, items,
                                                                       segments, begin, end, stream));
  }
  auto temp = at::empty({int64_t(std::max<size_t>(temp_bytes, 1))}, keys_in.options().dtype(at::kByte));
  if (segments == 1) {
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp.data_ptr(), temp_bytes, ki, ko, vi, vo, items, 0,
                                                             64, stream));
  } else {
    C10_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(temp.data_ptr(), temp_bytes, ki, ko, vi, vo,
                                                                       items, segments, begin, end, stream));
  }
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

// ------------------------------------------------------------------------------------------------
// nms / batched_nms
// ------------------------------------------------------------------------------------------------

template <typename scalar_t>
__global__ void nms_keys_kernel(const scalar_t* __restrict__ scores, int64_t n, int64_t* __restrict__ keys,
                                int32_t* __restrict__ index, int64_t* __restrict__ status) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const acc_t v = static_cast<acc_t>(scores[i]);
  if (v != v) atomicMax(reinterpret_cast<unsigned long long*>(status + 1), 1ull);  // NaN: reported on the host
  keys[i] = make_key<acc_t>(v, uint32_t(i));
  index[i] = int32_t(i);
}

template <typename scalar_t>
__global__ void nms_gather_kernel(const scalar_t* __restrict__ boxes, const int64_t* __restrict__ idxs,
                                  const int32_t* __restrict__ order, int64_t n, float4* __restrict__ out_boxes,
                                  int64_t* __restrict__ out_cls) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  const int64_t i = order[r];
  const scalar_t* b = boxes + 4 * i;
  out_boxes[r] = make_float4(float(b[0]), float(b[1]), float(b[2]), float(b[3]));  // float32 IoU, as the reference
  if (idxs != nullptr) out_cls[r] = idxs[i];
}

at::Tensor batched_nms_cuda_impl(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor* idxs,
                                 double iou_threshold, const char* op) {
  check_nms_args(boxes_in, scores_in, op);
  const c10::cuda::CUDAGuard guard(boxes_in.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t n = boxes_in.size(0);
  auto opts = boxes_in.options();
  if (n == 0) return at::empty({0}, opts.dtype(at::kLong));
  TORCH_CHECK(n < (int64_t(1) << 31), op, ": at most 2^31 - 1 boxes on the GPU, got ", n);
  auto boxes = boxes_in.contiguous();
  auto scores = scores_in.contiguous();
  auto keys = at::empty({n}, opts.dtype(at::kLong));
  auto index = at::empty({n}, opts.dtype(at::kInt));
  auto status = at::zeros({2}, opts.dtype(at::kLong));  // [kept count, NaN seen]: one copy to the host
  const unsigned blocks = unsigned((n + 255) / 256);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "nms_cuda_keys", [&] {
    nms_keys_kernel<scalar_t><<<blocks, 256, 0, stream>>>(scores.data_ptr<scalar_t>(), n, keys.data_ptr<int64_t>(),
                                                          index.data_ptr<int32_t>(), status.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // One segment: a device-wide stable radix sort by (score desc, index asc).
  auto keys_s = at::empty_like(keys);
  auto order = at::empty_like(index);
  sort_pairs_desc<int32_t>(keys, keys_s, index, order, n, 1, nullptr, nullptr, stream);
  auto sorted_boxes = at::empty({n, 4}, opts.dtype(at::kFloat));
  at::Tensor sorted_cls;
  if (idxs != nullptr) sorted_cls = at::empty({n}, opts.dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_cuda_gather", [&] {
    nms_gather_kernel<scalar_t><<<blocks, 256, 0, stream>>>(
        boxes.data_ptr<scalar_t>(), idxs ? idxs->data_ptr<int64_t>() : nullptr, order.data_ptr<int32_t>(), n,
        reinterpret_cast<float4*>(sorted_boxes.data_ptr<float>()), idxs ? sorted_cls.data_ptr<int64_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  auto n_dev = at::full({1}, n, opts.dtype(at::kLong));
  auto ws = run_bitmask_nms(sorted_boxes, idxs ? sorted_cls.data_ptr<int64_t>() : nullptr, n_dev, 1, n,
                            static_cast<float>(iou_threshold), n, stream);
  status.narrow(0, 0, 1).copy_(ws.count);
  auto host = status.cpu();  // the one sync: the output size, and whether a score was NaN
  TORCH_CHECK_VALUE(host[1].item<int64_t>() == 0, op,
                    ": scores contain NaN; NMS needs ordered scores (+-inf are fine)");
  const int64_t kept = host[0].item<int64_t>();
  auto ranks = ws.keep.narrow(1, 0, kept).reshape({kept}).to(at::kLong);
  return order.index_select(0, ranks).to(at::kLong);
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return batched_nms_cuda_impl(boxes, scores, nullptr, iou_threshold, "nms");
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  auto cat = checked_category_ids(idxs, boxes);
  return batched_nms_cuda_impl(boxes, scores, &cat, iou_threshold, "batched_nms");
}

}  // namespace

TORCH_LIBRARY_IMPL(yolox_fast, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
  m.impl("postprocess", &postprocess_cuda);
}

}  // namespace yolox_fast
