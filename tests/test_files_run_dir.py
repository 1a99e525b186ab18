"""Run folders (yolox_fast/files/run_dir.py): one numbering scheme, claimed atomically (issue 18.1, 16.2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yolox_fast.files.run_dir import UniqueNames, claim_dir, claim_numbered_dir, claim_run_dir, numbered

REPO = Path(__file__).resolve().parents[1]


def test_one_numbering_scheme_for_folders_and_files():
    assert [numbered("exp", n) for n in (1, 2, 10)] == ["exp", "exp2", "exp10"]
    assert [numbered("dog.jpg", n, keep_suffix=True) for n in (1, 2, 3)] == ["dog.jpg", "dog2.jpg", "dog3.jpg"]
    assert numbered("yolox-s", 2) == "yolox-s2"
    with pytest.raises(ValueError):
        numbered("exp", 0)


def test_claim_run_dir_never_returns_an_existing_folder(tmp_path):
    """An existing folder is taken, empty or not (an empty one may be a run that started a moment ago)."""
    (tmp_path / "train" / "yolox-s").mkdir(parents=True)  # empty: another run's, just created
    (tmp_path / "train" / "yolox-s2").mkdir()
    (tmp_path / "train" / "yolox-s2" / "train.log").write_text("crashed early\n")
    got = claim_run_dir(tmp_path, "train", "yolox-s")
    assert got == tmp_path / "train" / "yolox-s3" and got.is_dir() and not any(got.iterdir())
    assert claim_run_dir(tmp_path, "eval", "exp") == tmp_path / "eval" / "exp"
    assert claim_run_dir(tmp_path, "train", "yolox-s", exist_ok=True) == tmp_path / "train" / "yolox-s"
    assert claim_numbered_dir(tmp_path / "p", "exp") == tmp_path / "p" / "exp"
    assert claim_numbered_dir(tmp_path / "p", "exp") == tmp_path / "p" / "exp2"
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="plain folder name"):
            claim_run_dir(tmp_path, "train", bad)


def test_runs_started_at_the_same_moment_get_different_folders(tmp_path):
    """Eight processes claim at once (they wait for one start time): eight different folders."""
    start = time.time() + 3
    code = ("import sys, time; from yolox_fast.files.run_dir import claim_run_dir; "
            f"time.sleep(max(0, {start} - time.time())); print(claim_run_dir(sys.argv[1], 'train', 'yolox-s'))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(8)]
    claimed = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(claimed)) == 8
    assert sorted(Path(c).name for c in claimed) == sorted(["yolox-s", *(f"yolox-s{n}" for n in range(2, 9))])


def test_claim_dir_takes_an_empty_named_folder_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    assert claim_dir(out, marker="train.log") == out and (out / "train.log").is_file()
    with pytest.raises(FileExistsError, match="taken by another run"):
        claim_dir(out, marker="train.log")  # the second of two runs given the same empty folder
    (out / "latest.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="already holds files"):
        claim_dir(out, marker="train.log")
    assert claim_dir(out, marker="train.log", exist_ok=True) == out
    assert claim_dir(tmp_path / "new" / "deep", marker="m").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        claim_dir(tmp_path / "file", marker="m")


def test_unique_names_inside_a_run():
    names = UniqueNames(keep_suffix=True)
    assert names.get("a/dog.jpg", "dog.jpg") == "dog.jpg"
    assert names.get("b/dog.jpg", "dog.jpg") == "dog2.jpg"
    assert names.get("c/DOG.jpg", "DOG.jpg") == "DOG3.jpg"  # case-insensitive file systems
    assert names.get("a/dog.jpg", "dog.jpg") == "dog.jpg"
    stems = UniqueNames(keep_suffix=False)
    assert [stems.get(k, "dog") for k in ("dog.jpg", "dog.png")] == ["dog", "dog2"]
