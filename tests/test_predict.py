"""Detector API and `python -m yolox_fast.predict` on the shared photos: images, folders, globs, a short
video made here, ONNX Runtime; numbered run folders, collision-free names, bad files skipped, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from conftest import DEMO_PHOTOS

from yolox_fast import Detector
from yolox_fast.data import preprocess, read_image
from yolox_fast.data.coco_classes import COCO_CLASSES
from yolox_fast.deploy.onnx_export import export_onnx
from yolox_fast.ops import postprocess


@pytest.fixture(scope="module")
def detector(nano_weights):
    return Detector(nano_weights, img_size=320, conf=0.3, device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def onnx_path(nano_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "nano320.onnx"
    export_onnx(nano_model, path, 320, conf=0.3, nms_thre=0.45, model_name="yolox-nano", class_names=COCO_CLASSES)
    return path


def photo(shared_data, name):
    return shared_data / "images" / f"{name}.jpg"


def test_detector_results_in_original_pixels(detector, nano_model, shared_data):
    path = photo(shared_data, "horses")
    img = read_image(path)
    result = detector(str(path))
    x, r = preprocess(img, 320)
    with torch.no_grad():
        want = postprocess(nano_model(x[None]), 80, 0.3, 0.45)[0]
    assert len(result) == want.shape[0] > 2
    np.testing.assert_allclose(result.xyxy, want[:, :4].numpy() / r, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(result.scores, (want[:, 4] * want[:, 5]).numpy(), atol=1e-5)
    np.testing.assert_array_equal(result.class_ids, want[:, 6].long().numpy())
    assert set(result.names) <= {"horse", "cow", "person", "dog", "sheep"} and "horse" in result.names
    assert result.source == str(path)
    drawn = result.plot()
    assert drawn.shape == img.shape and not np.array_equal(drawn, img)
    rows = json.loads(result.to_json())
    assert rows[0]["class_name"] == result.names[0] and len(rows) == len(result)
    # the same image as an array, and in a list with others (batched): same detections
    same = detector(img)
    np.testing.assert_array_equal(same.xyxy, result.xyxy)
    batch = detector([img, read_image(photo(shared_data, "dog")), img])
    assert len(batch) == 3
    np.testing.assert_allclose(batch[2].xyxy, result.xyxy, atol=1e-3)


def test_onnx_detector_equals_pytorch_detector(detector, onnx_path, shared_data):
    onnx_detector = Detector(onnx_path)
    assert onnx_detector.img_size == (320, 320) and onnx_detector.conf == 0.3
    results = onnx_detector(str(shared_data / "images"))  # a folder -> a list
    torch_results = detector(str(shared_data / "images"))
    assert len(results) == len(torch_results) == 6
    for a, b in zip(results, torch_results, strict=True):
        assert a.source == b.source and len(a) == len(b)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.xyxy, b.xyxy, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="cannot detect below it"):
        Detector(onnx_path, conf=0.1)
    with pytest.raises(ValueError, match="exported for 320x320"):
        Detector(onnx_path, img_size=416)


def test_detector_streams_one_frame_at_a_time(detector, shared_data):
    consumed = []

    def frames():
        for name in DEMO_PHOTOS:
            consumed.append(name)
            yield read_image(photo(shared_data, name))

    stream = detector(frames())
    first = next(stream)
    assert consumed == ["dog"] and len(first) > 0
    assert len(list(stream)) == 2


def test_detector_errors(nano_weights, shared_data, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Detector(nano_weights, device="cuda")
    with pytest.raises(ValueError, match="multiple of 32"):
        Detector(nano_weights, img_size=300)
    detector = Detector(nano_weights, img_size=320)
    with pytest.raises(ValueError, match="BGR uint8 image"):
        detector(np.zeros((10, 10), np.uint8))
    with pytest.raises(FileNotFoundError, match="input not found"):
        detector(str(tmp_path / "none.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image"):
        detector(str(bad))


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def predict(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "yolox_fast.predict", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "runs" not in p.relative_to(folder).parts}


def test_predict_images_folders_globs(nano_weights, shared_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(photo(shared_data, "dog"), a / "dog.jpg")
    shutil.copy(photo(shared_data, "kite"), a / "kite.jpg")
    shutil.copy(photo(shared_data, "horses"), b / "dog.jpg")  # same name, different folder
    (b / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    inputs = digest(tmp_path)
    project = tmp_path / "runs"
    proc = predict(a / "dog.jpg", a, str(b / "*.jpg"), "--weights", nano_weights, "--img-size", "320",
                   "--project", project, "--save-txt", "--save-conf", "--save-json", "--batch-size", "2",
                   "--no-progress")
    # the broken file is reported, the others are processed, and the exit status says something failed
    assert proc.returncode == 2, proc.stderr
    assert "skipped" in proc.stderr and "broken.jpg" in proc.stderr and "1 of 4 inputs" in proc.stderr
    assert "Traceback" not in proc.stderr
    run = project / "exp"
    # one numbering scheme for every name (files/run_dir.py): dog.jpg, dog2.jpg, as the run folders exp, exp2
    assert sorted(p.name for p in run.iterdir()) == ["dog.jpg", "dog2.jpg", "image_ids.json", "kite.jpg", "labels",
                                                    "predictions.json"]
    assert sorted(p.name for p in (run / "labels").iterdir()) == ["dog.txt", "dog2.txt", "kite.txt"]
    assert cv2.imread(str(run / "dog2.jpg")).shape == cv2.imread(str(b / "dog.jpg")).shape
    line = (run / "labels" / "dog.txt").read_text().splitlines()[0].split()
    assert len(line) == 6 and 0 <= int(line[0]) < 80 and all(0 <= float(v) <= 1 for v in line[1:])
    coco = json.loads((run / "predictions.json").read_text())
    # COCO image ids are integers: these file names are not numbers, so the images are numbered in run order
    names = json.loads((run / "image_ids.json").read_text())
    assert sorted(names) == ["1", "2", "3"] and {r["image_id"] for r in coco} == {1, 2, 3}
    assert sorted(os.path.basename(v) for v in names.values()) == ["dog.jpg", "dog.jpg", "kite.jpg"]
    assert all(len(r["bbox"]) == 4 and r["category_id"] in range(1, 91) for r in coco)
    assert sum(1 for x in proc.stdout.splitlines() if ": " in x and x.split(": ")[0].endswith(".jpg")) == 3
    assert digest(tmp_path) == inputs and len(inputs) == 4  # inputs untouched
    # a second run never touches the first: it gets exp2
    before = digest(run)
    proc = predict(a / "kite.jpg", "--weights", nano_weights, "--img-size", "320", "--project", project,
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert (project / "exp2" / "kite.jpg").is_file() and digest(run) == before


def test_predict_video_with_onnx(onnx_path, shared_data, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (320, 240))
    assert writer.isOpened()
    for name in (*DEMO_PHOTOS, "dog"):
        writer.write(cv2.resize(read_image(photo(shared_data, name)), (320, 240)))
    writer.release()
    proc = predict(video, "--onnx", onnx_path, "--project", tmp_path / "runs", "--save-txt")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "exp"
    cap = cv2.VideoCapture(str(run / "clip.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert frames == 4 and ok and first.shape == (240, 320, 3)
    assert sorted(p.name for p in (run / "labels").iterdir()) == [f"clip_{i}.txt" for i in range(4)]
    assert (run / "labels" / "clip_0.txt").read_text().strip()  # the dog photo has detections
    assert "4 images" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "CUDA is not available"),
    (["--img-size", "100"], "multiple of 32"),
    (["--conf", "2"], "--conf must be in [0, 1]"),
    (["--vid-stride", "0"], "--vid-stride must be >= 1"),
    (["--line-width", "0"], "--line-width must be >= 1"),
    (["--save-conf"], "give --save-txt too"),
    (["--classes", "-1"], "--classes takes class indices >= 0"),
    (["--classes", "80"], "the model has 80 classes"),
])
def test_predict_bad_usage_exits_2(nano_weights, shared_data, tmp_path, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = predict(photo(shared_data, "dog"), "--weights", nano_weights, "--project", tmp_path, *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "exp").exists()


def test_predict_missing_input_exits_2(nano_weights, tmp_path):
    proc = predict(tmp_path / "none.jpg", "--weights", nano_weights, "--project", tmp_path)
    assert proc.returncode == 2 and "input not found" in proc.stderr
    proc = predict(str(tmp_path / "*.png"), "--weights", nano_weights, "--project", tmp_path)
    assert proc.returncode == 2 and "no files match" in proc.stderr


def test_predict_video_stride(onnx_path, shared_data, tmp_path):
    """--vid-stride 2 takes frames 0 and 2 of four; the drawn video holds those two."""
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 4, (320, 240))
    for name in ("dog", "kite", "horses", "kite"):
        writer.write(cv2.resize(read_image(photo(shared_data, name)), (320, 240)))
    writer.release()
    proc = predict(video, "--onnx", onnx_path, "--project", tmp_path / "runs", "--save-txt", "--vid-stride", "2")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "exp"
    assert sorted(p.name for p in (run / "labels").iterdir()) == ["clip_0.txt", "clip_2.txt"]
    cap = cv2.VideoCapture(str(run / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(2)
    cap.release()
    assert "2 images" in proc.stdout


def test_predict_classes_crops_and_drawing_controls(nano_weights, shared_data, tmp_path):
    """--classes keeps the listed classes, --save-crop writes one crop per detection under crops/<class>/,
    --hide-labels and --line-width change the drawing."""
    person = photo(shared_data, "person")
    common = ["--weights", nano_weights, "--img-size", "320", "--project", tmp_path / "runs", "--no-progress"]
    proc = predict(person, *common, "--save-crop", "--save-txt")
    assert proc.returncode == 0, proc.stderr
    assert "speed per image:" in proc.stdout and "ms inference" in proc.stdout and "at 320x320" in proc.stdout
    assert "model: 0.91 M parameters" in proc.stdout and "GFLOPs at 320x320" in proc.stdout
    full = tmp_path / "runs" / "exp"
    lines = (full / "labels" / "person.txt").read_text().splitlines()
    crops = sorted(p.relative_to(full / "crops").as_posix() for p in (full / "crops").rglob("*.jpg"))
    names = [COCO_CLASSES[int(x.split()[0])] for x in lines]
    assert len(lines) >= 4 and Counter(c.split("/")[0] for c in crops) == Counter(names)
    x1, y1, x2, y2 = (float(v) for v in json.loads(Detector(nano_weights, img_size=320, device="cpu")(
        str(person)).to_json())[0]["box"])
    first = cv2.imread(str(full / "crops" / names[0] / "person.jpg"))
    assert abs(first.shape[1] - (x2 - x1)) <= 2 and abs(first.shape[0] - (y2 - y1)) <= 2

    proc = predict(person, *common, "--classes", "0", "17", "--save-txt", "--hide-labels", "--line-width", "1")
    assert proc.returncode == 0, proc.stderr
    kept = (tmp_path / "runs" / "exp2" / "labels" / "person.txt").read_text().splitlines()
    assert sorted(int(x.split()[0]) for x in kept) == [0, 17]  # person, horse
    thin = cv2.imread(str(tmp_path / "runs" / "exp2" / "person.jpg"))
    drawn = cv2.imread(str(full / "person.jpg"))
    original = cv2.imread(str(person))
    changed = lambda img: int((np.abs(img.astype(int) - original.astype(int)).sum(2) > 60).sum())  # noqa: E731
    assert 0 < changed(thin) < changed(drawn) / 3


def test_detector_refuses_bad_settings_and_empty_images(nano_weights, detector):
    """Issue 18.7: conf 1.5 or nms 2 were accepted; a 0x0 array raised ZeroDivisionError."""
    for kwargs in (dict(conf=1.5), dict(nms=2), dict(conf=-0.1), dict(conf=True), dict(img_size=8192)):
        with pytest.raises(ValueError, match="conf|nms|img_size"):
            Detector(nano_weights, **kwargs)
    with pytest.raises(ValueError, match=r"the image is empty \(0x0 pixels\)"):
        detector(np.zeros((0, 0, 3), np.uint8))


def test_one_bad_frame_does_not_sink_its_batch(detector, shared_data):
    """Issue 18.3: a frame that fails inside a batch is reported with its source; the others are detected."""
    from yolox_fast.inference.sources import Frame, Source

    good = read_image(photo(shared_data, "dog"))
    frames = [Frame(Source("image", "a.jpg"), 0, good), Frame(Source("image", "empty.png"), 0,
                                                             np.zeros((0, 5, 3), np.uint8)),
              Frame(Source("image", "c.jpg"), 0, good)]
    results = list(detector.detect_frames(frames, batch_size=3))
    assert [r is None for _, r in results] == [False, True, False]
    assert results[1][0].error.startswith("empty.png: the image is empty")
    assert len(results[0][1]) == len(results[2][1]) > 0


def test_predict_odd_inputs_all_get_results(nano_weights, shared_data, tmp_path):
    """Issue 18.3 and 18.7: a 2000x1 strip sank the run with an OpenCV assertion; an input without a known suffix
    was detected and then not written; dog.jpg and dog.png shared an image_id. Outputs follow the umask (18.6)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    dog = read_image(photo(shared_data, "dog"))
    shutil.copy(photo(shared_data, "dog"), inputs / "dog.jpg")
    cv2.imwrite(str(inputs / "dog.png"), dog)
    cv2.imwrite(str(inputs / "strip.png"), np.full((1, 2000, 3), 128, np.uint8))
    shutil.copy(photo(shared_data, "kite"), tmp_path / "photo")  # a JPEG without a suffix
    project = tmp_path / "runs"
    old = os.umask(0o022)
    try:
        proc = predict(inputs, tmp_path / "photo", "--weights", nano_weights, "--img-size", "320", "--project",
                       project, "--save-txt", "--save-json", "--no-progress", "--batch-size", "2")
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    run = project / "exp"
    assert sorted(p.name for p in run.iterdir()) == ["dog.jpg", "dog.png", "image_ids.json", "labels", "photo.jpg",
                                                     "predictions.json", "strip.png"]
    assert cv2.imread(str(run / "strip.png")).shape == (1, 2000, 3)
    assert sorted(p.name for p in (run / "labels").iterdir()) == ["dog.txt", "dog2.txt", "photo.txt", "strip.txt"]
    names = json.loads((run / "image_ids.json").read_text())  # dog.jpg and dog.png apart
    assert sorted(os.path.basename(v) for v in names.values()) == ["dog.jpg", "dog.png", "photo", "strip.png"]
    for path in (run / "dog.jpg", run / "predictions.json", run / "labels" / "dog.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_predict_onnx_flag_reads_any_file_name_as_onnx(onnx_path, shared_data, tmp_path):
    """Issue 18.5: ``--onnx model.bin`` was read as a PyTorch checkpoint (by its suffix); the flag decides, then
    the content."""
    renamed = tmp_path / "model.bin"
    shutil.copy(onnx_path, renamed)
    proc = predict(photo(shared_data, "dog"), "--onnx", renamed, "--project", tmp_path / "runs", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "exp" / "dog.jpg").is_file()
    assert Detector(renamed).is_onnx  # the API, without a flag: by content


def make_video(path, shared_data, frames: int, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    assert writer.isOpened()
    images = [cv2.resize(read_image(photo(shared_data, n)), size) for n in DEMO_PHOTOS]
    for k in range(frames):
        writer.write(images[k % len(images)])
    writer.release()


def test_sigterm_leaves_a_playable_video_and_the_results_so_far(nano_weights, shared_data, tmp_path):
    """Issue 18.2: SIGTERM during predict on a video left a 44-byte mp4 that would not open and no
    predictions.json. Now it stops as Ctrl-C does: exit 143, the video so far closed and playable, every
    result so far in predictions.json."""
    video = tmp_path / "clip.mp4"
    make_video(video, shared_data, 300)
    cmd = [sys.executable, "-m", "yolox_fast.predict", str(video), "--weights", str(nano_weights), "--img-size",
           "160", "--project", str(tmp_path / "runs"), "--save-json", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    seen = 0
    for line in proc.stdout:
        seen += "clip.mp4#" in line
        if seen == 5:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err
    run = tmp_path / "runs" / "exp"
    cap = cv2.VideoCapture(str(run / "clip.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape == (120, 160, 3) and 5 <= frames < 300
    rows = json.loads((run / "predictions.json").read_text())
    labels = json.loads((run / "image_ids.json").read_text())
    assert rows and all(labels[str(r["image_id"])].startswith(f"{video}#") for r in rows)
