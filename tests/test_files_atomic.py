"""Atomic writes (yolox_fast/files/atomic.py): files follow the umask, an exclusive last step, stale temporary
files of killed writers removed (issues 18.4, 18.6, 17.12)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from yolox_fast.files.atomic import atomic_write, remove_stale_temps, temp_path_for, write_new_file


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.pt", lambda f: f.write(b"new"))
        write_new_file(tmp_path / "b.json", b"{}")
        atomic_write(tmp_path / "a.pt", lambda f: f.write(b"again"))  # a replaced file too
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.pt") == mode(tmp_path / "b.json") == 0o666 & ~umask


def test_exclusive_write_does_not_replace_a_file_created_meanwhile(tmp_path):
    target = tmp_path / "model.onnx"

    def slow_write(f):
        f.write(b"mine")
        target.write_bytes(b"someone else's")  # appears while this write is under way

    with pytest.raises(FileExistsError, match="not replaced"):
        atomic_write(target, slow_write, overwrite=False)
    assert target.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left
    with pytest.raises(FileExistsError):
        write_new_file(target, b"x")
    atomic_write(target, lambda f: f.write(b"replaced"))  # overwrite=True (the default) replaces
    assert target.read_bytes() == b"replaced"


def test_temporary_files_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "latest.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = temp_path_for(target)
    assert mine.name.startswith("latest.pt.") and mine.name.endswith(".tmp") and f"-{os.getpid()}." in mine.name
    stale = mine.with_name(mine.name.replace(f"-{os.getpid()}.", f"-{dead_pid}."))
    stale.write_bytes(b"half a checkpoint")
    live = temp_path_for(target)  # this process is alive: its temporary file stays
    live.write_bytes(b"being written")
    other = tmp_path / "latest.pt.otherhost-1.abcd1234.tmp"  # another host's: cannot tell, stays
    other.write_bytes(b"?")
    atomic_write(target, lambda f: f.write(b"ok"))
    assert not stale.exists() and live.exists() and other.exists() and target.read_bytes() == b"ok"
    assert remove_stale_temps(target) == []
