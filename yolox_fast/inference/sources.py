"""Inputs of prediction: image files, folders, globs, video files and cameras, read ahead in a thread.

:func:`resolve_sources` turns what a user typed into a list of :class:`Source` items; :func:`read_frames`
yields the frames of one item; :func:`read_ahead` runs any frame iterator in a background thread so
that decoding (OpenCV releases the GIL) overlaps the model.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.preprocess import IMAGE_SUFFIXES, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is ``"image"``, ``"video"`` or ``"camera"``; ``path`` a file path or a camera index."""

    kind: str
    path: str

    @property
    def name(self) -> str:
        return f"camera{self.path}" if self.kind == "camera" else os.path.basename(self.path)


@dataclass
class Frame:
    """A decoded frame, or the error that stopped it.

    Attributes:
        source: where it came from.
        index: frame number within a video or camera stream (0 for an image).
        image: BGR uint8 ``[H, W, 3]``, or None when ``error`` is set.
        error: why the file could not be read (the frame is skipped), or None.
    """

    source: Source
    index: int
    image: np.ndarray | None
    error: str | None = None

    @property
    def label(self) -> str:
        """``path`` for an image, ``path#frame`` for a video or camera frame."""
        return self.source.path if self.source.kind == "image" else f"{self.source.path}#{self.index}"


def _kind_of_file(path: str) -> str:
    return "video" if path.lower().endswith(VIDEO_SUFFIXES) else "image"


def resolve_sources(specs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Source]:
    """Expand image files, folders (their images and videos, sorted, not recursive), globs, video files and
    camera indices (``"0"``) into :class:`Source` items, in the order given, each file once.

    Raises:
        FileNotFoundError: a path that does not exist, a glob that matches nothing, a folder without
            images or videos.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    sources: list[Source] = []
    for spec in map(os.fspath, specs):
        if spec.isdigit() and not os.path.exists(spec):
            sources.append(Source("camera", spec))
        elif os.path.isdir(spec):
            names = sorted(n for n in os.listdir(spec) if n.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES))
            if not names:
                raise FileNotFoundError(f"no images or videos in folder {spec} (looked for "
                                        f"{', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
            sources.extend(Source(_kind_of_file(n), os.path.join(spec, n)) for n in names)
        elif os.path.isfile(spec):
            sources.append(Source(_kind_of_file(spec), spec))
        elif glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"no files match {spec}")
            sources.extend(Source(_kind_of_file(p), p) for p in matches)
        else:
            raise FileNotFoundError(f"input not found: {spec}")
    # the same file named twice (e.g. on its own and through its folder) is processed once
    seen: set[str] = set()
    unique = []
    for s in sources:
        key = s.path if s.kind == "camera" else os.path.realpath(s.path)
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


def open_video(source: Source) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` for a video file or camera; ``ValueError`` when OpenCV cannot open it."""
    cap = cv2.VideoCapture(int(source.path) if source.kind == "camera" else source.path)
    if not cap.isOpened():
        cap.release()
        what = f"camera {source.path}" if source.kind == "camera" else f"video {source.path}"
        raise ValueError(f"cannot open {what} (missing, unsupported codec, or not a video)")
    return cap


def read_frames(source: Source, stride: int = 1) -> Iterator[Frame]:
    """The frames of one source: one for an image (with ``error`` set when it cannot be decoded), every
    ``stride``-th frame of a video or camera (frames 0, stride, 2 x stride ...; a frame's ``index`` is its
    number in the stream) until the stream ends."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if source.kind == "image":
        try:
            yield Frame(source, 0, read_image(source.path))
        except (OSError, ValueError) as exc:
            yield Frame(source, 0, None, str(exc))
        return
    try:
        cap = open_video(source)
    except ValueError as exc:
        yield Frame(source, 0, None, str(exc))
        return
    try:
        index = 0
        while True:
            if index % stride:  # skipped frames are grabbed, not decoded
                if not cap.grab():
                    break
                index += 1
                continue
            ok, image = cap.read()
            if not ok:
                break
            yield Frame(source, index, image)
            index += 1
    finally:
        cap.release()


def frame_count(source: Source, stride: int = 1) -> int | None:
    """Frames a source will give (1 for an image, the container's count for a video divided by ``stride``,
    None for a camera)."""
    if source.kind == "image":
        return 1
    if source.kind == "camera":
        return None
    cap = cv2.VideoCapture(source.path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return -(-max(n, 0) // stride)


_DONE = object()


def read_ahead(frames: Iterable, depth: int = 4) -> Iterator:
    """Iterate ``frames`` in a background thread, at most ``depth`` items ahead; exceptions re-raise here.

    Closing the returned generator (or leaving its loop early) stops the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer
            items.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="yolox-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
