// The yolox_fast operator library: every schema, declared once.
//
// Backends register their kernels in csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cu (CUDA) with
// TORCH_LIBRARY_IMPL; Python adds fake (meta) kernels in yolox_fast/ops/*.py for torch.compile.
#include <Python.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/simota_checks.h"

namespace {

// The argument rules of the ops as ops of their own (-> ()), for the backends that are not C++: the Python
// wrappers call them first (yolox_fast/ops/arg_checks.py). Registered without a dispatch key
// (CompositeImplicitAutograd): they run for tensors on any device and read no data.
void check_pairwise_iou_args(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  yolox_fast::check_pairwise_iou_args(boxes1, boxes2);
}

void check_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const std::optional<at::Tensor>& idxs) {
  yolox_fast::check_nms_args(boxes, scores, idxs.has_value() ? "batched_nms" : "nms");
  if (idxs.has_value()) yolox_fast::check_category_ids(*idxs, boxes);
}

void check_postprocess_args(const at::Tensor& prediction, int64_t num_classes, const std::optional<at::Tensor>& grids,
                            const std::optional<at::Tensor>& strides) {
  yolox_fast::check_postprocess_args(prediction, num_classes, grids, strides);
}

void check_simota_args(const at::Tensor& pred_boxes, const at::Tensor& cls_logits, const at::Tensor& obj_logits,
                       const at::Tensor& grids, const at::Tensor& strides, const at::Tensor& gt_boxes,
                       const at::Tensor& gt_classes, const at::Tensor& gt_mask) {
  yolox_fast::check_simota_inputs(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask);
}

}  // namespace

TORCH_LIBRARY(yolox_fast, m) {
  // IoU of every box of boxes1 [N, 4] with every box of boxes2 [M, 4] -> [N, M].
  // xyxy=false: boxes are cx, cy, w, h; true: x1, y1, x2, y2.
  m.def("pairwise_iou(Tensor boxes1, Tensor boxes2, bool xyxy) -> Tensor");
  // SimOTA label assignment of a padded batch (yolox_fast/ops/reference.py: simota_assign).
  // pred_boxes [B, A, 4] cx, cy, w, h; cls_logits [B, A, C]; obj_logits [B, A, 1]; grids [A, 2];
  // strides [A]; gt_boxes [B, G, 4] cx, cy, w, h; gt_classes [B, G] int; gt_mask [B, G] bool (False =
  // padding). center_only=false: the seed variant (candidates in box OR centre square, geometry =
  // both), true: the 2023 one (centre square only). Returns fg_mask [B, A] bool, matched_gt [B, A]
  // int64 (index into G, -1 background), matched_iou [B, A] float32 (0 background).
  m.def(
      "simota_assign(Tensor pred_boxes, Tensor cls_logits, Tensor obj_logits, Tensor grids, Tensor strides, "
      "Tensor gt_boxes, Tensor gt_classes, Tensor gt_mask, float center_radius, bool center_only, float penalty) "
      "-> (Tensor fg_mask, Tensor matched_gt, Tensor matched_iou)");

  // --- postprocess (yolox_fast/ops/nms.py, yolox_fast/ops/postprocess.py) ---
  // Greedy NMS with torchvision's semantics: boxes [N, 4] x1, y1, x2, y2, scores [N] -> kept indices
  // int64 [K] by decreasing score; suppressed when IoU > iou_threshold (float32 IoU and threshold).
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // nms within each category of idxs [N] (integer) independently.
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // Fused score filter + NMS over the head output [B, A, 5 + C] (decoded, or raw logits when grids [A, 2]
  // and strides [A] are given) -> (detections [B, M, 7] rows x1, y1, x2, y2, obj, cls_conf, cls_id by
  // decreasing score, zero padded; counts [B] int64). M = max_det, or the largest count when max_det <= 0.
  // pre_nms_topk <= 0: no top-k.
  m.def(
      "postprocess(Tensor prediction, int num_classes, float conf_thre, float nms_thre, bool class_agnostic, "
      "bool multi_label, int pre_nms_topk, int max_det, Tensor? grids, Tensor? strides) -> (Tensor, Tensor)");

  // --- training-mode BatchNorm2d + SiLU, fused (CPU only; yolox_fast/ops/batchnorm_silu.py) ---
  // x [N, C, H, W] float32 channels-last; weight, bias, running_mean, running_var [C] float32. Normalises
  // with the batch statistics, updates running_mean / running_var in place (momentum; unbiased variance),
  // returns (y = silu(batch_norm(x)), batch mean [C], 1 / sqrt(biased var + eps) [C]).
  m.def(
      "batch_norm_silu_train(Tensor x, Tensor weight, Tensor bias, Tensor(a!) running_mean, "
      "Tensor(b!) running_var, float momentum, float eps) -> (Tensor y, Tensor mean, Tensor invstd)");
  // Gradients of batch_norm_silu_train's y with respect to x, weight and bias, from grad_y [N, C, H, W].
  m.def(
      "batch_norm_silu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor bias, Tensor mean, "
      "Tensor invstd) -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");

  // --- argument rules (csrc/common/checks.h, simota_checks.h): raise ValueError naming the argument ---
  m.def("check_pairwise_iou_args(Tensor boxes1, Tensor boxes2) -> ()", &check_pairwise_iou_args);
  m.def("check_nms_args(Tensor boxes, Tensor scores, Tensor? idxs) -> ()", &check_nms_args);
  m.def("check_postprocess_args(Tensor prediction, int num_classes, Tensor? grids, Tensor? strides) -> ()",
        &check_postprocess_args);
  m.def(
      "check_simota_args(Tensor pred_boxes, Tensor cls_logits, Tensor obj_logits, Tensor grids, Tensor strides, "
      "Tensor gt_boxes, Tensor gt_classes, Tensor gt_mask) -> ()",
      &check_simota_args);
}

// A Python module so that `import yolox_fast._C` loads the library and registers the operators.
static PyObject* cuda_built(PyObject*, PyObject*) {
#ifdef YOLOX_FAST_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"cuda_built", cuda_built, METH_NOARGS, "True when the CUDA kernels were compiled in."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "yolox_fast operators", -1, methods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
