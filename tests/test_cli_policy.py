"""Every command line follows one policy (yolox_fast/cli.py), checked on the real entry points.

Bad usage or bad input: exit 2 and one line on stderr naming the problem; a failure while running: exit 1;
never a traceback unless ``--debug``. Checkpoints are untrusted: a hostile file is refused before its payload
can run, whichever command or flag reads it (issue 9, items 0, 8, 9, 10).

Each command runs as a subprocess (``python -m yolox_fast.<command>``) at least for its usage errors and a
bad checkpoint; the other bad inputs call the same ``main(argv)`` in this process, which is what the
subprocess runs too, to keep the file fast (starting Python with torch takes seconds on a busy machine).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_models_checkpoint import hostile_checkpoint

from yolox_fast.models import build_yolox

REPO = Path(__file__).resolve().parents[1]
#: The command-line modules there are now (``detect`` may become ``predict``; ``export`` may be added).
COMMANDS = [name for name in ("train", "eval", "detect", "predict", "export")
            if importlib.util.find_spec(f"yolox_fast.{name}") is not None]
#: Train settings that keep a run that does start tiny: 64 px, 2 steps, one thread.
TINY = ["--img-size", "64", "--batch-size", "4", "--workers", "0", "--no-progress", "--no-tensorboard",
        "--epochs", "1", "--no-aug-epochs", "0", "--model", "yolox-nano", "--device", "cpu"]


def run_command(command: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", f"yolox_fast.{command}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def call_main(command: str, args: list[str]) -> subprocess.CompletedProcess:
    """``yolox_fast.<command>.main(args)`` in this process, with what a subprocess would give back."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = importlib.import_module(f"yolox_fast.{command}").main(args)
        except SystemExit as exc:  # argparse's --help and usage errors
            status = exc.code
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, status: int, *phrases: str) -> str:
    """Exit ``status``, stderr exactly one ``error:`` line holding every phrase, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "error: " in lines[0], proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad and good inputs: a tiny COCO-format dataset, a nano checkpoint for it, and broken checkpoints."""
    from yolox_fast.data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("cli_policy")
    info = make_synthetic_dataset(root / "data", num_train=8, num_val=4, image_size=64)
    good = root / "good.pt"
    torch.save({"model": build_yolox("yolox-nano", num_classes=len(info["class_names"])).state_dict()}, good)
    text = root / "notes.pt"
    text.write_text("these are not weights\n")
    js = root / "config.pth"
    js.write_text(json.dumps({"model": "yolox-s"}))
    truncated = root / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    hostile, marker = hostile_checkpoint(root)
    no_boxes = root / "no_boxes.json"
    no_boxes.write_text(json.dumps({**json.loads(Path(info["val_ann"]).read_text()), "annotations": []}))
    image = sorted(Path(info["val_images"]).iterdir())[0]
    bool_config = root / "bool_epochs.yaml"
    bool_config.write_text("epochs: true\n")
    return {"bool_config": bool_config, "root": root, "image": image, "train_images": info["train_images"],
            "train_ann": info["train_ann"],
            "val_images": info["val_images"], "val_ann": info["val_ann"], "good": good, "text": text, "json": js,
            "truncated": truncated, "hostile": hostile, "marker": marker, "no_boxes": no_boxes}


def coco_train(f) -> list[str]:
    return ["--coco-images", str(f["train_images"]), "--coco-ann", str(f["train_ann"]), *TINY]


def eval_args(f, ckpt, ann=None) -> list[str]:
    return ["--ckpt", str(ckpt), "--images", str(f["val_images"]), "--ann", str(ann or f["val_ann"]),
            "--device", "cpu", "--img-size", "64"]


