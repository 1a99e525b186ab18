"""``python -m yolox_fast.train`` end to end on tiny settings: the built-in default, resume, YOLO data, coco128."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine_trainer import one_thread  # noqa: F401, I001  (autouse fixture: one torch thread)

from yolox_fast.engine.train_state import read_train_state
from yolox_fast.train import main, run

REPO = Path(__file__).resolve().parents[1]

# Tiny everything: 8 synthetic 64-px training images, 2 steps per epoch.
TINY = ["--synthetic-train", "8", "--synthetic-val", "4", "--synthetic-size", "64", "--img-size", "64",
        "--batch-size", "4", "--workers", "0", "--no-progress", "--no-tensorboard", "--log-interval", "1"]


def rows(path):
    return list(csv.DictReader(open(path)))


def test_no_data_default_path_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--data-cache", str(tmp_path / "cache"), "--output-dir", str(out), "--epochs", "2",
            "--no-aug-epochs", "1"]
    assert main([*args, "--stop-after-epoch", "1"]) == 0
    printed = capsys.readouterr().out
    assert "no dataset given: using the built-in synthetic dataset" in printed
    assert f"checkpoint: {out / 'latest.pt'}" in printed and f"plot:       {out / 'results.png'}" in printed
    assert read_train_state(out / "latest.pt")["epoch"] == 1

    result = run(["--resume", str(out), "--no-progress"])  # settings come back from the checkpoint
    ckpt = read_train_state(out / "latest.pt")
    assert ckpt["epoch"] == 2 and ckpt["model_name"] == "yolox-nano"
    assert ckpt["class_names"] == ["circle", "square", "triangle", "cross", "star"]
    assert ckpt["config"]["img_size"] == 64 and ckpt["config"]["coco_ann"].endswith("instances_train.json")
    table = rows(out / "results.csv")
    assert [r["epoch"] for r in table] == ["1", "2"] and all(r["AP"] != "" for r in table)  # eval every epoch here
    assert result["best_checkpoint"] == out / "best.pt" and (out / "results.png").stat().st_size > 1000
    assert "resumed from" in (out / "train.log").read_text()


def test_bad_arguments_fail_with_a_message(tmp_path, capsys):
    assert main(["--resume", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    (tmp_path / "latest.pt").write_bytes(b"not a checkpoint")
    assert main(["--resume", str(tmp_path)]) == 2
    assert "not a PyTorch checkpoint (text)" in capsys.readouterr().err
    assert main(["--coco-images", str(tmp_path), "--coco-ann", str(tmp_path / "missing.json"), *TINY,
                 "--output-dir", str(tmp_path / "run")]) == 2
    assert "missing.json" in capsys.readouterr().err


def synthetic_as_yolo(tmp_path, flat=False):
    """The synthetic set as a YOLO folder ``tmp_path/yolo`` with classes.txt: images/{train,val} +
    labels/{train,val}, or (``flat``) its training images alone in images/ + labels/. Returns the synthetic info."""
    from yolox_fast.data import COCODetection, make_synthetic_dataset

    info = make_synthetic_dataset(tmp_path / "cache", num_train=8, num_val=4, image_size=64)
    root = tmp_path / "yolo"
    splits = (("train", info["train_images"], info["train_ann"]),) if flat else (
        ("train", info["train_images"], info["train_ann"]), ("val", info["val_images"], info["val_ann"]))
    for split, images, ann in splits:
        coco = COCODetection(images, ann)
        image_out = root / "images" / ("" if flat else split)
        label_out = root / "labels" / ("" if flat else split)
        image_out.mkdir(parents=True)
        label_out.mkdir(parents=True)
        for i in range(len(coco)):
            img, targets, _ = coco.load(i)
            src = Path(coco.image_path(i))
            shutil.copy(src, image_out / src.name)
            h, w = img.shape[:2]
            lines = [f"{int(c)} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"
                     for x1, y1, x2, y2, c in targets.tolist()]
            (label_out / f"{src.stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(info["class_names"]) + "\n")
    return info


def test_yolo_format_folder(tmp_path, monkeypatch):
    """A YOLO folder made from the synthetic set: images/{train,val}, labels/{train,val}, classes.txt, given
    as a relative --yolo-dir (issue 9.7: the validation json named ``yolo/images/val/yolo/images/val/...``)."""
    info = synthetic_as_yolo(tmp_path)
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    result = run(["--yolo-dir", "yolo", "--model", "yolox-nano", "--output-dir", str(out), "--epochs", "1",
                  "--no-aug-epochs", "0", *TINY])
    assert read_train_state(out / "latest.pt")["class_names"] == info["class_names"]
    val = json.loads((out / "val_coco.json").read_text())
    assert len(val["images"]) == 4 and [c["name"] for c in val["categories"]] == info["class_names"]
    assert result["last_metrics"] is not None and rows(out / "results.csv")[0]["AP"] != ""


def test_flat_yolo_folder_trains_without_validation(tmp_path, capsys):
    """The flat layout docs/training.md shows for --yolo-dir (images/ + labels/, no split folders): a training
    split, no validation (issue 17.1: it was refused with "expected one of images/train, train/images")."""
    info = synthetic_as_yolo(tmp_path, flat=True)
    out = tmp_path / "run"
    result = run(["--yolo-dir", str(tmp_path / "yolo"), "--model", "yolox-nano", "--output-dir", str(out),
                  "--epochs", "1", "--no-aug-epochs", "0", *TINY])
    assert result["epochs_done"] == 1 and result["last_metrics"] is None
    assert read_train_state(out / "latest.pt")["class_names"] == info["class_names"]
    assert "no validation set" in capsys.readouterr().out


def test_ultralytics_data_yaml_trains_with_visual_checks_and_a_validation_folder(tmp_path, shared_data):
    """Issue 17.1, 17.2, 17.7: ``--data data.yaml`` (ultralytics layout: names as a map, images/<split> and
    labels/<split>) trains with no conversion; the run folder gets labels.png, the first augmented batches with
    their boxes, and the final evaluation's folder (per-class table, curves, confusion matrix, detections)."""
    import cv2
    from ultralytics_layout import coco_subset_as_ultralytics

    coco128 = shared_data / "coco128"
    if not (coco128 / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"coco128 not found under {coco128}")
    data_yaml, labels_json, _ = coco_subset_as_ultralytics(
        coco128 / "train2017", coco128 / "annotations" / "instances_train2017.json", tmp_path / "ds", 8)
    out = tmp_path / "run"
    result = run(["--data", str(data_yaml), "--model", "yolox-nano", "--output-dir", str(out), "--epochs", "1",
                  "--no-aug-epochs", "0", "--img-size", "96", "--batch-size", "4", "--workers", "0",
                  "--no-progress", "--no-tensorboard"])
    categories = json.loads(labels_json.read_text())["categories"]
    names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    assert read_train_state(out / "latest.pt")["class_names"] == names
    assert len(json.loads((out / "val_coco.json").read_text())["images"]) == 8
    assert result["last_metrics"] is not None
    val = result["validation_dir"]
    assert val == out / "val"
    for name in ("metrics.json", "per_class.csv", "PR_curve.png", "F1_curve.png", "confusion_matrix.png",
                 "confusion_matrix.csv", "predictions.json"):
        assert (val / name).stat().st_size > 0, name
    assert json.loads((val / "metrics.json").read_text())["AP"] == pytest.approx(result["last_metrics"]["AP"])
    labels_png = cv2.imread(str(out / "labels.png"))
    assert labels_png is not None and labels_png.shape[0] >= 500
    batches = sorted(p.name for p in out.glob("train_batch*.jpg"))
    assert batches == ["train_batch0.jpg", "train_batch1.jpg"]  # 8 images, batch 4: two batches in the run
    grid = cv2.imread(str(out / "train_batch0.jpg"))
    assert grid.shape[:2] == (2 * 96, 2 * 96)  # 4 images of 96 px, 2 x 2


