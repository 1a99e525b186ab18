"""Run folders and the names inside them: one numbering scheme, claimed atomically.

Every command that writes a run writes it into ``<root>/<task>/<name>``, and when that is taken into
``<name>2``, ``<name>3`` ... (as ultralytics' ``runs/<task>/<name>N``): ``runs/train/yolox-s``,
``runs/predict/exp2``. Files inside a run that would share a name follow the same scheme, before the suffix
(``dog.jpg``, ``dog2.jpg``).

Claiming is atomic: a folder is taken by creating it (``mkdir`` fails when it exists), never by checking
first and creating later, so runs started at the same moment never share a folder. A folder the user names
explicitly may already exist and be empty; it is then taken by creating a marker file in it exclusively
(``O_EXCL``), so two runs given the same empty folder cannot both start.

    from yolox_fast.files.run_dir import claim_run_dir
    run = claim_run_dir("runs", "eval", "exp")      # runs/eval/exp, or exp2, exp3 ... (created, empty)
"""

from __future__ import annotations

import os
from pathlib import Path

#: Give up after this many taken names (a folder with 10000 runs of one name is a mistake, not a queue).
MAX_NUMBER = 10000


def numbered(name: str, n: int, keep_suffix: bool = False) -> str:
    """The ``n``-th candidate for ``name`` (``n >= 1``): ``exp``, ``exp2``, ``exp3`` ...

    ``keep_suffix``: number before a file suffix (``dog.jpg``, ``dog2.jpg``).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return name
    stem, suffix = os.path.splitext(name) if keep_suffix else (name, "")
    return f"{stem}{n}{suffix}"


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"a run name must be a plain folder name (no path separators), got {name!r}")


def claim_run_dir(root: str | os.PathLike, task: str, name: str, exist_ok: bool = False) -> Path:
    """Create and return ``root/task/name``, or the first free of ``name2``, ``name3`` ...

    Args:
        root: the folder of all runs (``runs``).
        task: the command's folder (``train``, ``predict``, ``eval``).
        name: the run's name (``exp``, the model name).
        exist_ok: return ``root/task/name`` itself even when it exists (an earlier run's files stay and may
            be replaced); no numbering.

    Returns:
        The claimed folder, newly created and empty (unless ``exist_ok`` found it).

    Raises:
        ValueError: ``name`` or ``task`` is not a plain folder name.
        FileExistsError: every numbered name up to :data:`MAX_NUMBER` is taken.
        NotADirectoryError: ``root/task`` is a file.
    """
    _check_name(task)
    return claim_numbered_dir(Path(root) / task, name, exist_ok)


def claim_numbered_dir(parent: str | os.PathLike, name: str, exist_ok: bool = False) -> Path:
    """:func:`claim_run_dir` with the parent given whole (``--project runs/predict``): ``parent/name``,
    ``parent/name2`` ..., created exclusively (``parent`` and its parents are created when missing)."""
    _check_name(name)
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"{parent} is a file, not a folder for runs")
    parent.mkdir(parents=True, exist_ok=True)
    if exist_ok:
        (parent / name).mkdir(exist_ok=True)
        return parent / name
    for n in range(1, MAX_NUMBER + 1):
        candidate = parent / numbered(name, n)
        try:
            candidate.mkdir()  # atomic claim: fails when another run (or anything else) has the name
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run folder under {parent}: {name} to {numbered(name, MAX_NUMBER)} are taken")


def claim_dir(path: str | os.PathLike, marker: str, exist_ok: bool = False) -> Path:
    """Claim a folder the user named: create it, or take an existing empty one by creating ``marker`` in it.

    Args:
        path: the folder (created with its parents when missing).
        marker: a file the run writes anyway (``train.log``), created empty and exclusively: of two runs
            given the same folder at the same moment, one creates it and the other gets ``FileExistsError``.
        exist_ok: take the folder whatever it holds (an earlier run's files may be replaced).

    Raises:
        NotADirectoryError: ``path`` is a file.
        FileExistsError: the folder holds files (an earlier run, or another run that started just now).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    if exist_ok:
        return path
    others = [p.name for p in path.iterdir() if p.name != marker]
    if others:
        raise FileExistsError(f"{path} already holds files ({', '.join(sorted(others)[:4])}"
                              f"{', ...' if len(others) > 4 else ''})")
    try:
        os.close(os.open(path / marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        raise FileExistsError(f"{path} was taken by another run that started at the same time "
                              f"(it created {marker})") from None
    return path


class UniqueNames:
    """Names of the files of one run folder: each key gets a name no other key has (compared ignoring case,
    for case-insensitive file systems), numbered with :func:`numbered` when taken.

        names = UniqueNames(keep_suffix=True)
        names.get("a/dog.jpg", "dog.jpg")   # 'dog.jpg'
        names.get("b/dog.jpg", "dog.jpg")   # 'dog2.jpg'
        names.get("a/dog.jpg", "dog.jpg")   # 'dog.jpg' again: same key, same name
    """

    def __init__(self, keep_suffix: bool = True):
        self.keep_suffix = keep_suffix
        self._by_key: dict[object, str] = {}
        self._taken: set[str] = set()

    def get(self, key, name: str) -> str:
        if key in self._by_key:
            return self._by_key[key]
        for n in range(1, MAX_NUMBER + 1):
            candidate = numbered(name, n, self.keep_suffix)
            if candidate.lower() not in self._taken:
                break
        else:
            raise FileExistsError(f"more than {MAX_NUMBER} outputs named {name}")
        self._taken.add(candidate.lower())
        self._by_key[key] = candidate
        return candidate
