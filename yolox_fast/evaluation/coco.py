"""COCO box evaluation of a YOLOX model with pycocotools, following the official ``COCOEvaluator``.

Protocol: every image of the annotation file (or the chosen ``image_ids``) is read as BGR, letterboxed
to ``img_size`` (keep ratio, top-left paste on 114, no normalisation), run through the model in eval
mode, filtered with :func:`yolox_fast.ops.postprocess_padded` (``conf``, class-aware NMS ``nms``, no
detection limit), mapped back to the original image (divide by the resize ratio) and scored with
``COCOeval(iouType="bbox")``. The model runs through :mod:`yolox_fast.inference.runner` and the
results are written by :meth:`yolox_fast.inference.Detections.to_coco`, as in prediction.

Model class ``i`` is COCO category ``sorted(coco.getCatIds())[i]`` (the official ``COCODataset`` rule),
and a detection's score is ``objectness * class confidence``.

One code path serves the command line (:mod:`yolox_fast.eval`), :func:`evaluate_coco` and the trainer:
build a :class:`COCOEvaluator` once per split, then call :meth:`COCOEvaluator.evaluate` (or
:meth:`~COCOEvaluator.predict` and :meth:`~COCOEvaluator.score` separately) on an in-memory model.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from ..data import read_image
from ..data.datasets import path_in_folder
from ..inference.results import Detections
from ..inference.runner import DetectSettings, Runner, TorchRunner, letterbox_batch, make_runner, model_num_classes

#: Names of ``COCOeval.stats`` in order; -1 means "no ground truth in that range" (pycocotools' convention).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@contextlib.contextmanager
def _captured_stdout(verbose: bool) -> Iterator[io.StringIO]:
    """Collect what pycocotools prints; let it through as well when ``verbose``."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer
    if verbose:
        print(buffer.getvalue(), end="")


def _coco_problem(data) -> str | None:
    """Why ``data`` (a parsed JSON document) is not a COCO instances file, or None when it is one."""
    if not isinstance(data, dict):
        return f"the top level is a {type(data).__name__}, not an object"
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        return f"no {' / '.join(repr(k) for k in missing)} list"
    if not data["categories"]:
        return "'categories' is empty"
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            return f"a category without 'id' and 'name': {cat!r:.100}"
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            return f"an image without 'id' and 'file_name': {img!r:.100}"
    cat_ids = {cat["id"] for cat in data["categories"]}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or any(k not in ann for k in ("image_id", "category_id", "bbox", "area")):
            return f"an annotation without 'image_id', 'category_id', 'bbox' and 'area': {ann!r:.100}"
        if ann["category_id"] not in cat_ids:
            return f"annotation {ann.get('id')} has category_id {ann['category_id']}, which is not in 'categories'"
    return None


def load_coco(ann_file: str | os.PathLike | Mapping | COCO, verbose: bool = False) -> COCO:
    """A pycocotools ``COCO`` index of an instances annotation file, checked first.

    Args:
        ann_file: path of a COCO instances JSON file, the parsed document (a dict), or a ``COCO`` object
            (returned as is).
        verbose: let pycocotools print its progress.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON, or not a COCO instances file (the message says what is missing).
    """
    if isinstance(ann_file, COCO):
        return ann_file
    if isinstance(ann_file, Mapping):
        data, where = dict(ann_file), "the annotation dict"
    else:
        path = os.fspath(ann_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"COCO annotation file not found: {path}")
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a COCO annotation file: invalid JSON ({exc})") from exc
        where = path
    problem = _coco_problem(data)
    if problem:
        raise ValueError(f"{where} is not a COCO instances annotation file: {problem}")
    coco = COCO()
    coco.dataset = data
    coco.source = where  # named in later messages (e.g. a split without ground-truth boxes)
    with _captured_stdout(verbose):
        coco.createIndex()
    return coco


