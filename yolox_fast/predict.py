"""Command line: detect objects in images, folders, globs, videos or a camera.

    python -m yolox_fast.predict dog.jpg photos/ "shots/*.png" clip.mp4 --weights yolox_nano.pth
    python -m yolox_fast.predict 0 --onnx yolox_nano.onnx          # camera 0, through ONNX Runtime

Every run writes into a new folder ``--project/--name`` (``runs/predict/exp``, then ``exp2``, ``exp3`` ...,
claimed atomically: runs started together never share one): the drawn images and videos (same names as the
inputs; ``dog2.jpg``, ``dog3.jpg`` ... when two inputs share a name, ``.jpg`` added to a name OpenCV cannot
write), with ``--save-txt`` YOLO label lines ``class cx cy w h`` (normalised; ``--save-conf`` adds the score)
under ``labels/``, with ``--save-crop`` each detection's image region under ``crops/<class>/``, and with
``--save-json`` the COCO results ``predictions.json`` (an image's ``image_id`` is its file name's number, as
in COCO, or else its position in the run, 1, 2 ...; ``image_ids.json`` then maps them to the inputs).
``--classes`` keeps only some classes (before NMS); ``--line-width``, ``--hide-labels``, ``--hide-conf``
change the drawing; ``--vid-stride N`` takes every N-th video frame. Inputs and earlier runs are never
written to. An input that cannot be read or processed is reported with its path and skipped; the run goes
on and the exit status is then 2. Ctrl-C or SIGTERM stop cleanly: videos written so far are closed playable
and ``predictions.json`` holds every result so far.
Exit status: 0 when every input was processed, 2 for bad usage or input, 1 for a failure while running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .cli import UsageError, add_debug_flag, run_cli
from .files.atomic import write_new_file
from .files.run_dir import UniqueNames, claim_numbered_dir
from .ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET

PROG = "python -m yolox_fast.predict"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     epilog=f"example: {PROG} dog.jpg --weights yolox_nano.pth")
    parser.add_argument("source", nargs="+", help="image, folder, glob, video file (mp4/avi/...) or camera index")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", "--ckpt", dest="weights", help="checkpoint (official or yolox_fast), PyTorch")
    weights.add_argument("--onnx", help="a model exported by yolox_fast.export: an .onnx file (ONNX Runtime) "
                         "or an OpenVINO IR folder (--format openvino)")
    parser.add_argument("--model", default=None, help="preset name (default: the checkpoint's)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="input size, a multiple of 32 (default: the size the checkpoint was trained at, else the "
                             "model's 416 or 640; an ONNX file's own)")
    parser.add_argument("--conf", type=float, default=None, help=f"score threshold (default {PREDICT_CONF})")
    parser.add_argument("--iou", "--nms", dest="iou", type=float, default=None,
                        help=f"NMS IoU threshold (default {PREDICT_IOU}; --nms is its old name)")
    parser.add_argument("--class-agnostic", action="store_true", help="one NMS over all classes")
    parser.add_argument("--max-det", type=int, default=PREDICT_MAX_DET,
                        help=f"detections per image (default {PREDICT_MAX_DET})")
    parser.add_argument("--classes", type=int, nargs="+", default=None, metavar="N",
                        help="keep only these class indices, e.g. --classes 0 2 (filtered before NMS)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass for folders (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime)")
    parser.add_argument("--project", default=os.path.join("runs", "predict"), help="parent of the run folders")
    parser.add_argument("--name", default="exp", help="run folder name; numbered when taken (default exp)")
    parser.add_argument("--save-txt", action="store_true", help="YOLO label lines per image under labels/")
    parser.add_argument("--save-conf", action="store_true",
                        help="add the score to the --save-txt lines (class cx cy w h score)")
    parser.add_argument("--save-crop", action="store_true",
                        help="save each detection's image region under crops/<class name>/")
    parser.add_argument("--line-width", type=int, default=None, metavar="PX",
                        help="box line width in pixels (default: from the image size)")
    parser.add_argument("--hide-labels", action="store_true", help="draw boxes without labels")
    parser.add_argument("--hide-conf", action="store_true", help="labels without the score")
    parser.add_argument("--vid-stride", type=int, default=1, metavar="N",
                        help="take every N-th frame of videos and cameras (default 1: all)")
    parser.add_argument("--save-json", action="store_true", help="COCO results file predictions.json")
    parser.add_argument("--no-save", action="store_true", help="do not write drawn images and videos")
    parser.add_argument("--no-progress", action="store_true", help="a line per image instead of a progress bar")
    add_debug_flag(parser)
    return parser


def output_name(source) -> str:
    """The drawn output's file name for ``source``: its own name, ``.jpg`` added when OpenCV cannot write
    that suffix (an input named ``photo`` or ``scan.gif``); videos and cameras become ``.mp4``."""
    import cv2

    if source.kind == "camera":
        return f"{source.name}.mp4"
    if source.kind == "video":
        return os.path.splitext(source.name)[0] + ".mp4"
    name = source.name
    return name if os.path.splitext(name)[1] and cv2.haveImageWriter(name) else name + ".jpg"


def _main(argv: list[str], prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    from .ops.anchors import check_input_size

    if args.img_size is not None:
        check_input_size(args.img_size, "--img-size")
    if args.batch_size < 1 or args.max_det < 1:
        raise UsageError("--batch-size and --max-det must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    for flag, value in (("--line-width", args.line_width), ("--vid-stride", args.vid_stride)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.save_conf and not args.save_txt:
        raise UsageError("--save-conf adds the score to the --save-txt lines: give --save-txt too")
    if args.classes is not None and min(args.classes) < 0:
        raise UsageError(f"--classes takes class indices >= 0, got {' '.join(map(str, args.classes))}")
    for flag, value in (("--conf", args.conf), ("--iou", args.iou)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"{flag} must be in [0, 1], got {value}")
    if args.onnx and args.model:
        raise UsageError("--model applies to --weights; an ONNX file records its model")

    import cv2
    import torch

    from .inference.detector import Detector, resolve_device
    from .inference.results import write_image
    from .inference.sources import frame_count, read_frames, resolve_sources

    if args.threads:
        torch.set_num_threads(args.threads)
    sources = resolve_sources(args.source)
    device = args.device if args.onnx else resolve_device(args.device)
    detector = Detector(args.onnx or args.weights, model=args.model, img_size=args.img_size, conf=args.conf,
                        nms=args.iou, device=device, class_agnostic=args.class_agnostic or None, max_det=args.max_det,
                        batch_size=args.batch_size, threads=args.threads, classes=args.classes,
                        runtime="onnx" if args.onnx else "torch")  # the flag decides, whatever the file's name
    run_dir = claim_numbered_dir(args.project, args.name)
    print(f"{detector.describe()}\nmodel: {detector.info()['summary']}\nresults -> {run_dir}", flush=True)

    # One numbering for every name in the run (files/run_dir.py): outputs per input, label files per image or
    # frame, crops per class folder.
    media_names, label_stems, crop_names = UniqueNames(), UniqueNames(keep_suffix=False), UniqueNames()
    labels_dir = run_dir / "labels"
    if args.save_txt:
        labels_dir.mkdir()
    json_results: list[dict] = []
    json_image_ids: dict[int, str] = {}
    failed: list[str] = []
    total_frames = sum((frame_count(s, args.vid_stride) or 0) for s in sources)
    streaming = any(s.kind != "image" for s in sources)
    show_bar = not args.no_progress and (len(sources) > 1 or streaming)
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=total_frames or None, unit="img" if not streaming else "frame", desc="predict")
    writers: dict[str, cv2.VideoWriter] = {}
    n_images = n_dets = 0
    speed_sums = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    start = time.perf_counter()

    def frames():
        for s in sources:
            yield from read_frames(s, args.vid_stride)

    def report(message: str) -> None:
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def write_outputs(frame, item) -> None:
        """The drawn image or video frame, label file, crops and COCO rows of one frame."""
        source = frame.source
        out_name = media_names.get(source.path, output_name(source))
        stem = os.path.splitext(out_name)[0]
        image_stem = label_stems.get((source.path, frame.index),
                                     stem if source.kind == "image" else f"{stem}_{frame.index}")
        if not args.no_save:
            drawn = item.plot(line_width=args.line_width, labels=not args.hide_labels, conf=not args.hide_conf)
            if source.kind == "image":
                ok, encoded = cv2.imencode(os.path.splitext(out_name)[1], drawn)
                if not ok:
                    raise ValueError(f"OpenCV could not encode {out_name}")
                write_new_file(run_dir / out_name, encoded.tobytes())
            else:
                writer = writers.get(source.path)
                if writer is None:
                    writer = writers[source.path] = _video_writer(str(run_dir / out_name), source, drawn.shape,
                                                                  args.vid_stride)
                writer.write(drawn)
        if args.save_txt:
            lines = "".join(line + "\n" for line in item.to_yolo_lines(args.save_conf))
            write_new_file(labels_dir / f"{image_stem}.txt", lines.encode())
        if args.save_crop:
            for k, (name, crop) in enumerate(zip(item.names, item.crops(), strict=True)):
                folder = name.replace(os.sep, "_") or "_"
                crop_name = crop_names.get((source.path, frame.index, k), f"{folder}/{image_stem}.jpg")
                (run_dir / "crops" / folder).mkdir(parents=True, exist_ok=True)
                write_image(run_dir / "crops" / crop_name, crop)  # dog.jpg, dog2.jpg
        if args.save_json:
            # COCO file names are their ids (000000000139.jpg); other images are numbered in run order
            image_id = int(image_stem) if image_stem.isdigit() else len(json_image_ids) + 1
            if not image_stem.isdigit():
                json_image_ids[image_id] = item.source
            json_results.extend(item.to_coco(image_id, decimals=3))

    try:
        for frame, item in detector.detect_frames(frames()):
            if item is None:  # could not be read or detected on
                failed.append(frame.source.path)
                report(f"skipped {frame.source.path}: {frame.error}")
            else:
                try:
                    write_outputs(frame, item)
                except (OSError, ValueError, cv2.error) as exc:  # this input's outputs only: the run goes on
                    failed.append(frame.source.path)
                    report(f"skipped {frame.label}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
                else:
                    n_images += 1
                    n_dets += len(item)
                    for stage, ms in item.speed.items():
                        speed_sums[stage] += ms
                    if bar is None:
                        print(f"{item.source}: {item.summary()}", flush=True)
            if bar is not None:
                bar.update(1)
    finally:  # also on Ctrl-C / SIGTERM: videos closed playable, every result so far in predictions.json
        if bar is not None:
            bar.close()
        for writer in writers.values():
            writer.release()
        if args.save_json:
            write_new_file(run_dir / "predictions.json", json.dumps(json_results).encode())
            if json_image_ids:
                text = json.dumps({str(k): v for k, v in json_image_ids.items()}, indent=1)
                write_new_file(run_dir / "image_ids.json", text.encode())
    wall = time.perf_counter() - start
    print(f"{n_images} image{'s' if n_images != 1 else ''}, {n_dets} detections, "
          f"{1000 * wall / max(n_images, 1):.1f} ms per image; results in {run_dir}")
    if n_images:
        print("speed per image: " + ", ".join(f"{ms / n_images:.1f} ms {stage}" for stage, ms in speed_sums.items())
              + f" at {detector.img_size[0]}x{detector.img_size[1]}")
    if failed:
        print(f"{prog}: error: {len(failed)} of {len(sources)} inputs could not be read or processed and were "
              f"skipped (first: {failed[0]})", file=sys.stderr)
        return 2
    return 0


def _video_writer(path: str, source, shape, stride: int = 1):
    import cv2

    fps = 30.0
    if source.kind == "video":
        cap = cv2.VideoCapture(source.path)
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        cap.release()
    fps = fps / stride  # every stride-th frame: the video keeps its duration
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {path} (OpenCV has no mp4v encoder here); use --no-save")
    return writer


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
