"""Prediction inputs (yolox_fast.inference.sources): resolving paths, folders, globs, cameras; frames; read-ahead."""

from __future__ import annotations

import shutil
import threading

import pytest

from yolox_fast.inference.sources import read_ahead, read_frames, resolve_sources


def test_resolve_sources(shared_data, tmp_path, monkeypatch):
    for name in ("b.jpg", "a.png"):
        shutil.copy(shared_data / "images" / "dog.jpg", tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "clip.avi").write_bytes(b"")
    found = resolve_sources([tmp_path, str(tmp_path / "b.jpg"), str(tmp_path / "*.png")])
    # folder contents sorted, images and videos only, each file once
    assert [(s.kind, s.name) for s in found] == [("image", "a.png"), ("image", "b.jpg"), ("video", "clip.avi")]
    monkeypatch.chdir(tmp_path)
    assert [(s.kind, s.path) for s in resolve_sources("0")] == [("camera", "0")]
    with pytest.raises(FileNotFoundError, match="input not found"):
        resolve_sources(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="no files match"):
        resolve_sources(str(tmp_path / "*.bmp"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images or videos in folder"):
        resolve_sources(empty)


def test_unreadable_inputs_become_error_frames(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    video = tmp_path / "bad.mp4"
    video.write_bytes(b"not a video")
    frames = [f for s in resolve_sources([bad, video, "97"]) for f in read_frames(s)]
    assert [f.image is None for f in frames] == [True, True, True]
    assert "bad.jpg" in frames[0].error
    assert "cannot open video" in frames[1].error and "cannot open camera 97" in frames[2].error


def test_read_ahead_keeps_order_raises_and_stops():
    assert list(read_ahead(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("broken input")

    with pytest.raises(ValueError, match="broken input"):
        list(read_ahead(failing()))
    produced = []

    def endless():
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    stream = read_ahead(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # stops the producer thread
    assert not any(t.name == "yolox-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10
