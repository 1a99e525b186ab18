// Argument checks shared by the CPU and CUDA entry points; messages name the argument.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace yolox_fast {

inline void check_boxes(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) == 4, name, " must be [N, 4], got ", t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name, " must be floating point, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* name_a, const at::Tensor& b, const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), name_a, " is on ", a.device(), " but ", name_b, " is on ", b.device());
}

// batched_nms category ids: integer [N] on the boxes' device -> int64, contiguous.
inline at::Tensor checked_category_ids(const at::Tensor& idxs, const at::Tensor& boxes) {
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), "batched_nms: idxs must be [N] with N = ",
              boxes.size(0), ", got ", idxs.sizes());
  TORCH_CHECK(!at::isFloatingType(idxs.scalar_type()) && !at::isComplexType(idxs.scalar_type()),
              "batched_nms: idxs must be an integer tensor, got ", idxs.scalar_type(),
              " (yolox_fast.ops.batched_nms maps float category ids to integers first)");
  check_same_device(boxes, "boxes", idxs, "idxs");
  return idxs.to(at::kLong).contiguous();
}

// postprocess: prediction [B, A, 5 + C] floating point; grids and strides given together (raw input) or not.
inline void check_postprocess_args(const at::Tensor& prediction, int64_t num_classes,
                                   const std::optional<at::Tensor>& grids, const std::optional<at::Tensor>& strides) {
  TORCH_CHECK(prediction.dim() == 3, "prediction must be [B, A, 5 + C], got ", prediction.sizes());
  TORCH_CHECK(num_classes >= 1, "num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK(prediction.size(2) >= 5 + num_classes, "prediction must be [B, A, 5 + ", num_classes, "], got ",
              prediction.sizes());
  TORCH_CHECK(at::isFloatingType(prediction.scalar_type()), "prediction must be floating point, got ",
              prediction.scalar_type());
  TORCH_CHECK(grids.has_value() == strides.has_value(), "give both grids and strides (raw input) or neither");
}

}  // namespace yolox_fast
