"""The package's import graph: commands on top, libraries below, ops at the bottom, nothing importing upward.

Each sub-package of ``yolox_fast`` has a layer (``LAYERS``); a module may import modules of its own
sub-package and of sub-packages in strictly lower layers. The command modules at the top level
(``train``, ``eval``, ``predict``, ``export``, ``detect``, ``cli``) and ``yolox_fast/__init__.py`` form
the top layer. ``docs/architecture.md`` explains the layers.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yolox_fast"

#: Layer of each sub-package (and of the compiled ``_C`` and the Triton ``kernels``); higher imports lower.
LAYERS = {
    "_C": 0,          # the compiled operator library (built next to the package root)
    "kernels": 0,     # Triton kernels (installed as yolox_fast.kernels)
    "files": 0,       # atomic writes, run folders
    "ops": 1,         # the hot-path ops, their reference and backends
    "data": 2,        # datasets, augmentation, preprocessing, class names
    "models": 3,      # network, loss, SimOTA assigner, checkpoints
    "deploy": 4,      # ONNX export and ONNX Runtime
    "inference": 5,   # Detector, results, drawing, input sources
    "evaluation": 6,  # COCO evaluation (runs models through inference)
    "engine": 7,      # the trainer
}
COMMAND_LAYER = 8
COMMANDS = {"__init__", "__main__", "train", "eval", "predict", "export", "detect", "cli"}


def _area(module: str) -> str:
    """``yolox_fast.ops.nms`` -> ``ops``; a top-level module -> its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(area: str) -> int:
    if area in LAYERS:
        return LAYERS[area]
    if area in COMMANDS:
        return COMMAND_LAYER
    raise KeyError(area)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every ``yolox_fast`` import in ``path``, including function-level ones."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    module_parts = list(rel.parts)
    package_parts = module_parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("yolox_fast"):
                continue
            if target == "yolox_fast" or (node.module is None and node.level):
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("yolox_fast")]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_area_has_a_layer():
    areas = {_area(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in _modules()}
    unknown = sorted(a for a in areas if a not in LAYERS and a not in COMMANDS)
    assert not unknown, f"modules outside the layer map (add them to LAYERS or COMMANDS): {unknown}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_upward_import(path: Path):
    own = _area(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    upward = []
    for line, target in _imports(path):
        other = _area(target)
        if other == own or (own in COMMANDS and other in COMMANDS):
            continue  # within one sub-package, or between commands (detect is predict's alias)
        if _layer(other) >= _layer(own):
            upward.append(f"line {line}: {target} (layer {_layer(other)} >= {own}'s {_layer(own)})")
    assert not upward, f"{path.relative_to(PACKAGE.parent)} imports upward: " + "; ".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The AST walk finds relative, absolute and function-level imports (so the test above can fail)."""
    fake = PACKAGE / "ops" / "_layout_probe.py"
    assert not fake.exists()
    source = "from ..models import build_yolox\n\ndef f():\n    import yolox_fast.engine.trainer\n"
    fake.write_text(source)
    try:
        targets = [t for _, t in _imports(fake)]
    finally:
        fake.unlink()
    assert targets == ["yolox_fast.models", "yolox_fast.engine.trainer"]
    assert all(_layer(_area(t)) > LAYERS["ops"] for t in targets)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_module_imports(path: Path):
    """A moved module's relative imports (function-level ones too) resolve: import it, then resolve each
    ``yolox_fast`` name it imports inside functions."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    if name.endswith("__main__"):
        pytest.skip("__main__ runs the command")
    importlib.import_module(name)
    for line, target in _imports(path):
        try:
            importlib.import_module(target)
        except ModuleNotFoundError:  # ``from pkg import name``: the name is an attribute, not a module
            parent, _, attr = target.rpartition(".")
            assert hasattr(importlib.import_module(parent), attr), f"{name} line {line}: {target} does not exist"


def test_top_level_holds_commands_only():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert set(top) <= COMMANDS, f"library modules at the package top level: {sorted(set(top) - COMMANDS)}"


# -- production code never runs the specification -------------------------------------------------------
#: What the op wrappers may take from ``ops/reference.py``: the spec algorithms they register as their
#: ``"reference"`` backend. Helpers production also needs (box coding, the decode) live in ops/box_coding.py.
REFERENCE_BACKENDS = {"pairwise_iou", "simota_assign", "nms", "batched_nms", "postprocess"}


def _reference_uses(path: Path) -> list[str]:
    """``line: what`` for each use of ``ops.reference`` in ``path``: imports outside ops/, and inside ops/
    every ``reference.<name>`` or ``from .reference import <name>`` that is not a registered spec backend."""
    in_ops = path.parent == PACKAGE / "ops"
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [f"line {line}: imports {target}" for line, target in _imports(path)
             if target.endswith("ops.reference") and not in_ops]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not in_ops and (node.module or "").endswith("ops") \
                and any(a.name == "reference" for a in node.names):
            found.append(f"line {node.lineno}: imports yolox_fast.ops.reference")
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("reference"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if in_ops and a.name not in REFERENCE_BACKENDS]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "reference" \
                and (not in_ops or node.attr not in REFERENCE_BACKENDS):
            found.append(f"line {node.lineno}: reference.{node.attr}")
    return found


@pytest.mark.parametrize("path", [p for p in _modules() if p.name != "reference.py"],
                         ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_production_code_does_not_use_the_reference(path: Path):
    uses = _reference_uses(path)
    assert not uses, (f"{path.relative_to(PACKAGE.parent)} uses ops/reference.py (the spec, for tests) beyond "
                      f"its registered reference backends: {'; '.join(uses)}; import box helpers from ops/box_coding")


def test_the_reference_check_sees_a_box_helper_call():
    """The check above can fail: a module calling ``reference.decode_outputs`` is reported."""
    probe = PACKAGE / "deploy" / "_reference_probe.py"
    assert not probe.exists()
    probe.write_text("from ..ops import reference\n\ndef f(x, g, s):\n    return reference.decode_outputs(x, g, s)\n")
    try:
        uses = _reference_uses(probe)
    finally:
        probe.unlink()
    assert uses == ["line 1: imports yolox_fast.ops.reference", "line 4: reference.decode_outputs"]