#: (command, args from the files, exit status, phrases of the one error line)
BAD_INPUTS = {
    "train unknown flag": ("train", lambda f: ["--bogus"], 2, ["unrecognized arguments: --bogus", "--help"]),
    "train bad size": ("train", lambda f: ["--img-size", "100"], 2, ["img_size must be a positive multiple of 32"]),
    "train bad device": ("train", lambda f: [*coco_train(f), "--device", "gpu9"], 2, ["'gpu9' is not a device"]),
    "train missing annotation": ("train", lambda f: ["--coco-images", str(f["train_images"]), "--coco-ann",
                                                     "missing.json", *TINY], 2, ["missing.json"]),
    "train --weights text": ("train", lambda f: [*coco_train(f), "--weights", str(f["text"])], 2,
                             ["not a PyTorch checkpoint (text)"]),
    "train --weights json": ("train", lambda f: [*coco_train(f), "--weights", str(f["json"])], 2,
                             ["not a PyTorch checkpoint (text)"]),
    "train --weights truncated": ("train", lambda f: [*coco_train(f), "--weights", str(f["truncated"])], 2,
                                  ["truncated"]),
    "train --weights hostile (subprocess)": ("train", lambda f: [*coco_train(f), "--weights", str(f["hostile"])], 2,
                                ["refusing to load"]),
    "train --resume hostile": ("train", lambda f: ["--resume", str(f["hostile"])], 2, ["refusing to load"]),
    "train --resume text": ("train", lambda f: ["--resume", str(f["text"])], 2, ["not a PyTorch checkpoint"]),
    "train --resume truncated": ("train", lambda f: ["--resume", str(f["truncated"])], 2, ["truncated"]),
    "train --resume official": ("train", lambda f: ["--resume", str(f["good"])], 2,
                                ["not a yolox_fast training checkpoint", "--weights"]),
    "train boolean epochs": ("train", lambda f: ["--config", str(f["bool_config"])], 2,
                             ["epochs: cannot read True as an integer"]),
    "train size too large": ("train", lambda f: [*coco_train(f), "--img-size", "8192"], 2, ["at most 4096"]),
    "eval size too large": ("eval", lambda f: [*eval_args(f, f["good"]), "--img-size", "8192"], 2, ["at most 4096"]),
    "eval no arguments": ("eval", lambda f: [], 2, ["--weights, --images, --ann are required"]),
    "eval missing checkpoint": ("eval", lambda f: eval_args(f, "missing.pt"), 2, ["checkpoint not found"]),
    "eval text checkpoint": ("eval", lambda f: eval_args(f, f["text"]), 2, ["not a PyTorch checkpoint (text)"]),
    "eval json checkpoint": ("eval", lambda f: eval_args(f, f["json"]), 2, ["not a PyTorch checkpoint (text)"]),
    "eval truncated checkpoint": ("eval", lambda f: eval_args(f, f["truncated"]), 2, ["truncated"]),
    "eval hostile checkpoint (subprocess)": ("eval", lambda f: eval_args(f, f["hostile"]), 2, ["refusing to load"]),
    "eval bad device": ("eval", lambda f: [*eval_args(f, f["good"]), "--device", "gpu9"], 2, ["not a device"]),
    "eval wrong class count": ("eval", lambda f: [*eval_args(f, f["good"]), "--num-classes", "80"], 2,
                               ["classes"]),
    "detect missing checkpoint": ("detect", lambda f: ["--ckpt", "missing.pt", str(f["image"])], 2,
                                  ["checkpoint not found"]),
    "detect missing input": ("detect", lambda f: ["--ckpt", str(f["good"]), "x.jpg"], 2, ["not found: x.jpg"]),
    "detect text checkpoint (subprocess)": ("detect", lambda f: ["--ckpt", str(f["text"]), str(f["image"])], 2,
                                            ["not a PyTorch checkpoint (text)"]),
    "predict hostile checkpoint (subprocess)": ("predict", lambda f: ["--weights", str(f["hostile"]),
                                                                      str(f["image"])], 2, ["refusing to load"]),
    "predict truncated checkpoint": ("predict", lambda f: ["--weights", str(f["truncated"]), str(f["image"])], 2,
                                     ["truncated"]),
    "predict json checkpoint": ("predict", lambda f: ["--weights", str(f["json"]), str(f["image"])], 2,
                                ["not a PyTorch checkpoint (text)"]),
    "export hostile checkpoint (subprocess)": ("export", lambda f: ["--weights", str(f["hostile"]), "--output",
                                                                    "out.onnx"], 2, ["refusing to load"]),
    "export text checkpoint": ("export", lambda f: ["--weights", str(f["text"]), "--output", "out.onnx"], 2,
                               ["not a PyTorch checkpoint (text)"]),
}
if not torch.cuda.is_available():
    BAD_INPUTS["train cuda without a GPU"] = ("train", lambda f: [*coco_train(f), "--device", "cuda"], 2,
                                              ["no CUDA GPU"])
    BAD_INPUTS["eval cuda without a GPU"] = ("eval", lambda f: [*eval_args(f, f["good"]), "--device", "cuda"], 2,
                                             ["CUDA is not available"])


