"""Command line: COCO box AP of a YOLOX checkpoint.

    python -m yolox_fast.eval --weights weights/yolox_nano.pth --model yolox-nano \\
        --images coco128/train2017 --ann coco128/annotations/instances_train2017.json

Takes official checkpoints (``{"model": state_dict}``) and yolox_fast training checkpoints (their EMA
weights when present, unless ``--no-ema``), evaluated at the size the checkpoint was trained at (the
model's 416 or 640 for official weights) unless ``--img-size`` says otherwise. Data: a COCO json with its
images, or YOLO-format data (``--data data.yaml`` in the ultralytics layout, or a YOLO folder; ``--split``).
Prints the per-class table, pycocotools' summary and the main numbers, and writes them with the curves, the
confusion matrix, the detections and example images into a new run folder ``runs/val/<name>N``
(:mod:`yolox_fast.evaluation.report`; ``--no-save``: none). Exit status: 0 on success, 1 when the
evaluation fails (the message says why), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli import add_debug_flag, run_cli

EXAMPLE = ("python -m yolox_fast.eval --weights weights/yolox_nano.pth --model yolox-nano "
           "--images coco128/train2017 --ann coco128/annotations/instances_train2017.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m yolox_fast.eval",
        description="COCO bbox evaluation (pycocotools) of a YOLOX checkpoint.",
        epilog=f"example: {EXAMPLE}",
    )
    parser.add_argument("--weights", "--ckpt", dest="weights",
                        help="checkpoint: official {'model': state_dict} or a yolox_fast training checkpoint "
                             "(--ckpt is its old name)")
    parser.add_argument("--onnx", help="evaluate a model exported by yolox_fast.export instead: an .onnx file "
                        "(ONNX Runtime) or an OpenVINO IR folder (--format openvino)")
    parser.add_argument("--model", help="yolox-nano, -tiny, -s, -m, -l or -x (default: inferred from the checkpoint)")
    parser.add_argument("--images", help="folder holding the images named in the annotation file")
    parser.add_argument("--ann", help="COCO instances annotation JSON")
    parser.add_argument("--data", help="YOLO-format data instead of --images/--ann: a data.yaml (ultralytics layout) "
                                       "or a YOLO folder (images/<split> + labels/<split>)")
    parser.add_argument("--split", choices=("val", "test", "train"),
                        help="the split of --data to evaluate (default val)")
    parser.add_argument("--name", default="exp",
                        help="run folder runs/val/NAME (numbered NAME2, NAME3, ... when taken; default exp)")
    parser.add_argument("--no-save", action="store_true",
                        help="print the numbers only; no run folder (per-class CSV, curves, confusion matrix, ...)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="network input size, a multiple of 32 (default: the size the checkpoint was trained at, "
                             "else the model's 416 or 640; an exported model's own, or any for a --dynamic export)")
    parser.add_argument("--conf", type=float, default=0.01, help="score threshold (default 0.01)")
    parser.add_argument("--iou", "--nms", dest="iou", type=float, default=0.65,
                        help="NMS IoU threshold (default 0.65; --nms is its old name)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is faster on a busy shared machine)")
    parser.add_argument("--class-agnostic", action="store_true", help="one NMS over all classes")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="class head size (default: read from the checkpoint)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights of a training checkpoint")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status per :mod:`yolox_fast.cli`."""
    return run_cli("yolox_fast.eval", _main, argv)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch  # after cli: torch's OpenMP reads the wait policy cli sets when it loads

    from .ops.anchors import check_input_size

    needed = [("--weights", args.weights or args.onnx)]
    if not args.data:
        needed += [("--images", args.images), ("--ann", args.ann)]
    elif args.images or args.ann:
        parser.error("give the data as --data or as --images and --ann, not both")
    if args.split and not args.data:
        parser.error("--split chooses a split of --data; --images/--ann name the split themselves")
    args.split = args.split or "val"
    missing = [flag for flag, value in needed if not value]
    if missing:
        data = "" if args.data else " (or --data data.yaml for YOLO-format data)"
        parser.error(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required{data}, for example:\n"
                     f"  {EXAMPLE}")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.img_size is not None:
        check_input_size(args.img_size, "--img-size")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        parser.error(f"--device {device}: not a device (cpu, cuda, cuda:1, ...)")
    if device_type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available here; use --device cpu")

    # Imported here so that --help and argument errors answer without loading OpenCV and pycocotools.
    from .evaluation import COCOEvaluator, load_coco
    from .models.checkpoint import load_model

    if args.onnx:  # the exported model brings its input size (and, with NMS in the graph, its thresholds)
        from .deploy.openvino_model import open_exported

        # device None: ONNX Runtime takes CUDA when it has it, OpenVINO the CPU
        model = open_exported(args.onnx, device=args.device, threads=args.threads)
        model.check_settings(args.conf, args.iou, args.class_agnostic)
        name, num_classes, which, source = model.model_name, model.num_classes, model.FORMAT, args.onnx
        size = (args.img_size,) * 2 if args.img_size else tuple(model.img_size)  # another size: an error below
    else:
        model, info = load_model(args.weights, model_name=args.model, num_classes=args.num_classes,
                                 prefer_ema=not args.no_ema)
        name, num_classes, which, source = info.model_name, info.num_classes, info.which, args.weights
        size = (args.img_size,) * 2 if args.img_size else info.input_size
        model.to(device)
    if args.data:  # YOLO labels: the split becomes a COCO index (category ids = class indices, absolute file names)
        from .data.dataset_spec import read_data_yaml, yolo_folder_spec

        spec = yolo_folder_spec(args.data) if Path(args.data).is_dir() else read_data_yaml(args.data)
        coco, args.images = spec.dataset(args.split).coco, str(spec.root)
        coco.source = f"{args.data} ({args.split})"
    else:
        coco = load_coco(args.ann, verbose=args.verbose)
    image_ids = coco.getImgIds()[: args.max_images] if args.max_images else None
    evaluator = COCOEvaluator(args.images, coco, img_size=size, conf=args.conf, nms=args.iou,
                              batch_size=args.batch_size, class_agnostic=args.class_agnostic,
                              image_ids=image_ids, verbose=args.verbose, progress=args.progress)
    print(f"{name} ({num_classes} classes, {which} weights of {source}) on {len(evaluator.image_ids)} images, "
          f"{size[0]}x{size[1]}, conf {args.conf}, "
          f"{'class-agnostic' if args.class_agnostic else 'class-aware'} NMS {args.iou}, {device}", flush=True)
    if not args.onnx:  # the model's size, as the official eval prints it
        from .models.summary import model_summary

        print(f"model: {model_summary(model, size).describe()}", flush=True)
    start = time.perf_counter()
    detections = evaluator.predict(model, device)
    inference_s = time.perf_counter() - start
    stats = evaluator.score(detections)
    report = None
    if not args.no_save:
        from .evaluation.report import write_validation_report
        from .files.run_dir import claim_run_dir

        report = write_validation_report(claim_run_dir("runs", "val", args.name), evaluator.coco, detections,
                                         args.images, evaluator.image_ids, evaluator.class_names)
    wall = time.perf_counter() - start

    print(report["metrics"].table() if report else stats["table"])
    if not args.verbose:  # verbose mode already showed it
        print(stats["summary"], end="")
    print(f"AP50:95 {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  AP75 {stats['AP75']:.4f}  "
          f"APs {stats['APs']:.4f}  APm {stats['APm']:.4f}  APl {stats['APl']:.4f}")
    print(f"{stats['num_images']} images, {stats['num_detections']} detections, {wall:.1f} s "
          f"(inference {inference_s:.1f} s, COCOeval {stats['cocoeval_s']:.1f} s)")
    if report:
        print(f"results saved to {report['dir']}: per_class.csv, PR_curve.png, F1_curve.png, confusion_matrix.png, "
              f"predictions.json, val_examples.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
