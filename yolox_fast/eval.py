"""Command line: COCO box AP of a YOLOX checkpoint.

    python -m yolox_fast.eval --ckpt weights/yolox_nano.pth --model yolox-nano \\
        --images coco128/train2017 --ann coco128/annotations/instances_train2017.json

Takes official checkpoints (``{"model": state_dict}``) and yolox_fast training checkpoints (their EMA
weights when present, unless ``--no-ema``). Prints the per-class AP table, pycocotools' summary and
the main numbers. Exit status: 0 on success, 1 when the evaluation fails (the message says why),
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch

EXAMPLE = ("python -m yolox_fast.eval --ckpt weights/yolox_nano.pth --model yolox-nano "
           "--images coco128/train2017 --ann coco128/annotations/instances_train2017.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m yolox_fast.eval",
        description="COCO bbox evaluation (pycocotools) of a YOLOX checkpoint.",
        epilog=f"example: {EXAMPLE}",
    )
    parser.add_argument("--ckpt", help="checkpoint: official {'model': state_dict} or a yolox_fast training checkpoint")
    parser.add_argument("--model", help="yolox-nano, -tiny, -s, -m, -l or -x (default: inferred from the checkpoint)")
    parser.add_argument("--images", help="folder holding the images named in the annotation file")
    parser.add_argument("--ann", help="COCO instances annotation JSON")
    parser.add_argument("--img-size", type=int, default=416, help="network input size (default 416)")
    parser.add_argument("--conf", type=float, default=0.01, help="score threshold (default 0.01)")
    parser.add_argument("--nms", type=float, default=0.65, help="NMS IoU threshold (default 0.65)")
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
    return parser


def infer_preset(state: dict[str, torch.Tensor]) -> str:
    """The preset whose stem width matches ``state`` (the stem has ``int(64 * width)`` output channels)."""
    from .models import PRESETS

    stem = state.get("backbone.backbone.stem.conv.conv.weight")
    if stem is None:
        raise ValueError("cannot tell the model size: no backbone.backbone.stem.conv.conv.weight in the checkpoint; "
                         "pass --model")
    matches = [name for name, cfg in PRESETS.items() if int(64 * cfg["width"]) == stem.shape[0]]
    if len(matches) != 1:
        raise ValueError(f"cannot tell the model size from a stem of {stem.shape[0]} channels; pass --model")
    return matches[0]


def load_checkpoint(path: str, prefer_ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict, which)`` of a checkpoint file, ``which`` being ``"ema"`` or ``"model"``."""
    from .models.checkpoint import _ema_state_dict, read_state_dict

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    state = read_state_dict(ckpt, prefer_ema=prefer_ema)
    # Which entry read_state_dict took: its dicts are shallow copies, so the tensors are the same objects.
    ema = _ema_state_dict(ckpt.get("ema")) if isinstance(ckpt, dict) else None
    key = next(iter(state), None)
    return state, "ema" if ema and key in ema and ema[key] is state[key] else "model"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = [flag for flag, value in (("--ckpt", args.ckpt), ("--images", args.images), ("--ann", args.ann))
               if not value]
    if missing:
        parser.error(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required, for example:\n  {EXAMPLE}")
    if args.batch_size < 1 or args.img_size < 32 or args.img_size % 32:
        parser.error("--batch-size must be >= 1 and --img-size a positive multiple of 32")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available here; use --device cpu")

    # Imported here so that --help and argument errors answer without loading OpenCV and pycocotools.
    from .evaluation import COCOEvaluator, load_coco
    from .models import build_yolox, canonical_name, load_official_weights

    try:
        state, which = load_checkpoint(args.ckpt, prefer_ema=not args.no_ema)
        if args.model:
            name, inferred = canonical_name(args.model), None
            with contextlib.suppress(ValueError):  # a stem we cannot place: let the weight loading judge
                inferred = infer_preset(state)
            if inferred is not None and inferred != name:
                raise ValueError(f"{args.ckpt} holds {inferred} weights, not {name}; "
                                 "fix --model or leave it out to infer it")
        else:
            name = infer_preset(state)
        num_classes = args.num_classes
        if num_classes is None:
            cls = state.get("head.cls_preds.0.weight")
            num_classes = cls.shape[0] if cls is not None else 80
        model = build_yolox(name, num_classes=num_classes)
        load_official_weights(model, state)
        model.to(device).eval()

        coco = load_coco(args.ann, verbose=args.verbose)
        image_ids = coco.getImgIds()[: args.max_images] if args.max_images else None
        evaluator = COCOEvaluator(args.images, coco, img_size=args.img_size, conf=args.conf, nms=args.nms,
                                  batch_size=args.batch_size, class_agnostic=args.class_agnostic,
                                  image_ids=image_ids, verbose=args.verbose, progress=args.progress)
        print(f"{name} ({num_classes} classes, {which} weights of {args.ckpt}) on {len(evaluator.image_ids)} images, "
              f"{args.img_size}x{args.img_size}, conf {args.conf}, "
              f"{'class-agnostic' if args.class_agnostic else 'class-aware'} NMS {args.nms}, {device}", flush=True)
        start = time.perf_counter()
        stats = evaluator.evaluate(model, device)
        wall = time.perf_counter() - start
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    print(stats["table"])
    if not args.verbose:  # verbose mode already showed it
        print(stats["summary"], end="")
    print(f"AP50:95 {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  AP75 {stats['AP75']:.4f}  "
          f"APs {stats['APs']:.4f}  APm {stats['APm']:.4f}  APl {stats['APl']:.4f}")
    print(f"{stats['num_images']} images, {stats['num_detections']} detections, {wall:.1f} s "
          f"(inference {stats['inference_s']:.1f} s, COCOeval {stats['cocoeval_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
