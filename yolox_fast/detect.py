"""Run a YOLOX checkpoint on images: ``python -m yolox_fast.detect --ckpt W.pth IMAGE [IMAGE ...]``.

Prints one line per detection (file, class, score, box in original-image pixels) and, with
``--save-dir``, writes each image with its boxes drawn.
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import torch

from .cli import add_debug_flag, run_cli
from .data.preprocess import preprocess, read_image
from .models.checkpoint import load_model
from .ops.postprocess import postprocess


def draw_detections(img, dets, class_names) -> None:
    """Draw ``dets [n, 7]`` (boxes already in ``img`` pixels) onto the BGR image in place."""
    for x1, y1, x2, y2, obj, cls_conf, cls_id in dets.tolist():
        color = tuple(int(c) for c in (37 * (int(cls_id) + 1) % 255, 17 * (int(cls_id) + 3) % 255, 200))
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(img, p1, p2, color, 2)
        name = class_names[int(cls_id)] if int(cls_id) < len(class_names) else str(int(cls_id))
        cv2.putText(img, f"{name} {obj * cls_conf:.2f}", (p1[0], max(p1[1] - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    color, 1, cv2.LINE_AA)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status per :mod:`yolox_fast.cli`."""
    return run_cli("yolox_fast.detect", _main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolox_fast.detect", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--ckpt", required=True, help="official ({'model': ...}) or yolox_fast checkpoint")
    parser.add_argument("--model", default=None, help="preset name (default: the checkpoint's)")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--conf", type=float, default=0.3)
    parser.add_argument("--nms", type=float, default=0.45)
    parser.add_argument("--class-agnostic", action="store_true")
    parser.add_argument("--save-dir", default=None, help="write annotated images here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    model, info = load_model(args.ckpt, model_name=args.model)
    num_classes, class_names = info.num_classes, info.class_names
    model.to(args.device)

    if args.save_dir:
        os.makedirs(args.save_dir, exist_ok=True)
    for path in args.images:
        img = read_image(path)
        x, ratio = preprocess(img, args.img_size)
        with torch.no_grad():
            pred = model(x[None].to(args.device))
        dets = postprocess(pred, num_classes, args.conf, args.nms, args.class_agnostic)[0]
        if dets is None:
            print(f"{path}: no detections")
            continue
        dets = dets.cpu()
        dets[:, :4] /= ratio
        for x1, y1, x2, y2, obj, cls_conf, cls_id in dets.tolist():
            name = class_names[int(cls_id)]
            print(f"{path}: {name} {obj * cls_conf:.3f} [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
        if args.save_dir:
            draw_detections(img, dets, [str(n) for n in class_names])
            out = os.path.join(args.save_dir, os.path.basename(path))
            cv2.imwrite(out, img)
            print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
