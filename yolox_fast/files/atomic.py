"""Writing a file so that readers, and a crash, see the old content or the new, never a partial file.

The content goes to a temporary file beside the target, named ``<name>.<host>-<pid>.<token>.tmp`` (visible
next to the target, and saying which process wrote it), which is then renamed over the target, or, when the
target must not be replaced, hard-linked to it (``link`` fails when the name exists: two writers cannot both
win). Files are created with mode 0666 minus the umask, like any other program's files (``mkstemp`` would
make them 0600). A temporary file left by a killed process of this host is removed by the next write to the
same target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
from pathlib import Path

#: ``<host>-<pid>`` of this process, as it appears in temporary file names (the host made file-name safe).
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname().split(".")[0])[:32] or "host"


def _owner_tag() -> str:
    return f"{_HOST}-{os.getpid()}"


def temp_path_for(path: Path) -> Path:
    """A fresh temporary path beside ``path``: ``<name>.<host>-<pid>.<token>.tmp``."""
    return path.with_name(f"{path.name}.{_owner_tag()}.{secrets.token_hex(4)}.tmp")


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: treat every writer as alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by processes of this host that no longer run.

    Those of other hosts (a shared folder) and of live processes are left alone. Returns what was removed.
    """
    pattern = re.compile(re.escape(path.name) + r"\.(.+)-(\d+)\.[0-9a-f]+\.tmp")
    removed = []
    with contextlib.suppress(OSError):
        for candidate in path.parent.iterdir():
            match = pattern.fullmatch(candidate.name)
            if match is None or match.group(1) != _HOST or _process_alive(int(match.group(2))):
                continue
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def _fsync_dir(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(folder, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _publish_exclusively(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if ``path`` does not exist (``FileExistsError`` otherwise)."""
    try:
        os.link(tmp, path)  # atomic and exclusive: fails with EEXIST when the name is taken
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path} exists (created while this one was being written); "
                                            "it was not replaced", str(path)) from None
    except OSError as exc:  # a file system without hard links: claim the name first, then rename onto the claim
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path: Path, write, *, overwrite: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then give it the name ``path``.

    A reader (or a crash) sees the old file or the new one, never a partial one. With ``overwrite=False``
    the last step fails with ``FileExistsError`` if ``path`` exists by then (checked atomically, not
    before the write), and nothing is replaced. On any failure the temporary file is removed and the
    error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_exclusively(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, which must not exist (``FileExistsError``); atomically, mode per umask."""
    atomic_write(path, lambda f: f.write(data), overwrite=False)