def test_few_iterations_on_real_coco128_images(tmp_path, shared_data):
    """Loader, mosaic, loss, step, checkpoint and pycocotools evaluation on a handful of real images."""
    coco128, calib = shared_data / "coco128", shared_data / "weights" / "yolox_nano_calib.pth"
    if not (coco128 / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"coco128 not found under {coco128}")
    full = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    keep = {img["id"] for img in full["images"][:8]}
    subset = {**full, "images": [i for i in full["images"] if i["id"] in keep],
              "annotations": [a for a in full["annotations"] if a["image_id"] in keep]}
    ann = tmp_path / "subset.json"
    ann.write_text(json.dumps(subset))
    out = tmp_path / "run"
    args = ["--coco-images", str(coco128 / "train2017"), "--coco-ann", str(ann), "--val-images",
            str(coco128 / "train2017"), "--val-ann", str(ann), "--model", "yolox-nano", "--img-size", "128",
            "--batch-size", "4", "--epochs", "1", "--no-aug-epochs", "0", "--mosaic-prob", "1.0", "--workers", "0",
            # A long warm-up keeps the 2 steps tiny: the stem sees raw 0-255 pixels and large gradients, and a
            # pretrained stem that jumps leaves BatchNorm's running statistics behind (eval AP drops to 0).
            "--warmup-epochs", "100",
            "--output-dir", str(out), "--no-progress", "--no-tensorboard"]
    if calib.is_file():
        args += ["--weights", str(calib)]
    result = run(args)
    ckpt = read_train_state(out / "latest.pt")
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 2 and len(ckpt["class_names"]) == 80
    metrics = result["last_metrics"]
    assert set(metrics) >= {"AP", "AP50", "AP75"} and 0.0 <= metrics["AP"] <= 1.0
    row = rows(out / "results.csv")[0]
    assert float(row["total_loss"]) > 0 and row["AP"] != ""
    if calib.is_file():  # the pretrained detector still finds objects in its own training images
        assert metrics["AP50"] > 0.3