@pytest.mark.parametrize("case", [c for c, v in BAD_INPUTS.items() if v[0] in COMMANDS])
def test_bad_input_is_one_line_and_exit_2(case, files, tmp_path, monkeypatch):
    command, make_args, status, phrases = BAD_INPUTS[case]
    if "(subprocess)" in case:
        proc = run_command(command, make_args(files), cwd=tmp_path)
    else:
        monkeypatch.chdir(tmp_path)  # a run that starts writes runs/ here
        proc = call_main(command, make_args(files))
    assert_one_line_error(proc, status, *phrases)
    assert not files["marker"].exists(), "a hostile checkpoint's payload ran"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_debug_and_one_line_usage_errors(command, tmp_path):
    assert "--debug" in call_main(command, ["--help"]).stdout
    # A usage error (an unknown flag, or the required arguments it lacks) is one line, not argparse's usage block.
    assert_one_line_error(run_command(command, ["--no-such-flag"], cwd=tmp_path), 2, "--help")


def test_debug_shows_the_traceback(files, tmp_path):
    proc = run_command("eval", [*eval_args(files, files["text"]), "--debug"], cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "not a PyTorch checkpoint" in proc.stderr


def test_a_failure_while_training_is_exit_1(files, tmp_path):
    """A run that diverges (absurd learning rate) failed while running: exit 1, one line, no traceback."""
    proc = run_command("train", [*coco_train(files), "--lr-per-image", "1e6", "--warmup-epochs", "0",
                                 "--log-interval", "1", "--output-dir", str(tmp_path / "run")], cwd=tmp_path)
    line = assert_one_line_error(proc, 1, "diverged", "no checkpoint was written yet", "--debug")
    assert "latest.pt" not in line


def test_validation_set_without_boxes_fails_before_training(files, tmp_path):
    """Issue 9.4: a validation json without annotations (usually the wrong file) stops train and eval at
    start-up with exit 2, instead of training to an AP of -1 (the check itself is the evaluator's)."""
    from yolox_fast.evaluation import COCOEvaluator

    try:
        COCOEvaluator(files["val_images"], files["no_boxes"], img_size=64)
    except ValueError:
        pass
    else:
        pytest.skip("COCOEvaluator does not check for ground-truth boxes yet (the data/evaluation side of 9.4)")
    out = tmp_path / "run"
    proc = run_command("train", [*coco_train(files), "--val-images", str(files["val_images"]), "--val-ann",
                                 str(files["no_boxes"]), "--output-dir", str(out)], cwd=tmp_path)
    assert_one_line_error(proc, 2, "no ground-truth boxes")
    assert not (out / "latest.pt").exists() and "epoch 1/1" not in proc.stdout  # nothing trained
    proc = run_command("eval", eval_args(files, files["good"], ann=files["no_boxes"]), cwd=tmp_path)
    assert_one_line_error(proc, 2, "no ground-truth boxes")


def test_no_message_suggests_a_flag_that_does_not_exist(tmp_path):
    """Issue 9.10: a message once advised ``--allow-new-head``, which no command has. Every ``--flag`` written in
    the package's source must be one that some command accepts (or another tool's, listed here)."""
    others = {"--nproc", "--logdir", "--no-build-isolation", "--flag"}  # torchrun, tensorboard, pip, a docstring
    accepted = set()
    for command in COMMANDS:
        accepted |= set(re.findall(r"--[a-z][a-z0-9-]*", call_main(command, ["--help"]).stdout))
    unknown = {}
    for path in (REPO / "yolox_fast").rglob("*.py"):
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", path.read_text()):
            if flag not in accepted | others:
                unknown.setdefault(flag, path.relative_to(REPO).as_posix())
    assert not unknown, f"messages or docs name flags no command has: {unknown}"


def test_checkpoints_are_read_in_one_place():
    """Issue 9.0: every checkpoint load goes through the one reader (models/checkpoint.py, weights_only=True);
    eval.py and detect.py once called ``torch.load(..., weights_only=False)`` themselves."""
    loaders = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "yolox_fast").rglob("*.py")
                     if re.search(r"(?<!`)(torch\.load|pickle\.loads?)\(", path.read_text()))  # calls, not docs
    assert loaders == ["yolox_fast/models/checkpoint.py"]
    reader = (REPO / "yolox_fast" / "models" / "checkpoint.py").read_text()
    calls = re.findall(r"(?<!`)torch\.load\(.*", reader)
    assert len(calls) == 1 and "weights_only=True" in calls[0] and "weights_only=False" not in reader


