// Box arithmetic shared by the CPU and CUDA kernels.
//
// Every function mirrors yolox_fast/ops/reference.py operation by operation (same operand order), so
// that with FMA contraction off (see setup.py) the CPU, CUDA and reference results agree bit for bit
// in float32.
#pragma once

#include "macros.h"

namespace yolox_fast {

template <typename T>
struct Box {
  T x1, y1, x2, y2;
};

// cx, cy, w, h -> corners, as `cx - w / 2` in the reference.
template <typename T>
YF_HOST_DEVICE Box<T> box_from_cxcywh(T cx, T cy, T w, T h) {
  return {cx - w / T(2), cy - h / T(2), cx + w / T(2), cy + h / T(2)};
}

// IoU of two boxes with the official bboxes_iou rule: the intersection counts only when its
// top-left is strictly above-left of its bottom-right; area = w * h of each box as given;
// union 0 gives 0 instead of NaN.
template <typename T>
YF_HOST_DEVICE T box_iou(const Box<T>& a, T area_a, const Box<T>& b, T area_b) {
  const T tlx = a.x1 > b.x1 ? a.x1 : b.x1;
  const T tly = a.y1 > b.y1 ? a.y1 : b.y1;
  const T brx = a.x2 < b.x2 ? a.x2 : b.x2;
  const T bry = a.y2 < b.y2 ? a.y2 : b.y2;
  const bool overlap = (tlx < brx) && (tly < bry);
  const T inter = overlap ? (brx - tlx) * (bry - tly) : T(0);
  const T uni = area_a + area_b - inter;
  return uni > T(0) ? inter / uni : T(0);
}

// IoU of two x1, y1, x2, y2 boxes as torchvision's nms computes it (NOT the official bboxes_iou rule
// above): w = max(0, min(x2) - max(x1)), h likewise, IoU = inter / (area_a + area_b - inter), with
// area = (x2 - x1) * (y2 - y1) computed by the caller. Two empty boxes give 0 / 0 = NaN, which never
// exceeds a threshold, so such boxes never suppress each other (as in torchvision and
// yolox_fast.ops.reference.nms). Symmetric bit for bit: iou(a, b) == iou(b, a).
template <typename T>
YF_HOST_DEVICE T box_iou_nms(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  const T w = (ax2 < bx2 ? ax2 : bx2) - (ax1 > bx1 ? ax1 : bx1);
  const T h = (ay2 < by2 ? ay2 : by2) - (ay1 > by1 ? ay1 : by1);
  // `d < 0 ? 0 : d` rather than max(0, d): a NaN width stays NaN, like torch's clamp(min=0).
  const T inter = (w < T(0) ? T(0) : w) * (h < T(0) ? T(0) : h);
  return inter / (area_a + area_b - inter);
}

}  // namespace yolox_fast
