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

}  // namespace yolox_fast
