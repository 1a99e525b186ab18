"""Command line: export a YOLOX checkpoint to ONNX, with decode and NMS inside the graph.

    python -m yolox_fast.export --weights yolox_nano.pth --output yolox_nano.onnx

By default the graph ends with the postprocess (official scoring, confidence threshold, class-aware
NMS with the standard ``NonMaxSuppression`` operator) and fixed-size outputs ``num_dets [B]``,
``boxes [B, max_det, 4]`` (x1, y1, x2, y2 in input pixels), ``scores [B, max_det]``, ``labels [B, max_det]``.
``--nms none`` stops at the decoded prediction ``[B, A, 5 + C]``; adding ``--decode none`` gives the raw
head output of the official exporter. For COCO evaluation export with ``--conf 0.01 --iou 0.65
--max-det 1000`` (the official evaluation keeps every box after NMS). The input size and the class names
are the checkpoint's (the size it was trained at; the model's 416 or 640 for official weights) unless given.
``--dynamic`` makes height and width dynamic (any multiples of 32, grids built in the graph); ``--int8
--calib-images DIR`` quantizes the network to INT8 (NNCF, calibrated on the folder's images; the decode and
NMS stay float32); ``--format openvino`` writes an OpenVINO IR folder (model.xml, model.bin) instead.
Exit status: 0 on success, 2 on bad usage or input, 1 when the export fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    parser.add_argument("--output", default=None,
                        help="the .onnx file, or the IR folder for --format openvino (default: from the weights' name)")
    parser.add_argument("--format", choices=("onnx", "openvino"), default="onnx",
                        help="onnx (default) or openvino: an OpenVINO IR folder (needs pip install openvino)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic height and width (multiples of 32): one export for every input size")
    parser.add_argument("--int8", action="store_true",
                        help="INT8 network (NNCF static quantization, needs --calib-images and pip install nncf)")
    parser.add_argument("--calib-images", default=None, metavar="DIR", help="folder of calibration images for --int8")
    parser.add_argument("--calib-count", type=int, default=64,
                        help="calibration images used, the first N by name (default 64)")
    parser.add_argument("--float-layers", nargs="*", default=None, metavar="REGION",
                        help="regions kept float32 under --int8: stem, head-preds (default both; none: give no value)")
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
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default 17)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--no-ema", action="store_true", help="the raw weights of a training checkpoint, not its EMA")
    add_debug_flag(parser)
    return parser


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from .deploy.onnx_export import max_opset
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
    if args.opset > max_opset():  # else the exporter fails after loading the model, with pages of graph
        raise UsageError(f"--opset must be {max_opset()} or older (the newest this PyTorch's exporter writes), "
                         f"got {args.opset}")
    calib = _check_deploy_flags(args)
    stem = os.path.splitext(args.weights)[0]
    output = args.output or stem + ("-int8" if args.int8 else "") + (".onnx" if args.format == "onnx" else "_openvino")
    if os.path.abspath(output) == os.path.abspath(args.weights):
        raise UsageError(f"--output {output} is the weights file itself; choose another path")
    if os.path.exists(output) and not args.overwrite:
        raise UsageError(f"{output} exists; choose another --output or pass --overwrite")
    if args.format == "openvino" and os.path.isfile(output):
        raise UsageError(f"--output {output} is a file; --format openvino writes a folder (model.xml, model.bin)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise UsageError(f"output folder does not exist: {os.path.dirname(os.path.abspath(output))}")

    from .deploy.onnx_export import export_onnx
    from .models.checkpoint import load_model

    model, info = load_model(args.weights, model_name=args.model, num_classes=args.num_classes,
                             prefer_ema=not args.no_ema)
    name = info.model_name
    size = size or info.input_size  # the size the checkpoint was trained at, else the preset's
    network_pass, extra_meta = None, None
    if args.int8:
        from functools import partial

        from .deploy.quantize import DEFAULT_FLOAT_REGIONS, quantize_network

        regions = DEFAULT_FLOAT_REGIONS if args.float_layers is None else tuple(args.float_layers)
        network_pass = partial(quantize_network, calib_images=calib, img_size=size, float_regions=regions)
        extra_meta = {"int8": {"quantizer": "nncf", "calib_images": len(calib), "float_regions": list(regions)}}
    import tempfile

    from .deploy.openvino_model import export_openvino

    print(f"exporting {info.describe()} at {size[0]}x{size[1]} to {output} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="yolox_fast_export_") as scratch:
        # for --format openvino the ONNX file is an intermediate, converted and then removed with the folder
        onnx_output = output if args.format == "onnx" else os.path.join(scratch, "model.onnx")
        try:
            meta = export_onnx(model, onnx_output, size, nms=args.nms, decode=args.decode == "on", conf=args.conf,
                               nms_thre=args.iou, max_det=args.max_det, pre_nms_topk=args.pre_nms_topk,
                               class_agnostic=args.class_agnostic, multi_label=args.multi_label,
                               static=args.static, batch_size=args.batch_size, half=args.half, opset=args.opset,
                               simplify=not args.no_simplify, model_name=name, class_names=info.class_names,
                               overwrite=args.overwrite, dynamic_size=args.dynamic, network_pass=network_pass,
                               extra_meta=extra_meta)
        except FileExistsError as exc:  # created while this export ran: left as it is
            raise UsageError(f"{exc.filename or output} appeared during the export and was not replaced; choose "
                             "another --output or pass --overwrite") from None
        if args.format == "openvino":
            export_openvino(onnx_output, output, overwrite=args.overwrite)
    if args.nms == "onnx":
        post = (f"decode + {'class-agnostic' if args.class_agnostic else 'class-aware'} NMS in the graph "
                f"(conf {args.conf}, IoU {args.iou}, max {args.max_det} detections"
                f"{', multi-label' if args.multi_label else ''})")
    else:
        post = "decoded prediction [B, A, 5 + C]" if args.decode == "on" else "raw head output (official layout)"
    batch = f"batch {args.batch_size}" if args.static else "dynamic batch"
    where = " (any multiple of 32)" if args.dynamic else ""
    int8 = (f", INT8 calibrated on {len(calib)} images of {args.calib_images} (float32: "
            f"{', '.join(meta['int8']['float_regions']) or 'decode only'})" if args.int8 else "")
    print(f"exported {info.describe()} at {size[0]}x{size[1]}{where}, {batch}, opset {args.opset}"
          f"{', fp16' if args.half else ''}{int8}: {post}")
    if args.format == "openvino":
        size_mb = sum(f.stat().st_size for f in Path(output).iterdir()) / 1e6
        print(f"{output}: OpenVINO IR (model.xml, model.bin), {size_mb:.1f} MB, "
              f"{len(meta['class_names'])} class names in its runtime info")
    else:
        print(f"{output}: {os.path.getsize(output) / 1e6:.1f} MB, {len(meta['class_names'])} class names in the "
              f"metadata, {'simplified with onnxslim, ' if meta['simplified'] else ''}onnx.checker passed")
        if args.int8:  # docs/deployment.md: NNCF's QDQ placement keeps ONNX Runtime's convolutions in float
            print("note: ONNX Runtime runs this INT8 graph no faster than float32; for INT8 speed on CPUs export "
                  "with --format openvino")
    return 0


def _check_deploy_flags(args) -> list:
    """Check --format, --int8 and the calibration flags; the calibration images (a list, empty without --int8)."""
    if args.calib_images and not args.int8:
        raise UsageError("--calib-images is for --int8; add --int8 or leave it out")
    if args.float_layers is not None and not args.int8:
        raise UsageError("--float-layers is for --int8; add --int8 or leave it out")
    if args.format == "openvino":
        from .deploy.openvino_model import openvino_available

        if not openvino_available():
            raise UsageError("--format openvino needs the openvino package: pip install openvino")
    if not args.int8:
        return []
    if args.half:
        raise UsageError("--int8 and --half exclude each other: the INT8 network keeps float32 where it is not int8")
    if not args.calib_images:
        raise UsageError("--int8 needs --calib-images DIR: a folder of images like those the model will see")
    if args.calib_count < 1:
        raise UsageError(f"--calib-count must be >= 1, got {args.calib_count}")
    from .deploy.quantize import FLOAT_REGIONS, calibration_images

    unknown = [r for r in args.float_layers or () if r not in FLOAT_REGIONS]
    if unknown:
        raise UsageError(f"--float-layers {unknown[0]}: unknown region; choose from {', '.join(FLOAT_REGIONS)}")
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise UsageError("--int8 needs the nncf package: pip install nncf") from None
    try:
        return calibration_images(args.calib_images, args.calib_count)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--calib-images: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
