"""Command line: export a YOLOX checkpoint to ONNX, with decode and NMS inside the graph.

    python -m yolox_fast.export --weights yolox_nano.pth --output yolox_nano.onnx

By default the graph ends with the postprocess (official scoring, confidence threshold, class-aware
NMS with the standard ``NonMaxSuppression`` operator) and fixed-size outputs ``num_dets [B]``,
``boxes [B, max_det, 4]`` (x1, y1, x2, y2 in input pixels), ``scores [B, max_det]``, ``labels [B, max_det]``.
``--nms none`` stops at the decoded prediction ``[B, A, 5 + C]``; adding ``--decode none`` gives the raw
head output of the official exporter. For COCO evaluation export with ``--conf 0.01 --iou 0.65
--max-det 1000`` (the official evaluation keeps every box after NMS). The input size and the class names
are the checkpoint's (the size it was trained at; the model's 416 or 640 for official weights) unless given.
Exit status: 0 on success, 2 on bad usage or input, 1 when the export fails.
"""

from __future__ import annotations

import argparse
import os
import sys

from .cli import UsageError, add_debug_flag, run_cli
from .ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET

PROG = "python -m yolox_fast.export"
EXAMPLE = f"{PROG} --weights yolox_nano.pth --output yolox_nano.onnx"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0], epilog=f"example: {EXAMPLE}")
    parser.add_argument("--weights", "--ckpt", dest="weights", required=True,
                        help="official checkpoint or a yolox_fast training checkpoint (--ckpt is its old name)")
    parser.add_argument("--model", default=None, help="yolox-nano, -tiny, -s, -m, -l, -x (default: the checkpoint's)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="expected class count (default: the checkpoint's)")
    parser.add_argument("--img-size", type=int, nargs="+", default=None, metavar="SIZE",
                        help="input size, one value or H W, multiples of 32 (default: the size the checkpoint was "
                             "trained at, else the model's 416 or 640)")
    parser.add_argument("--output", default=None, help="the .onnx file (default: the weights' name with .onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--nms", choices=("onnx", "none"), default="onnx",
                        help="onnx: postprocess and NMS in the graph (default); none: stop at the prediction")
    parser.add_argument("--decode", choices=("on", "none"), default="on",
                        help="none: raw head output as the official exporter (needs --nms none)")
    parser.add_argument("--conf", type=float, default=PREDICT_CONF,
                        help=f"score threshold (default {PREDICT_CONF}; 0.01 for COCO eval)")
    parser.add_argument("--iou", "--nms-thre", dest="iou", type=float, default=PREDICT_IOU,
                        help=f"NMS IoU threshold (default {PREDICT_IOU}; 0.65 for eval; --nms-thre is its old name)")
    parser.add_argument("--max-det", type=int, default=PREDICT_MAX_DET,
                        help=f"detections per image (default {PREDICT_MAX_DET})")
    parser.add_argument("--pre-nms-topk", type=int, default=None, help="best K candidates per image enter NMS")
    parser.add_argument("--class-agnostic", action="store_true", help="one NMS over all classes")
    parser.add_argument("--multi-label", action="store_true", help="a box keeps every class above --conf")
    parser.add_argument("--static", action="store_true", help="fixed batch size (--batch-size) instead of dynamic")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of a --static export (default 1)")
    parser.add_argument("--half", action="store_true", help="fp16 weights and network; float32 input and outputs")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--no-ema", action="store_true", help="the raw weights of a training checkpoint, not its EMA")
    add_debug_flag(parser)
    return parser


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from .ops.anchors import check_input_size

    size = args.img_size
    if size is not None:
        size = check_input_size(size[0] if len(size) == 1 else size, "--img-size")
    if args.decode == "none" and args.nms == "onnx":
        raise UsageError("--decode none gives the raw head output, which the in-graph NMS cannot use; add --nms none")
    if args.max_det < 1:
        raise UsageError(f"--max-det must be >= 1, got {args.max_det}")
    if args.pre_nms_topk is not None and args.pre_nms_topk < 1:
        raise UsageError(f"--pre-nms-topk must be >= 1, got {args.pre_nms_topk}")
    if not 0.0 <= args.conf <= 1.0 or not 0.0 <= args.iou <= 1.0:
        raise UsageError("--conf and --iou must be in [0, 1]")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.opset < 17:
        raise UsageError(f"--opset must be 17 or newer, got {args.opset}")
    output = args.output or os.path.splitext(args.weights)[0] + ".onnx"
    if os.path.abspath(output) == os.path.abspath(args.weights):
        raise UsageError(f"--output {output} is the weights file itself; choose another path")
    if os.path.exists(output) and not args.overwrite:
        raise UsageError(f"{output} exists; choose another --output or pass --overwrite")

    from .deploy.onnx_export import export_onnx
    from .models.checkpoint import load_model

    model, info = load_model(args.weights, model_name=args.model, num_classes=args.num_classes,
                             prefer_ema=not args.no_ema)
    name = info.model_name
    size = size or info.input_size  # the size the checkpoint was trained at, else the preset's
    meta = export_onnx(model, output, size, nms=args.nms, decode=args.decode == "on", conf=args.conf,
                       nms_thre=args.iou, max_det=args.max_det, pre_nms_topk=args.pre_nms_topk,
                       class_agnostic=args.class_agnostic, multi_label=args.multi_label, static=args.static,
                       batch_size=args.batch_size, half=args.half, opset=args.opset, simplify=not args.no_simplify,
                       model_name=name, class_names=info.class_names, overwrite=args.overwrite)
    if args.nms == "onnx":
        post = (f"decode + {'class-agnostic' if args.class_agnostic else 'class-aware'} NMS in the graph "
                f"(conf {args.conf}, IoU {args.iou}, max {args.max_det} detections"
                f"{', multi-label' if args.multi_label else ''})")
    else:
        post = "decoded prediction [B, A, 5 + C]" if args.decode == "on" else "raw head output (official layout)"
    batch = f"batch {args.batch_size}" if args.static else "dynamic batch"
    print(f"exported {info.describe()} at {size[0]}x{size[1]}, {batch}, opset {args.opset}"
          f"{', fp16' if args.half else ''}: {post}")
    print(f"{output}: {os.path.getsize(output) / 1e6:.1f} MB, {len(meta['class_names'])} class names in the metadata, "
          f"{'simplified with onnxslim, ' if meta['simplified'] else ''}onnx.checker passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
