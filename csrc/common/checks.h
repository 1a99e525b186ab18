// Argument rules of the box ops (pairwise_iou, nms, batched_nms, postprocess), one per op.
//
// The only copy of each rule: the CPU and CUDA kernels call it first, and csrc/yolox_fast.cpp exposes it as
// torch.ops.yolox_fast.check_<op>_args, which the Python wrappers (yolox_fast/ops/arg_checks.py) run for the
// torch, reference and Triton backends too. So the same bad input gives the same ValueError, naming the
// argument, whatever the backend. Only shapes, dtypes and devices: nothing here reads tensor data.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace yolox_fast {

inline void check_boxes(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) == 4, name, " must be [N, 4], got ", t.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), name, " must be floating point, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* name_a, const at::Tensor& b, const char* name_b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), name_a, " is on ", a.device(), " but ", name_b, " is on ", b.device());
}

// pairwise_iou: boxes1 [N, 4] and boxes2 [M, 4], floating point, one dtype, one device.
inline void check_pairwise_iou_args(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_boxes(boxes1, "boxes1");
  check_boxes(boxes2, "boxes2");
  check_same_device(boxes1, "boxes1", boxes2, "boxes2");
  TORCH_CHECK_VALUE(boxes1.scalar_type() == boxes2.scalar_type(), "boxes1 (", boxes1.scalar_type(), ") and boxes2 (",
                    boxes2.scalar_type(), ") must have the same dtype");
}

// nms / batched_nms (op names the caller in messages): boxes [N, 4] and scores [N], floating point, one dtype,
// one device.
inline void check_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const char* op) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be [N, 4], got ", boxes.sizes());
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0), op, ": scores must be [N] with N = ",
                    boxes.size(0), " (boxes is ", boxes.sizes(), "), got ", scores.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(boxes.scalar_type()) && boxes.scalar_type() == scores.scalar_type(), op,
                    ": boxes and scores must have the same floating-point dtype, got ", boxes.scalar_type(), " and ",
                    scores.scalar_type());
  TORCH_CHECK_VALUE(boxes.device() == scores.device(), op, ": boxes is on ", boxes.device(), " but scores is on ",
                    scores.device());
}

// batched_nms category ids: integer [N] on the boxes' device.
inline void check_category_ids(const at::Tensor& idxs, const at::Tensor& boxes) {
  TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), "batched_nms: idxs must be [N] with N = ",
                    boxes.size(0), ", got ", idxs.sizes());
  TORCH_CHECK_VALUE(!at::isFloatingType(idxs.scalar_type()) && !at::isComplexType(idxs.scalar_type()),
                    "batched_nms: idxs must be an integer tensor, got ", idxs.scalar_type(),
                    " (yolox_fast.ops.batched_nms maps float category ids to integers first)");
  TORCH_CHECK_VALUE(idxs.device() == boxes.device(), "batched_nms: idxs is on ", idxs.device(), " but boxes is on ",
                    boxes.device());
}

// The checked category ids as the kernels take them: int64, contiguous.
inline at::Tensor checked_category_ids(const at::Tensor& idxs, const at::Tensor& boxes) {
  check_category_ids(idxs, boxes);
  return idxs.to(at::kLong).contiguous();
}

// postprocess: prediction [B, A, 5 + C] floating point; grids [A, 2] and strides [A] on its device, given together
// (raw input) or not at all.
inline void check_postprocess_args(const at::Tensor& prediction, int64_t num_classes,
                                   const std::optional<at::Tensor>& grids, const std::optional<at::Tensor>& strides) {
  TORCH_CHECK_VALUE(num_classes >= 1, "num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK_VALUE(prediction.dim() == 3 && prediction.size(2) >= 5 + num_classes, "prediction must be [B, A, 5 + ",
                    num_classes, "], got ", prediction.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(prediction.scalar_type()), "prediction must be floating point, got ",
                    prediction.scalar_type());
  TORCH_CHECK_VALUE(grids.has_value() == strides.has_value(), "give both grids and strides (raw input) or neither");
  if (!grids.has_value()) return;
  const int64_t A = prediction.size(1);
  TORCH_CHECK_VALUE(grids->dim() == 2 && grids->size(0) == A && grids->size(1) == 2, "grids must be [A, 2] with A = ",
                    A, ", got ", grids->sizes());
  TORCH_CHECK_VALUE(strides->dim() == 1 && strides->size(0) == A, "strides must be [A] with A = ", A, ", got ",
                    strides->sizes());
  TORCH_CHECK_VALUE(grids->device() == prediction.device() && strides->device() == prediction.device(),
                    "grids and strides must be on the prediction's device ", prediction.device(), ", got ",
                    grids->device(), " and ", strides->device());
}

}  // namespace yolox_fast