def format_per_class_table(per_class: Mapping[str, float], per_class_ap50: Mapping[str, float] | None = None,
                           columns: int = 3) -> str:
    """A text table of per-class AP (and AP50) in percent, ``columns`` classes side by side.

    Classes with no ground truth in the evaluated images (NaN) show as ``-``.
    """
    def pct(value: float) -> str:
        return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"

    names = list(per_class)
    width = max([len("class")] + [len(n) for n in names])
    head = f"{'class':<{width}} {'AP':>5}" + (f" {'AP50':>5}" if per_class_ap50 is not None else "")
    cells = []
    for name in names:
        cell = f"{name:<{width}} {pct(per_class[name]):>5}"
        if per_class_ap50 is not None:
            cell += f" {pct(per_class_ap50.get(name, float('nan'))):>5}"
        cells.append(cell)
    columns = max(1, min(columns, len(cells)))
    lines = [" | ".join([head] * columns), "-+-".join(["-" * len(head)] * columns)]
    for start in range(0, len(cells), columns):
        lines.append(" | ".join(cells[start : start + columns]))
    return "\n".join(lines)


class COCOEvaluator:
    """COCO box evaluation on one split; build once, evaluate any number of models (e.g. every epoch).

    Args:
        image_dir: folder holding the images; an image is ``image_dir / file_name`` of the annotation file.
        ann_file: COCO instances JSON (path, parsed dict or ``COCO`` object).
        img_size: network input size, an int or ``(h, w)``.
        conf: keep detections with ``obj * cls_conf >= conf`` (0.01 is the official evaluation setting).
        nms: NMS IoU threshold (0.65 officially).
        batch_size: images per forward pass.
        class_agnostic: one NMS over all classes instead of one per class.
        class_names: name of each model class, for ``per_class`` and the table; defaults to the
            categories' names in id order.
        image_ids: evaluate only these image ids (default: every image of the annotation file).
        prefetch: decode the next batch in a background thread while the model runs. None (default):
            only when the model runs on a GPU. On a 2-core CPU it made evaluation slower (the model
            already uses every core; coco128 with YOLOX-Nano: 3.9 s instead of 3.4 s), so it is off there.
        verbose: let pycocotools print its progress and summary.
        progress: show a tqdm progress bar over batches.

    Raises:
        FileNotFoundError: the annotation file, the image folder or one of the images is missing.
        ValueError: a bad annotation file, one without ground-truth boxes on the evaluated images (COCOeval
            would report AP -1), unknown ``image_ids`` or ``class_names`` of the wrong length.
    """

    def __init__(self, image_dir: str | os.PathLike, ann_file, img_size: int | tuple[int, int] = 416,
                 conf: float = 0.01, nms: float = 0.65, batch_size: int = 8, class_agnostic: bool = False,
                 class_names: Sequence[str] | None = None, image_ids: Sequence[int] | None = None,
                 prefetch: bool | None = None, verbose: bool = False, progress: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(self.img_size) != 2 or min(self.img_size) < 1:
            raise ValueError(f"img_size must be a positive int or (h, w), got {img_size!r}")
        self.conf, self.nms, self.batch_size = float(conf), float(nms), int(batch_size)
        self.class_agnostic, self.prefetch = bool(class_agnostic), prefetch
        self.verbose, self.progress = bool(verbose), bool(progress)

        self.coco = load_coco(ann_file, verbose=verbose)
        self.cat_ids = sorted(self.coco.getCatIds())
        if class_names is None:
            class_names = [self.coco.cats[c]["name"] for c in self.cat_ids]
        if len(class_names) != len(self.cat_ids):
            raise ValueError(f"{len(class_names)} class_names given for {len(self.cat_ids)} annotation categories")
        self.class_names = [str(n) for n in class_names]

        if image_ids is None:
            image_ids = self.coco.getImgIds()
        unknown = [i for i in image_ids if i not in self.coco.imgs]
        if unknown:
            raise ValueError(f"image ids not in the annotation file: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        self.image_ids = list(image_ids)
        # COCOeval ignores crowd boxes and scores a split without any other box as AP -1: refuse it now.
        if not any(not a.get("iscrowd", 0) for i in self.image_ids for a in self.coco.imgToAnns.get(i, ())):
            where = getattr(self.coco, "source", "the annotation set")
            raise ValueError(f"{where} has no ground-truth boxes on its {len(self.image_ids)} evaluated images "
                             "(empty or crowd-only 'annotations'): nothing to evaluate against; probably the wrong "
                             "annotation file")

        self.image_dir = os.fspath(image_dir)
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        where = getattr(self.coco, "source", "the annotation set")
        for i in self.image_ids:  # a name from a stranger's json must not lead outside the image folder
            path_in_folder(self.image_dir, self.coco.imgs[i]["file_name"], f"{where}: image id {i}")
        # Check every file now, so that a typo fails before minutes of inference (or of training).
        missing = [p for p in (self._path(i) for i in self.image_ids) if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.image_ids)} images listed in the annotation "
                                    f"file are missing from {self.image_dir}, e.g. {missing[0]}")

    @property
    def num_classes(self) -> int:
        """Number of annotation categories (the model must predict exactly this many classes)."""
        return len(self.cat_ids)

    def _path(self, image_id: int) -> str:
        return os.path.join(self.image_dir, self.coco.imgs[image_id]["file_name"])

    def _load_batch(self, image_ids: Sequence[int]) -> tuple[torch.Tensor, list[tuple[float, float, float]]]:
        """Decode and letterbox ``image_ids``: ``[B, 3, h, w]`` float32 and, per image, ``(r, sx, sy)``.

        A network box maps back as ``box / r * (sx, sy)``; ``sx``/``sy`` are 1 unless the file's size
        differs from the one recorded in the annotations, whose frame the boxes must be in.
        """
        images = [read_image(self._path(image_id)) for image_id in image_ids]
        batch, ratios = letterbox_batch(images, self.img_size)
        scales = []
        for image_id, img, r in zip(image_ids, images, ratios, strict=True):
            info = self.coco.imgs[image_id]
            h, w = img.shape[:2]
            scales.append((r, info.get("width", w) / w, info.get("height", h) / h))
        return batch, scales

    def _batches(self, prefetch: bool) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[float, float, float]]]]:
        """``(image ids, images, scales)`` per batch; decoding of batch k+1 overlaps the use of batch k
        when ``prefetch`` (OpenCV releases the GIL while decoding and resizing)."""
        chunks = [self.image_ids[s : s + self.batch_size] for s in range(0, len(self.image_ids), self.batch_size)]
        if not chunks:
            return
        if not prefetch:
            for chunk in chunks:
                yield (chunk, *self._load_batch(chunk))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coco-eval-decode") as pool:
            pending = pool.submit(self._load_batch, chunks[0])
            for k, chunk in enumerate(chunks):
                images, scales = pending.result()  # re-raises a decoding error here, with its message
                if k + 1 < len(chunks):
                    pending = pool.submit(self._load_batch, chunks[k + 1])
                yield chunk, images, scales

    def predict(self, model, device: torch.device | str | None = None) -> list[dict]:
        """Run ``model`` over the split; COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h],
        "score"}]`` in original-image pixels (the annotation file's frame).

        ``model``: an ``nn.Module`` (the model being trained, a loaded checkpoint), an exported model in ONNX
        Runtime (:class:`yolox_fast.deploy.onnx_runtime.OnnxModel`) or a runner; it runs through
        :mod:`yolox_fast.inference.runner`, the path prediction takes, with this evaluator's ``conf``,
        ``nms`` and NMS mode and no detection limit. A graph with NMS brings its own thresholds (``conf``
        may only be higher, see :meth:`~yolox_fast.deploy.onnx_runtime.OnnxModel.check_settings`).

        An ``nn.Module`` runs in eval mode; every module's train/eval flag is restored afterwards, and so
        is the model's device when ``device`` differs from it.

        Raises:
            ValueError: the model's class count (or an ONNX model's input size) differs from the
                evaluation's, or an image cannot be decoded (the message names the file).
        """
        if not isinstance(model, nn.Module):
            return self._predict_with(make_runner(model))
        declared = model_num_classes(model)
        if declared is not None and declared != self.num_classes:
            raise ValueError(f"the model predicts {declared} classes but the annotation file has "
                             f"{self.num_classes} categories")
        param = next(model.parameters(), None)
        model_device = param.device if param is not None else torch.device("cpu")
        device = torch.device(device) if device is not None else model_device
        modes = [(m, m.training) for m in model.modules()]
        moved = device != model_device
        try:
            if moved:
                model.to(device)
            model.eval()
            runner = TorchRunner(model, class_names=self.class_names, img_size=self.img_size, device=device)
            return self._predict_with(runner, device.type != "cpu")
        finally:
            if moved:
                model.to(model_device)
            for module, training in modes:
                module.training = training

    def _predict_with(self, runner: Runner, on_gpu: bool = False) -> list[dict]:
        """The COCO results of ``runner`` over the split (prefetching by default only on a GPU)."""
        if runner.num_classes != self.num_classes:
            raise ValueError(f"the model predicts {runner.num_classes} classes but the annotation file has "
                             f"{self.num_classes} categories")
        if getattr(getattr(runner, "model", None), "dynamic_size", False):
            runner.img_size = tuple(self.img_size)  # a --dynamic export runs at the evaluation size
        if runner.img_size is not None and tuple(runner.img_size) != tuple(self.img_size):
            raise ValueError(f"the model takes {runner.img_size[0]}x{runner.img_size[1]} images; "
                             f"evaluate at that size (got {self.img_size[0]}x{self.img_size[1]})")
        settings = DetectSettings(self.conf, self.nms, self.class_agnostic, max_det=None)
        results: list[dict] = []
        prefetch = self.prefetch if self.prefetch is not None else on_gpu
        batches = generator = self._batches(prefetch)
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, total=math.ceil(len(self.image_ids) / self.batch_size), desc="COCO eval",
                           unit="batch")
        try:
            for image_ids, images, scales in batches:
                found = runner(images, settings)
                for b, (image_id, (r, sx, sy)) in enumerate(zip(image_ids, scales, strict=True)):
                    info = self.coco.imgs[image_id]
                    detections = Detections.from_padded(found, b, r, self.class_names, scale_xy=(sx, sy),
                                                         orig_shape=(info.get("height", 0), info.get("width", 0)))
                    results.extend(detections.to_coco(image_id, category_ids=self.cat_ids))
        finally:
            if batches is not generator:
                batches.close()  # the progress bar
            generator.close()  # stop the decoding thread now, also when the model raised
        return results

    def score(self, results: Sequence[Mapping]) -> dict:
        """COCOeval (bbox) of ``results`` over this split's images.

        Returns:
            ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}``
            as fractions (-1 where the split has no ground truth of that size), ``"per_class"`` and
            ``"per_class_AP50"`` ``{class name: AP}`` (NaN for a class with no ground truth here),
            ``"table"`` (text), ``"summary"`` (pycocotools' summary text), ``"num_images"``,
            ``"num_detections"`` and ``"cocoeval_s"`` (seconds).
        """
        start = time.perf_counter()
        with _captured_stdout(self.verbose):
            if results:
                # loadRes adds keys to the dicts it gets: hand it copies.
                detections = self.coco.loadRes([dict(r) for r in results])
            else:
                # loadRes cannot take an empty list; an empty result set scores AP 0 for every class.
                detections = COCO()
                detections.dataset = {"images": list(self.coco.dataset["images"]),
                                      "categories": list(self.coco.dataset["categories"]), "annotations": []}
                detections.createIndex()
            coco_eval = COCOeval(self.coco, detections, iouType="bbox")
            coco_eval.params.imgIds = list(self.image_ids)
            coco_eval.evaluate()
            coco_eval.accumulate()
        with _captured_stdout(self.verbose) as summary:
            coco_eval.summarize()

        stats = {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats, strict=True)}
        # precision: [IoU thresholds, recall points, classes, area ranges, max dets]; area "all", 100 dets.
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        per_class, per_class_ap50 = {}, {}
        for k, name in enumerate(self.class_names):
            p = precision[:, :, k]
            p50 = p[0]
            per_class[name] = float(np.mean(p[p > -1])) if (p > -1).any() else float("nan")
            per_class_ap50[name] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else float("nan")
        stats.update(per_class=per_class, per_class_AP50=per_class_ap50,
                     table=format_per_class_table(per_class, per_class_ap50), summary=summary.getvalue(),
                     num_images=len(self.image_ids), num_detections=len(results),
                     cocoeval_s=time.perf_counter() - start)
        return stats

    def evaluate(self, model: nn.Module, device: torch.device | str | None = None) -> dict:
        """:meth:`predict` then :meth:`score`; the dict of :meth:`score` plus ``"inference_s"``."""
        start = time.perf_counter()
        results = self.predict(model, device)
        inference_s = time.perf_counter() - start
        stats = self.score(results)
        stats["inference_s"] = inference_s
        return stats


