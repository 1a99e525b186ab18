"""The YOLOX postprocess written in standard ONNX operators, appended to an exported network.

Input: the decoded prediction ``[B, A, 5 + C]`` (cx, cy, w, h in input pixels, sigmoid objectness,
sigmoid class scores), the model's eval output. Output, fixed size and zero-padded:

* ``num_dets [B]`` int64,
* ``boxes [B, M, 4]`` float32 x1, y1, x2, y2 in input pixels,
* ``scores [B, M]`` float32 ``obj * cls_conf``,
* ``labels [B, M]`` int64,

with ``M = max_det``. The semantics are those of :func:`yolox_fast.ops.postprocess_padded`, bit for bit
on the same prediction (tests/test_export.py checks it):

* best class per box (``ArgMax`` keeps the first of equal maxima, like ``torch.max``) or every class
  (``multi_label``); ``score = obj * cls_conf`` in float32; a candidate needs ``score >= conf``. The
  ``NonMaxSuppression`` operator's own ``score_threshold`` keeps ``score > threshold`` (strict), so the
  threshold is applied here with ``GreaterOrEqual`` and the operator only sees a -1 below its -0.5 cut
  for the slots that must not take part.
* Candidates are put in the postprocess output order first (score descending, then class and anchor
  for class-aware NMS, anchor then class for class-agnostic) with ``TopK``, whose ties go to the lower
  index (ONNX spec), i.e. a stable sort. ``NonMaxSuppression`` pops equal scores lowest index first
  (ONNX Runtime's CPU and CUDA kernels), so equal-score boxes are visited in that same order.
* Class-aware NMS uses the operator's class dimension: scores ``[B, C, K]`` hold a candidate's score in
  its own class row and -1 elsewhere. Boxes of different classes never meet and the IoU arithmetic is
  untouched (the usual trick of offsetting boxes by ``class * max_coordinate`` rounds coordinates
  at large offsets, which can flip an IoU that sits at the threshold).
* The IoU is ONNX Runtime's: ``inter / (area1 + area2 - inter)`` in float32, suppressing when ``>``
  the threshold; the same formula and comparison as torchvision and our kernels.
* ``K``, the number of boxes entering NMS, is the largest candidate count in the batch (at most
  ``pre_nms_topk``), so the ``[B, C, K]`` score tensor stays small at high thresholds.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Names of the graph outputs, in order.
OUTPUT_NAMES = ("num_dets", "boxes", "scores", "labels")

# A score the NMS operator must ignore, and the operator's (strict) score threshold that rejects it.
_IGNORED_SCORE = -1.0
_NMS_SCORE_THRESHOLD = -0.5


class _GraphBuilder:
    """Collects nodes and constant initializers under unique names (prefix ``pp/``)."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"pp/{hint}_{self._count}"

    def const(self, value, dtype) -> str:
        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], num_outputs: int = 1, outputs: list[str] | None = None, **attrs):
        outputs = outputs or [self._name(op_type) for _ in range(num_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self._name(op_type + "_node"), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def reduce(self, op_type: str, x: str, axis: int, keepdims: int = 0) -> str:
        # ReduceSum takes its axes as an input since opset 13, the other reductions since opset 18.
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.const([axis], np.int64)], keepdims=keepdims)
        return self.op(op_type, [x], axes=[axis], keepdims=keepdims)

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", [x, self.const([start], np.int64), self.const([end], np.int64),
                                 self.const([axis], np.int64)])

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", [x, self.const([axis], np.int64)])

    def squeeze(self, x: str, axis: int) -> str:
        return self.op("Squeeze", [x, self.const([axis], np.int64)])


