"""``python -m yolox_fast.train``: train a YOLOX (official recipe) on COCO- or YOLO-format data.

Examples::

    python -m yolox_fast.train                       # built-in synthetic dataset, yolox-nano, CPU, minutes
    python -m yolox_fast.train --coco-images train2017 --coco-ann instances_train2017.json \\
        --val-images val2017 --val-ann instances_val2017.json --model yolox-s --batch-size 64
    python -m yolox_fast.train --data coco128.yaml --model yolox-nano      # ultralytics data.yaml
    python -m yolox_fast.train --yolo-dir my_data --model yolox-tiny --weights yolox_tiny.pth --epochs 50
    python -m yolox_fast.train --resume runs/train/yolox-s        # continue a stopped run
    torchrun --nproc_per_node 8 -m yolox_fast.train --config my_run.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from .cli import Terminated, add_debug_flag, run_cli
from .engine import distributed as dist_utils
from .engine.config import (
    TrainConfig,
    add_config_arguments,
    build_config,
    cli_overrides,
    load_config_file,
    resume_settings,
)
from .engine.train_state import find_latest_run, read_train_state, resolve_resume_path
from .engine.trainer import Trainer
from .files.run_dir import claim_dir, claim_run_dir

#: Runs go to ``RUNS_ROOT/TASK/<model>`` (numbered ``<model>2`` ... when taken; :mod:`yolox_fast.files.run_dir`).
RUNS_ROOT, TASK = Path("runs"), "train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m yolox_fast.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train YOLOX with the official recipe. With no dataset argument, trains yolox-nano on a "
                    "built-in synthetic dataset (a few minutes on a CPU).", epilog=__doc__.split("Examples::")[1])
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (command-line flags win)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="PATH",
                        help="continue a run from a checkpoint or run folder (alone: the newest "
                             "runs/train/*/latest.pt)")
    parser.add_argument("--stop-after-epoch", type=int, metavar="N",
                        help="stop after epoch N (the schedule still runs to --epochs; resume later)")
    parser.add_argument("--exist-ok", action="store_true",
                        help="let --output-dir be a folder that already holds files (an earlier run's are replaced)")
    add_debug_flag(parser)
    add_config_arguments(parser)
    return parser


def holds_files(folder: Path) -> bool:
    """Whether ``folder`` exists and is not empty (an earlier run, or anything else we must not overwrite)."""
    return folder.is_dir() and any(folder.iterdir())


def check_output_dir(output_dir: Path, exist_ok: bool) -> None:
    """Refuse an explicit ``--output-dir`` that holds files: a new run would replace an earlier run's
    checkpoints and records and mix its periodic checkpoints with the old ones. (A read-only check every
    process makes before any writes; :func:`claim_output_dir` then takes the folder atomically.)"""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file, not a folder")
    if holds_files(output_dir) and not exist_ok:
        names = sorted(p.name for p in output_dir.iterdir())
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise ValueError(f"--output-dir {output_dir} already holds files ({shown}): continue that run with "
                         f"--resume {output_dir}, write over it with --exist-ok, or choose another folder")


def claim_output_dir(cfg: TrainConfig, exist_ok: bool) -> Path:
    """The run folder, claimed atomically: ``--output-dir`` (created, or taken empty by creating its
    ``train.log``), else the first free ``runs/train/<model>``, ``<model>2`` ... Two runs started at the same
    moment never get the same folder: the second fails (a named folder) or takes the next number."""
    if cfg.output_dir is not None:
        try:
            return claim_dir(cfg.output_dir, marker="train.log", exist_ok=exist_ok)
        except FileExistsError as exc:
            raise ValueError(f"--output-dir {exc}; choose another folder") from None
    return claim_run_dir(RUNS_ROOT, TASK, cfg.model if cfg.has_data() else f"synthetic-{cfg.model}")


#: Settings that name files or folders: made absolute once, here, so that nothing downstream (the YOLO
#: validation json, a resumed run started from another folder) depends on the working directory.
PATH_SETTINGS = ("coco_images", "coco_ann", "val_images", "val_ann", "yolo_dir", "data", "weights", "data_cache")


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the :data:`PATH_SETTINGS` that are set made absolute (``~`` expanded)."""
    values = {name: str(Path(getattr(cfg, name)).expanduser().resolve())
              for name in PATH_SETTINGS if getattr(cfg, name)}
    return cfg.updated(values)


def make_config(args: argparse.Namespace) -> tuple[TrainConfig, Path | None, dict | None]:
    """The run's config, and the checkpoint to resume from with its content (None, None for a new run)."""
    file_values = load_config_file(args.config) if args.config else {}
    cli_values = cli_overrides(args)
    resume_path = checkpoint = None
    if args.resume:
        resume_path = find_latest_run(RUNS_ROOT / TASK) if args.resume == "auto" else resolve_resume_path(args.resume)
        # The stopped run's settings, then whatever is given now (more --epochs, another --device, ...).
        checkpoint = read_train_state(resume_path)
        # Settings given now win; those the run derived from a setting given now are derived again.
        saved = resume_settings(checkpoint["config"], {**file_values, **cli_values})
        file_values = {**saved, **file_values, "output_dir": str(resume_path.parent)}
    cfg = absolute_paths(build_config(file_values, cli_values))
    return cfg, resume_path, checkpoint