def coco_results(model: nn.Module, image_dir, ann_file, img_size: int | tuple[int, int] = 416, conf: float = 0.01,
                 nms: float = 0.65, batch_size: int = 8, device=None, class_agnostic: bool = False,
                 **kwargs) -> list[dict]:
    """The COCO result dicts of ``model`` on a split, without scoring them (see :meth:`COCOEvaluator.predict`)."""
    evaluator = COCOEvaluator(image_dir, ann_file, img_size=img_size, conf=conf, nms=nms, batch_size=batch_size,
                              class_agnostic=class_agnostic, **kwargs)
    return evaluator.predict(model, device)


def evaluate_coco(model: nn.Module, image_dir, ann_file, img_size: int | tuple[int, int] = 416, conf: float = 0.01,
                  nms: float = 0.65, batch_size: int = 8, device=None, class_agnostic: bool = False,
                  progress: bool = False, class_names: Sequence[str] | None = None, verbose: bool = False,
                  **kwargs) -> dict:
    """COCO bbox evaluation of ``model`` on the images of ``ann_file`` found in ``image_dir``.

    Args:
        model: a YOLOX model (eval output ``[B, A, 5 + C]``); its train/eval state is restored afterwards.
        image_dir: folder of the images named in ``ann_file``.
        ann_file: COCO instances JSON (path, dict or ``COCO``).
        img_size, conf, nms, batch_size, class_agnostic: the evaluation protocol (official defaults
            for YOLOX-Nano/Tiny: 416, 0.01, 0.65, class-aware).
        device: where to run (default: the model's device).
        progress: tqdm progress bar.
        class_names: names for the per-class table (default: the category names).
        verbose: show pycocotools' output.
        **kwargs: ``image_ids``, ``prefetch`` (see :class:`COCOEvaluator`).

    Returns:
        The dict of :meth:`COCOEvaluator.score` (``"AP"`` is AP50:95 as a fraction, ``"per_class"``,
        ``"table"``, ...) plus ``"inference_s"``.
    """
    evaluator = COCOEvaluator(image_dir, ann_file, img_size=img_size, conf=conf, nms=nms, batch_size=batch_size,
                              class_agnostic=class_agnostic, class_names=class_names, verbose=verbose,
                              progress=progress, **kwargs)
    return evaluator.evaluate(model, device)
