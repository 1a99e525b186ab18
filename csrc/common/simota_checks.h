// Argument rule of the simota_assign op: the only copy (see csrc/common/checks.h for how every backend uses it).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <utility>

namespace yolox_fast {

// Checks shapes, dtypes and devices; returns {B, A, C, G}. Messages name the argument.
inline std::array<int64_t, 4> check_simota_inputs(const at::Tensor& pred_boxes, const at::Tensor& cls_logits,
                                                  const at::Tensor& obj_logits, const at::Tensor& grids,
                                                  const at::Tensor& strides, const at::Tensor& gt_boxes,
                                                  const at::Tensor& gt_classes, const at::Tensor& gt_mask) {
  TORCH_CHECK_VALUE(pred_boxes.dim() == 3 && pred_boxes.size(2) == 4, "pred_boxes must be [B, A, 4], got ",
              pred_boxes.sizes());
  const int64_t B = pred_boxes.size(0), A = pred_boxes.size(1);
  TORCH_CHECK_VALUE(cls_logits.dim() == 3 && cls_logits.size(0) == B && cls_logits.size(1) == A && cls_logits.size(2) >= 1,
              "cls_logits must be [B=", B, ", A=", A, ", C>=1], got ", cls_logits.sizes());
  TORCH_CHECK_VALUE(((obj_logits.dim() == 3 && obj_logits.size(2) == 1) || obj_logits.dim() == 2) && obj_logits.size(0) == B &&
                  obj_logits.size(1) == A,
              "obj_logits must be [B=", B, ", A=", A, ", 1] or [B, A], got ", obj_logits.sizes());
  TORCH_CHECK_VALUE(grids.dim() == 2 && grids.size(0) == A && grids.size(1) == 2, "grids must be [A=", A, ", 2], got ",
              grids.sizes());
  TORCH_CHECK_VALUE(strides.dim() == 1 && strides.size(0) == A, "strides must be [A=", A, "], got ", strides.sizes());
  TORCH_CHECK_VALUE(gt_boxes.dim() == 3 && gt_boxes.size(0) == B && gt_boxes.size(2) == 4, "gt_boxes must be [B=", B,
              ", G, 4], got ", gt_boxes.sizes());
  const int64_t G = gt_boxes.size(1);
  TORCH_CHECK_VALUE(gt_classes.dim() == 2 && gt_classes.size(0) == B && gt_classes.size(1) == G, "gt_classes must be [B=", B,
              ", G=", G, "], got ", gt_classes.sizes());
  TORCH_CHECK_VALUE(gt_mask.dim() == 2 && gt_mask.size(0) == B && gt_mask.size(1) == G, "gt_mask must be [B=", B, ", G=", G,
              "], got ", gt_mask.sizes());
  using Named = std::pair<const at::Tensor*, const char*>;
  const Named floats[] = {{&pred_boxes, "pred_boxes"}, {&cls_logits, "cls_logits"}, {&obj_logits, "obj_logits"},
                          {&gt_boxes, "gt_boxes"}};
  for (const auto& [t, name] : floats) {
    TORCH_CHECK_VALUE(at::isFloatingType(t->scalar_type()), name, " must be floating point, got ", t->scalar_type());
  }
  TORCH_CHECK_VALUE(!at::isComplexType(grids.scalar_type()) && grids.scalar_type() != at::kBool,
              "grids must be real, got ", grids.scalar_type());
  TORCH_CHECK_VALUE(!at::isComplexType(strides.scalar_type()) && strides.scalar_type() != at::kBool,
              "strides must be real, got ", strides.scalar_type());
  TORCH_CHECK_VALUE(at::isIntegralType(gt_classes.scalar_type(), /*includeBool=*/false),
              "gt_classes must be an integer tensor, got ", gt_classes.scalar_type());
  TORCH_CHECK_VALUE(gt_mask.scalar_type() == at::kBool, "gt_mask must be bool, got ", gt_mask.scalar_type());
  const Named others[] = {{&cls_logits, "cls_logits"}, {&obj_logits, "obj_logits"}, {&grids, "grids"},
                          {&strides, "strides"}, {&gt_boxes, "gt_boxes"}, {&gt_classes, "gt_classes"},
                          {&gt_mask, "gt_mask"}};
  for (const auto& [t, name] : others) {
    TORCH_CHECK_VALUE(t->device() == pred_boxes.device(), name, " is on ", t->device(), " but pred_boxes is on ",
                pred_boxes.device());
  }
  TORCH_CHECK_VALUE(A < (int64_t{1} << 31) && G < (int64_t{1} << 31), "simota_assign supports fewer than 2^31 anchors and GTs");
  return {B, A, cls_logits.size(2), G};
}

}  // namespace yolox_fast