def prepare_data(cfg: TrainConfig, ctx: dist_utils.DistContext, log=print):
    """Datasets for ``cfg``: ``(cfg with data paths filled, training set, class names, val (images, json) or None)``.

    No dataset in ``cfg``: the built-in synthetic one (generated once into ``cfg.data_cache``). YOLO
    data (a ``data.yaml`` or a YOLO folder, :mod:`yolox_fast.data.dataset_spec`): its train split, and its
    val split if there is one, converted to a COCO json in the run folder for pycocotools.
    """
    from .data import COCODetection
    from .data.dataset_spec import read_data_yaml, yolo_folder_spec

    if not cfg.has_data():
        from .data import make_synthetic_dataset

        root = Path(cfg.data_cache).expanduser()
        if ctx.is_main:
            log(f"no dataset given: using the built-in synthetic dataset in {root}")
        # One process generates, the others wait for its answer and then read the files.
        info = dist_utils.broadcast_object(
            make_synthetic_dataset(root, num_train=cfg.synthetic_train, num_val=cfg.synthetic_val,
                                   image_size=cfg.synthetic_size) if ctx.is_main else None)
        cfg = cfg.updated({"coco_images": str(info["train_images"]), "coco_ann": str(info["train_ann"]),
                           "val_images": str(info["val_images"]), "val_ann": str(info["val_ann"])})
    bad_images = "skip" if cfg.skip_bad_images else "error"
    if cfg.coco_images:
        train = COCODetection(cfg.coco_images, cfg.coco_ann, cache_images=cfg.cache_images, bad_images=bad_images)
        val = (cfg.val_images, cfg.val_ann) if cfg.val_images else None
        return cfg, train, list(train.class_names), val
    spec = read_data_yaml(cfg.data) if cfg.data else yolo_folder_spec(cfg.yolo_dir)
    names = cfg.class_names
    if names and len(names) == 1 and Path(names[0]).is_file():  # --class-names classes.txt
        names = names[0]
    train = spec.dataset("train", class_names=names, cache_images=cfg.cache_images, bad_images=bad_images)
    val = None
    if spec.has_split("val"):
        ann = Path(cfg.output_dir) / "val_coco.json"
        if ctx.is_main:  # pycocotools evaluates against a COCO json: write the validation labels as one
            val_set = spec.dataset("val", class_names=list(train.class_names))
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.write_text(json.dumps(val_set.to_coco_dict()))
        dist_utils.barrier()
        val = (str(spec.root), str(ann))  # the json names every image by its absolute path
    return cfg, train, list(train.class_names), val


def make_evaluator(cfg: TrainConfig, val, class_names, ctx: dist_utils.DistContext):
    """``evaluate(model) -> metrics`` with pycocotools on the validation set (rank 0 only), or None; it keeps
    the last evaluation's detections for the validation folder written after training (``write_report``).

    The :class:`~yolox_fast.evaluation.coco.COCOEvaluator` is built once, so a missing validation image
    or a class-count mismatch fails before the first epoch, not after it.
    """
    if val is None or not ctx.is_main:
        return None
    from .evaluation.coco import COCOEvaluator
    from .evaluation.report import EvaluatorKeepingDetections

    evaluator = COCOEvaluator(val[0], val[1], img_size=cfg.test_size, conf=cfg.test_conf, nms=cfg.nms,
                              batch_size=cfg.eval_batch_size, class_names=class_names, progress=cfg.progress)
    return EvaluatorKeepingDetections(evaluator, ctx.device)


def make_train_set(cfg: TrainConfig, base):
    """The augmented training set (mosaic, mixup, HSV, flip, affine) with the config's settings."""
    from .data import TrainAugmentDataset

    return TrainAugmentDataset(
        base, input_size=(cfg.img_size, cfg.img_size), mosaic=True, mosaic_prob=cfg.mosaic_prob,
        mixup_prob=cfg.mixup_prob, hsv_prob=cfg.hsv_prob, flip_prob=cfg.flip_prob, degrees=cfg.degrees,
        translate=cfg.translate, mosaic_scale=cfg.mosaic_scale, mixup_scale=cfg.mixup_scale, shear=cfg.shear,
        max_labels=cfg.max_labels, seed=cfg.seed)