def test_skip_bad_images_flag_reaches_the_dataset(tmp_path):
    """``--skip-bad-images``: a truncated training image is skipped and counted instead of stopping the run."""
    from test_data import SHARED_IMAGES, ann, truncated_copy, write_coco

    from yolox_fast.engine.distributed import DistContext
    from yolox_fast.train import build_parser, make_config, prepare_data

    if not (SHARED_IMAGES / "dog.jpg").is_file():
        pytest.skip(f"dog.jpg not found in {SHARED_IMAGES}")
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5])])
    truncated_copy(SHARED_IMAGES / "dog.jpg", image_dir / "a.png")  # a JPEG cut short, whatever its name
    argv = ["--coco-images", str(image_dir), "--coco-ann", str(ann_file), "--output-dir", str(tmp_path / "run")]
    for flags, kept in (([], 2), (["--skip-bad-images"], 1)):
        cfg = make_config(build_parser().parse_args([*argv, *flags]))[0]
        _, train, _, _ = prepare_data(cfg, DistContext(), log=lambda *a: None)
        assert len(train) == kept and train.report["image_bad"] == 2 - kept
def test_output_dir_of_an_earlier_run_is_refused(tmp_path, capsys):
    """Issue 9.2: a new run never writes into a folder holding an earlier run, unless --exist-ok."""
    out = tmp_path / "run"
    args = [*TINY, "--data-cache", str(tmp_path / "cache"), "--output-dir", str(out), "--epochs", "1",
            "--no-aug-epochs", "0"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--output-dir {out} already holds files" in err and "--resume" in err and "--exist-ok" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    assert main([*args, "--exist-ok"]) == 0
    assert read_train_state(out / "latest.pt")["epoch"] == 1


def start_training(args, cwd, env=None):
    cmd = [sys.executable, "-m", "yolox_fast.train", *TINY, *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def stop_at(proc, marker: str, sig) -> tuple[str, str]:
    """Read ``proc``'s output until a line holds ``marker``, send ``sig``; returns (stdout, stderr)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=300)
    return "".join(lines) + rest, err


def test_trainings_started_together_never_share_a_run_folder(tmp_path):
    """Issue 18.1: runs started at the same moment all wrote into runs/yolox-nano (an empty folder counted as
    free). Now each claims its own runs/train/<name>N atomically."""
    from yolox_fast.data import make_synthetic_dataset

    cache = tmp_path / "cache"
    make_synthetic_dataset(cache, num_train=8, num_val=4, image_size=64)  # generated once, read by both
    args = ["--data-cache", cache, "--epochs", "1", "--no-aug-epochs", "0", "--synthetic-train", "8"]
    procs = [start_training(args, cwd=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    runs = sorted((tmp_path / "runs" / "train").iterdir())
    assert [r.name for r in runs] == ["synthetic-yolox-nano", "synthetic-yolox-nano2"]
    for run_dir in runs:
        log = (run_dir / "train.log").read_text()
        assert log.count("M parameters") == 1, log  # one start-up per log
        assert read_train_state(run_dir / "latest.pt")["epoch"] == 1


def test_sigterm_mid_epoch_saves_a_resumable_checkpoint_of_that_step(tmp_path):
    """Issue 18.2: SIGTERM (a scheduler, ``timeout``, ``docker stop``) exited 143 with nothing said and nothing
    saved. Now it stops after the step in progress, saves latest.pt as of that step, says how to resume, and the
    resumed run goes on from the next batch instead of redoing the epoch."""
    out = tmp_path / "run"
    proc = start_training(["--synthetic-train", "64", "--batch-size", "2", "--data-cache", tmp_path / "cache",
                           "--output-dir", out, "--epochs", "1", "--no-aug-epochs", "0"], cwd=tmp_path)
    printed, err = stop_at(proc, "iter 3/32", signal.SIGTERM)
    assert proc.returncode == 143, (printed, err)
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    ckpt = read_train_state(out / "latest.pt")
    done = ckpt["epoch_batches_done"]
    assert ckpt["epoch"] == 0 and 3 <= done < 32 and ckpt["iteration"] == done
    message = f"stopped by SIGTERM; latest.pt holds the state after batch {done} of 32 of epoch 1"
    assert message in printed and message in (out / "train.log").read_text()
    assert f"--resume {out}" in printed

    result = run(["--resume", str(out), "--no-progress"])
    ckpt = read_train_state(out / "latest.pt")
    assert result["epochs_done"] == 1 and ckpt["epoch"] == 1 and ckpt["epoch_batches_done"] == 0
    assert ckpt["iteration"] == 32  # the remaining 32 - done batches, not the whole epoch again
    assert f"at epoch 1, batch {done + 1} of 32" in (out / "train.log").read_text()


def test_ctrl_c_mid_epoch_also_keeps_that_step(tmp_path):
    """Ctrl-C gets what SIGTERM gets (issue 9.10 had Ctrl-C in the first epoch leave nothing to resume)."""
    out = tmp_path / "run"
    proc = start_training(["--synthetic-train", "64", "--batch-size", "2", "--data-cache", tmp_path / "cache",
                           "--output-dir", out, "--epochs", "1", "--no-aug-epochs", "0"], cwd=tmp_path)
    printed, err = stop_at(proc, "iter 1/32", signal.SIGINT)
    assert proc.returncode == 130, (printed, err)
    assert "interrupted; latest.pt holds the state after batch" in printed and "Traceback" not in err
    assert 1 <= read_train_state(out / "latest.pt")["epoch_batches_done"] < 32


def test_validation_split_without_boxes_fails_at_start_up(tmp_path, capsys):
    """An empty validation 'annotations' list is refused before the first epoch, not reported as AP -1 at the end."""
    from test_data import ann, write_coco

    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    image_dir, ann_file = write_coco(tmp_path / "train", [ann(1, 1, [10, 10, 20, 20]), ann(2, 2, [5, 5, 30, 20])])
    val_dir, val_ann = write_coco(tmp_path / "val", [])
    out = tmp_path / "run"
    code = main(["--coco-images", str(image_dir), "--coco-ann", str(ann_file), "--val-images", str(val_dir),
                 "--val-ann", str(val_ann), "--model", "yolox-nano", "--img-size", "64", "--epochs", "1",
                 "--no-aug-epochs", "0", "--batch-size", "2", "--workers", "0", "--device", "cpu",
                 "--output-dir", str(out), "--no-progress"])
    assert code == 2
    assert "instances.json has no ground-truth boxes" in capsys.readouterr().err
    assert not (out / "latest.pt").exists()
