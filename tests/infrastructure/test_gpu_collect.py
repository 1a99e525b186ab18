"""`pytest -m gpu tests` (what scripts/gpu_check.sh runs) must collect on the GPU image, which has no
pycocotools: a module-level import of it would stop the collection with an error and run no GPU test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_tests_collect_without_pycocotools(tmp_path):
    # sitecustomize runs at interpreter start-up: `import pycocotools` then raises ImportError everywhere.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['pycocotools'] = None\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    probe = subprocess.run([sys.executable, "-c", "import pycocotools"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0, "the module is not hidden: the test would prove nothing"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "tests", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower(), proc.stdout[-3000:]
    assert "tests collected" in proc.stdout or "selected" in proc.stdout, proc.stdout[-2000:]
