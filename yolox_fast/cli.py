"""The error policy every command line of yolox_fast follows.

* bad usage or bad input (a missing or unreadable file, a wrong model name, a malformed annotation, a
  checkpoint that does not fit): one line ``prog: error: ...`` on stderr, exit status 2;
* a failure while running (anything else that goes wrong): one line, exit status 1;
* Ctrl-C: one line, exit status 130; SIGTERM (``kill``, ``timeout``, ``docker stop``, a scheduler's
  pre-emption) gets the same clean stop (every ``finally`` runs: partial videos are closed playable, results
  so far are written) with exit status 143;
* ``--debug`` on any command shows the full traceback instead.

A command writes ``def main(argv=None) -> int`` as ``return run_cli(PROG, _main, argv)``; ``_main``
raises :class:`UsageError` (or the input errors below) for bad input and returns its exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

#: Exit statuses (130 and 143 are the shells' 128 + SIGINT and 128 + SIGTERM).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises ``KeyboardInterrupt``, so that a command stops the
    same clean way (a subclass: every ``except KeyboardInterrupt`` clean-up handles it too)."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: 1-minute load average (runnable processes) from which a command counts the machine as shared.
BUSY_LOAD = 0.9


def machine_is_busy() -> bool:
    """Whether other processes already keep at least one core busy (1-minute load average >= :data:`BUSY_LOAD`;
    False where the system has no load average)."""
    try:
        return os.getloadavg()[0] >= BUSY_LOAD
    except (AttributeError, OSError):
        return False


def prefer_passive_openmp_waits() -> None:
    """On a busy machine, let OpenMP threads sleep, not spin, while they wait (``OMP_WAIT_POLICY=PASSIVE``),
    unless the user chose a policy.

    With OpenMP's default wait a thread that reaches a barrier spins for its partners; where another process
    holds a core, the partner is descheduled and the spinning thread burns the core it needs (issue 18.8: the
    yolox-nano step ran 4x slower on 2 cores beside one busy process, and 10-50x slower under heavy load). On an
    idle machine the passive policy is not free: measured on the idle 2-core machine it made the yolox-nano 256
    B=8 step 1.55x and predict at 416 1.85x slower (benchmarks/bench_contention.py, docs/benchmarks.md), so it is
    chosen only when the load average says the machine is shared. OpenMP reads the variable once, when torch
    loads, so this runs when this module is imported: every command imports it before anything that imports
    torch. Without effect when torch is already loaded.
    """
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ and machine_is_busy():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


prefer_passive_openmp_waits()


class UsageError(Exception):
    """Bad usage or bad input that the user can fix; the message says what and how."""


def input_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (exit 2). ``ValueError`` covers the project's data, model-name and
    checkpoint errors (``CheckpointError`` is one), which all name the offending file or value."""
    return (UsageError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show tracebacks (handled by :func:`run_cli`; argparse only documents it).

    Also makes the parser's usage errors one line like every other error (argparse prints the whole usage
    block first, which for ``train`` is dozens of lines): ``prog: error: <what> (see prog --help)``, exit 2.
    """
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    def one_line_usage_error(message: str):
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {one_line(ValueError(message))} (see {parser.prog} --help)\n")

    parser.error = one_line_usage_error


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (the first line plus a count of the rest)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... ({' '.join(lines[1:])[:300]})"


def run_cli(prog: str, main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` under the error policy and return the exit status.

    ``SystemExit`` from argparse (``--help``, usage errors) passes through unchanged (status 0 or 2).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with sigterm_as_interrupt():
            status = main(argv)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        terminated = isinstance(exc, Terminated)
        print(f"{prog}: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except input_error_types() as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # anything else is a failure while running
        if debug:
            raise
        print(f"{prog}: error: {type(exc).__name__}: {one_line(exc)} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if status is None else int(status)