def run(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, train, print where the results are; returns :meth:`Trainer.fit`'s summary."""
    args = build_parser().parse_args(argv)
    cfg, resume_path, checkpoint = make_config(args)
    resuming_in_place = resume_path is not None and Path(cfg.output_dir).resolve() == resume_path.parent.resolve()
    if cfg.output_dir is not None and not resuming_in_place:  # checked by every process before any writes
        check_output_dir(Path(cfg.output_dir), args.exist_ok)
    ctx = dist_utils.setup_distributed(cfg.device)
    trainer = None
    try:
        if not resuming_in_place:  # rank 0 claims the folder; every process learns the outcome
            claimed = error = None
            if ctx.is_main:
                try:
                    claimed = str(claim_output_dir(cfg, args.exist_ok))
                except (OSError, ValueError) as exc:
                    error = str(exc)
            claimed, error = dist_utils.broadcast_object((claimed, error))
            if error is not None:
                raise ValueError(error)
            cfg = cfg.updated({"output_dir": claimed})
        cfg, base, class_names, val = prepare_data(cfg, ctx)
        if ctx.is_main and resume_path is None:  # look at the labels before training on them
            from .engine.visual_checks import plot_label_distribution

            plot_label_distribution(*base.boxes_xywhn(), class_names, Path(cfg.output_dir) / "labels.png")
        evaluate = make_evaluator(cfg, val, class_names, ctx)
        trainer = Trainer(cfg, make_train_set(cfg, base), class_names, evaluate=evaluate, ctx=ctx,
                          resume_from=resume_path, checkpoint=checkpoint)
        checkpoint = None  # the trainer holds what it needs; do not keep a second copy for the whole run
        if val is None:
            trainer.log("no validation set (--val-images/--val-ann, or a val split in --data/--yolo-dir): "
                        "no mAP, no best.pt")
        try:
            with stop_between_steps(trainer):
                result = trainer.fit(stop_after_epoch=args.stop_after_epoch)
        except KeyboardInterrupt as exc:
            trainer.log(interrupted_message(trainer, exc))
            raise
        if evaluate is not None:  # the final evaluation explained: per-class table, curves, confusion matrix, ...
            report = evaluate.write_report(Path(cfg.output_dir) / "val")
            result["validation_dir"] = report["dir"] if report else None
        if ctx.is_main:
            print_summary(result)
        return result
    finally:
        if trainer is not None:
            trainer.close()
        dist_utils.cleanup_distributed()


@contextlib.contextmanager
def stop_between_steps(trainer: Trainer):
    """Ctrl-C and SIGTERM during training stop it after the step in progress, with ``latest.pt`` saved as of
    that step (a scheduler's pre-emption does not cost the epoch). A second signal, or one outside the
    steps (evaluation, start-up), stops at once, as Ctrl-C always did."""
    def handler(signum, frame):
        reason = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if not trainer.request_stop(reason):
            raise reason

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(s, handler) for s in signals]
    try:
        yield
    finally:
        for s, old in zip(signals, previous, strict=True):
            signal.signal(s, old)


def interrupted_message(trainer: Trainer, reason: BaseException | None = None) -> str:
    """What a stop leaves: the checkpoint written (part-way through an epoch, or an epoch's end) and how to
    continue, or nothing."""
    what = "stopped by SIGTERM" if isinstance(reason, Terminated) else "interrupted"
    resume = f"continue with python -m yolox_fast.train --resume {trainer.output_dir}"
    if trainer.stopped_at is not None:
        epoch, batches = trainer.stopped_at
        where = (f"after batch {batches} of {trainer.iters_per_epoch} of epoch {epoch + 1}" if batches
                 else f"after epoch {epoch}")
        return f"{what}; latest.pt holds the state {where}: {resume}"
    if trainer.epochs_saved > 0 and (trainer.output_dir / "latest.pt").is_file():
        return (f"{what}; latest.pt holds the state after epoch {trainer.epochs_saved} (the interrupted epoch "
                f"is redone): {resume}")
    return (f"{what} before the first step finished, before any checkpoint was written: there is nothing to "
            "resume; start the run again")


def print_summary(result: dict) -> None:
    lines = ["", f"done: {result['epochs_done']} epochs"]
    if result["best_ap"] is not None:
        last = result["last_metrics"] or {}
        lines.append(f"  best AP50:95 {result['best_ap']:.4f}; last AP50:95 {last.get('AP', float('nan')):.4f}, "
                     f"AP50 {last.get('AP50', float('nan')):.4f}")
    if result.get("stopped_early"):
        lines.append(f"  stopped early after epoch {result['stopped_early']} (--patience): no better AP")
    lines.append(f"  checkpoint: {result['checkpoint']}")
    if result["best_checkpoint"]:
        lines.append(f"  best:       {result['best_checkpoint']}")
    lines.append(f"  results:    {result['results_csv']}")
    if result.get("validation_dir"):
        lines.append(f"  validation: {result['validation_dir']} (last evaluation: per-class table, curves, "
                     "confusion matrix, examples)")
    if result["plot"]:
        lines.append(f"  plot:       {result['plot']}")
    lines.append(f"  tensorboard --logdir {Path(result['output_dir']) / 'tensorboard'}")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status per :mod:`yolox_fast.cli` (2: bad settings or data, 1: training failed)."""
    return run_cli("yolox_fast.train", _main, argv)


def _main(argv: list[str]) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
