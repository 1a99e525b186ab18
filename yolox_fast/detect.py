"""``python -m yolox_fast.detect``: the former name of :mod:`yolox_fast.predict`, kept as an alias.

It takes the same arguments (``--ckpt`` is an alias of ``--weights``) and writes into a new numbered run
folder under ``--project`` like predict.
"""

from __future__ import annotations

import sys

from .cli import run_cli
from .predict import _main as _predict_main

PROG = "python -m yolox_fast.detect"


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, lambda args: _predict_main(args, prog=PROG), argv)


if __name__ == "__main__":
    sys.exit(main())