def append_postprocess(
    model: onnx.ModelProto,
    prediction: str,
    num_anchors: int | None,
    num_classes: int,
    *,
    conf_thre: float,
    nms_thre: float,
    max_det: int,
    pre_nms_topk: int | None = None,
    class_agnostic: bool = False,
    multi_label: bool = False,
    batch: int | str = "batch",
) -> onnx.ModelProto:
    """Replace the graph output ``prediction [B, A, 5 + C]`` by the four postprocess outputs (module docstring).

    Args:
        model: an exported network whose graph has the float32 output ``prediction``.
        prediction: name of that output.
        num_anchors, num_classes: A and C (A fixed by the export's input size; None when the input size is
            dynamic: A is then read from the prediction's shape in the graph).
        conf_thre, nms_thre, max_det, pre_nms_topk, class_agnostic, multi_label: as
            :func:`yolox_fast.ops.postprocess_padded` (``max_det`` is required: the outputs have a fixed size).
        batch: the batch dimension of the outputs: a name (dynamic) or a size (static export).

    Returns:
        ``model``, modified in place.
    """
    if not 0.0 <= conf_thre <= 1.0:
        raise ValueError(f"conf_thre must be in [0, 1], got {conf_thre}")
    if not 0.0 <= nms_thre <= 1.0:
        raise ValueError(f"nms_thre must be in [0, 1], got {nms_thre}")
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
    if pre_nms_topk is not None and pre_nms_topk < 1:
        raise ValueError(f"pre_nms_topk must be >= 1 or None, got {pre_nms_topk}")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    g = _GraphBuilder(opset)
    i64, f32 = np.int64, np.float32
    C, M = int(num_classes), int(max_det)
    # A, the slot count S (one candidate slot per anchor, or per (anchor, class)) and the slot indices
    # [1, S]: constants for a fixed input size, read from the prediction's shape for a dynamic one.
    if num_anchors is not None:
        A = int(num_anchors)
        slots = A * C if multi_label else A
        anchors_t, slots_t = g.const(A, i64), g.const([slots], i64)
        slot_index_t = g.const(np.arange(slots, dtype=np.int64)[None], i64)
        topk_limit = g.const([min(pre_nms_topk or slots, slots)], i64)
    else:
        anchors_t = g.squeeze(g.slice(g.op("Shape", [prediction]), 1, 2, 0), 0)  # scalar
        slots_t = g.unsqueeze(g.op("Mul", [anchors_t, g.const(C, i64)]) if multi_label else anchors_t, 0)  # [1]
        slot_index_t = g.unsqueeze(g.op("Range", [g.const(0, i64), g.squeeze(slots_t, 0), g.const(1, i64)]), 0)
        topk_limit = slots_t if pre_nms_topk is None else g.op("Min", [slots_t, g.const([pre_nms_topk], i64)])

    # Boxes cx, cy, w, h -> x1, y1, x2, y2 (as box_coding.box_cxcywh_to_xyxy: c -/+ wh / 2).
    centre, size = g.slice(prediction, 0, 2, 2), g.slice(prediction, 2, 4, 2)
    half = g.op("Div", [size, g.const(2.0, f32)])
    boxes = g.op("Concat", [g.op("Sub", [centre, half]), g.op("Add", [centre, half])], axis=2)  # [B, A, 4]
    obj = g.slice(prediction, 4, 5, 2)  # [B, A, 1]
    cls = g.slice(prediction, 5, 5 + C, 2)  # [B, A, C]

    # Per slot: score [B, S] and, for the ordering and the outputs, its class and anchor.
    if multi_label:
        score = g.op("Reshape", [g.op("Mul", [obj, cls]), g.const([0, -1], i64)])  # slot = anchor * C + class
        label = g.op("Mod", [slot_index_t, g.const(C, i64)])  # [1, S]
    else:
        best = g.op("ArgMax", [cls], axis=2, keepdims=1)  # [B, A, 1], first index among equal maxima
        score = g.squeeze(g.op("Mul", [obj, g.op("GatherElements", [cls, best], axis=2)]), 2)  # [B, A]
        label = g.squeeze(best, 2)  # [B, A]
    valid = g.op("GreaterOrEqual", [score, g.const(conf_thre, f32)])  # NaN scores fail, as in the postprocess
    ignored = g.const(_IGNORED_SCORE, f32)
    ranked = g.op("Where", [valid, score, ignored])  # below every candidate, so TopK never prefers it

    # K = the largest candidate count of the batch, clipped to [1, min(pre_nms_topk, S)].
    count = g.reduce("ReduceSum", g.op("Cast", [valid], to=TensorProto.INT64), 1)  # [B]
    k = g.reduce("ReduceMax", g.op("Concat", [count, g.const([1], i64)], axis=0), 0, keepdims=1)  # [1]
    k = g.op("Min", [k, topk_limit])

    # Candidates in the output order: score descending, ties by the tie key (a stable sort).
    if class_agnostic:
        # tie key anchor * C + class == the slot index itself (single-label: slot = anchor)
        score_sorted, cand = g.op("TopK", [ranked, k], num_outputs=2, axis=1, largest=1, sorted=1)
    else:
        if multi_label:  # class-major slot order (class * A + anchor), the same for every image
            key = g.op("Add", [g.op("Mul", [label, anchors_t]), g.op("Div", [slot_index_t, g.const(C, i64)])])
            class_major = g.op("Expand", [key, g.op("Shape", [ranked])])
        else:
            class_major = g.op("Add", [g.op("Mul", [label, anchors_t]), slot_index_t])
        _, order = g.op("TopK", [class_major, slots_t], num_outputs=2, axis=1, largest=0, sorted=1)
        by_class = g.op("GatherElements", [ranked, order], axis=1)
        score_sorted, pos = g.op("TopK", [by_class, k], num_outputs=2, axis=1, largest=1, sorted=1)
        cand = g.op("GatherElements", [order, pos], axis=1)  # [B, K] slot indices
    cand_valid = g.op("GreaterOrEqual", [score_sorted, g.const(0.0, f32)])  # ranked scores are -1 or >= conf >= 0
    if multi_label:
        cand_anchor = g.op("Div", [cand, g.const(C, i64)])
        cand_label = g.op("Mod", [cand, g.const(C, i64)])
    else:
        cand_anchor = cand
        cand_label = g.op("GatherElements", [label, cand], axis=1)
    cand_boxes = g.op("GatherND", [boxes, g.unsqueeze(cand_anchor, 2)], batch_dims=1)  # [B, K, 4]

    # NonMaxSuppression: scores [B, classes, K]; a candidate scores only in its own class row.
    if class_agnostic:
        nms_scores = g.unsqueeze(g.op("Where", [cand_valid, score_sorted, ignored]), 1)  # [B, 1, K]
    else:
        classes = g.const(np.arange(C, dtype=np.int64)[None, :, None], i64)  # [1, C, 1]
        own_class = g.op("Equal", [g.unsqueeze(cand_label, 1), classes])
        member = g.op("And", [own_class, g.unsqueeze(cand_valid, 1)])  # [B, C, K]
        nms_scores = g.op("Where", [member, g.unsqueeze(score_sorted, 1), ignored])
    selected = g.op("NonMaxSuppression", [cand_boxes, nms_scores, g.const([M], i64), g.const([nms_thre], f32),
                                          g.const([_NMS_SCORE_THRESHOLD], f32)], center_point_box=0)  # [n, 3]

    # Kept flags [B, K] from the (batch, class, box) triplets; every candidate sits in one class row only.
    batch_and_box = g.op("Gather", [selected, g.const([0, 2], i64)], axis=1)  # [n, 2]
    num_selected = g.slice(g.op("Shape", [selected]), 0, 1, 0)
    kept = g.op("ScatterND", [g.op("ConstantOfShape", [g.op("Shape", [score_sorted])],
                                   value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
                              batch_and_box,
                              g.op("ConstantOfShape", [num_selected],
                                   value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))])
    kept_mask = g.op("Greater", [kept, g.const(0.0, f32)])
    kept_score = g.op("Where", [kept_mask, score_sorted, ignored])

    # The best M kept candidates, in candidate order among equal scores; pad with M ignored slots so that
    # TopK(M) is defined when K < M.
    batch = g.slice(g.op("Shape", [prediction]), 0, 1, 0)
    pad_shape = g.op("Concat", [batch, g.const([M], i64)], axis=0)
    pad_scores = g.op("Expand", [g.const([[_IGNORED_SCORE]], f32), pad_shape])
    top_score, top = g.op("TopK", [g.op("Concat", [kept_score, pad_scores], axis=1), g.const([M], i64)],
                          num_outputs=2, axis=1, largest=1, sorted=1)
    num_dets = g.op("Min", [g.reduce("ReduceSum", g.op("Cast", [kept_mask], to=TensorProto.INT64), 1),
                            g.const(M, i64)], outputs=[OUTPUT_NAMES[0]])
    row_used = g.op("Less", [g.const(np.arange(M, dtype=np.int64)[None], i64), g.unsqueeze(num_dets, 1)])  # [B, M]

    pad_boxes = g.op("Expand", [g.const(np.zeros((1, 1, 4), np.float32), f32),
                                g.op("Concat", [pad_shape, g.const([4], i64)], axis=0)])
    top_boxes = g.op("GatherND", [g.op("Concat", [cand_boxes, pad_boxes], axis=1), g.unsqueeze(top, 2)],
                     batch_dims=1)
    g.op("Where", [g.unsqueeze(row_used, 2), top_boxes, g.const(0.0, f32)], outputs=[OUTPUT_NAMES[1]])
    g.op("Where", [row_used, top_score, g.const(0.0, f32)], outputs=[OUTPUT_NAMES[2]])
    pad_labels = g.op("Expand", [g.const([[0]], i64), pad_shape])
    top_labels = g.op("GatherElements", [g.op("Concat", [cand_label, pad_labels], axis=1), top], axis=1)
    g.op("Where", [row_used, top_labels, g.const(0, i64)], outputs=[OUTPUT_NAMES[3]])

    graph = model.graph
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.initializers)
    del graph.output[:]
    batch_dim = batch
    graph.output.extend([
        helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.INT64, [batch_dim]),
        helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.FLOAT, [batch_dim, M, 4]),
        helper.make_tensor_value_info(OUTPUT_NAMES[2], TensorProto.FLOAT, [batch_dim, M]),
        helper.make_tensor_value_info(OUTPUT_NAMES[3], TensorProto.INT64, [batch_dim, M]),
    ])
    return model