@pytest.mark.parametrize("command", [c for c in ("eval", "export") if c in COMMANDS])
def test_sigterm_is_a_clean_stop(command, files, tmp_path):
    """Issue 18.2: SIGTERM killed a command with nothing said (exit 143, or -15 unhandled). Every command now
    stops as for Ctrl-C: one line, exit 143, no traceback, and no partial output file (export)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "m.onnx"
    args = {"eval": [*eval_args(files, files["good"]), "--batch-size", "1", "--img-size", "640"],
            "export": ["--weights", str(files["good"]), "--output", str(out), "--img-size", "640"]}[command]
    proc = subprocess.Popen([sys.executable, "-m", f"yolox_fast.{command}", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # both say what they start on before the long part
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert first and proc.returncode == 143, (first, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"yolox_fast.{command}: terminated (SIGTERM)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no temporary file


def choose_before_torch_loads(cli) -> None:
    """Run the command-line module's OpenMP choice as if torch were not loaded yet (it is, in this process)."""
    saved = sys.modules.pop("torch")
    try:
        cli.prefer_passive_openmp_waits()
    finally:
        sys.modules["torch"] = saved


def test_commands_let_openmp_threads_wait_passively_on_a_busy_machine(monkeypatch):
    """Issue 18.8: with OpenMP's default wait, a training step ran 4x slower beside one busy process on 2 cores;
    with OMP_WAIT_POLICY=PASSIVE on an idle machine it ran 1.55x slower (predict 1.85x). Every command chooses
    PASSIVE before torch loads (OpenMP reads it then) when the load average says the machine is shared, keeps
    OpenMP's default when it is idle, and never overrides the user's choice; importing the package alone loads
    no torch."""
    from yolox_fast import cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for load, expected in ((0.1, None), (cli.BUSY_LOAD, "PASSIVE"), (3.0, "PASSIVE")):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        choose_before_torch_loads(cli)
        assert os.environ.get("OMP_WAIT_POLICY") == expected, (load, os.environ.get("OMP_WAIT_POLICY"))
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    choose_before_torch_loads(cli)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"

    # Through each real command, in a fresh interpreter: the choice is made before torch loads.
    code = ("import os, sys; os.getloadavg = lambda: ({0}, 0.0, 0.0); import yolox_fast.{1}; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    for command in COMMANDS:
        busy = subprocess.run([sys.executable, "-c", code.format(2.0, command)], env=env, capture_output=True,
                              text=True, timeout=300, check=True).stdout.split()
        assert busy[0] == "PASSIVE", (command, busy)
    idle = subprocess.run([sys.executable, "-c", code.format(0.0, "train")], env=env, capture_output=True, text=True,
                          timeout=300, check=True).stdout.split()
    assert idle[0] == "None", idle
    bare = subprocess.run([sys.executable, "-c", "import sys, yolox_fast; print('torch' in sys.modules)"], env=env,
                          capture_output=True, text=True, timeout=300, check=True).stdout.split()
    assert bare == ["False"]
