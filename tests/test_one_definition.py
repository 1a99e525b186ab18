"""Ideas written once: the prediction thresholds, the input-size rule, the image suffixes and the inference
memory layout each have one definition, which every other module imports (read from the source, so a
copy that creeps back in fails here)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from yolox_fast.data.preprocess import IMAGE_SUFFIXES
from yolox_fast.models.layout import inference_memory_format
from yolox_fast.ops.anchors import check_input_size
from yolox_fast.ops.postprocess import PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET

PACKAGE = Path(__file__).resolve().parents[1] / "yolox_fast"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def _constants(path: Path) -> list[ast.Constant]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)]


def _inference_side(path: Path) -> bool:
    """Modules that predict, evaluate, export or train (where a copied threshold would hide)."""
    rel = path.relative_to(PACKAGE)
    return len(rel.parts) == 1 or rel.parts[0] in ("deploy", "inference", "evaluation", "engine")


def _threshold_copies(path: Path) -> list[str]:
    return [f"line {c.lineno}: {c.value}" for c in _constants(path)
            if type(c.value) is float and c.value in (PREDICT_CONF, PREDICT_IOU)]


def _size_checks(path: Path) -> list[str]:
    return [f"line {n.lineno}: % 32" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod) and isinstance(n.right, ast.Constant)
            and n.right.value == 32]


def _suffix_lists(path: Path) -> list[str]:
    return [f"line {n.lineno}: suffix list" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.Tuple, ast.List, ast.Set))
            and {".jpg", ".png"} <= {e.value for e in n.elts if isinstance(e, ast.Constant)}]


def _layout_choices(path: Path) -> list[str]:
    return [f"line {n.lineno}: torch.{n.attr}" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Attribute) and n.attr in ("channels_last", "preserve_format")
            and isinstance(n.value, ast.Name) and n.value.id == "torch"]


@pytest.mark.parametrize("path", [p for p in MODULES if _inference_side(p)], ids=_rel)
def test_prediction_thresholds_are_not_restated(path: Path):
    """0.25 / 0.45 live in ops/postprocess.py (PREDICT_CONF, PREDICT_IOU); nothing else spells them."""
    found = _threshold_copies(path)
    assert not found, f"{_rel(path)} restates a prediction threshold (import it from ops.postprocess): {found}"


@pytest.mark.parametrize("path", [p for p in MODULES if _rel(p) != "ops/anchors.py"], ids=_rel)
def test_the_input_size_rule_is_not_restated(path: Path):
    """``size % 32`` is checked by ops.anchors.check_input_size only."""
    found = _size_checks(path)
    assert not found, f"{_rel(path)} checks a multiple of 32 itself (use ops.anchors.check_input_size): {found}"


@pytest.mark.parametrize("path", [p for p in MODULES if _rel(p) != "data/preprocess.py"], ids=_rel)
def test_image_suffixes_are_not_restated(path: Path):
    found = _suffix_lists(path)
    assert not found, f"{_rel(path)} lists image suffixes (import data.preprocess.IMAGE_SUFFIXES): {found}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent.name in ("inference", "evaluation")], ids=_rel)
def test_inference_layout_comes_from_models_layout(path: Path):
    """Prediction and evaluation ask models.layout.inference_memory_format for their input layout."""
    found = _layout_choices(path)
    assert not found, f"{_rel(path)} picks a memory format itself: {found}"


#: The functions that take SimOTA's eight tensors one by one: public APIs and the op schema's fake kernel.
#: Everything else passes a SimOTABatch (yolox_fast/ops/simota_batch.py).
SIMOTA_SPELLED_OUT = {"ops/simota.py:simota_assign", "ops/simota.py:_simota_assign_fake",
                      "ops/reference.py:simota_assign", "ops/simota_torch.py:simota_assign_torch",
                      "models/assigner.py:validate", "models/assigner.py:assign"}


def _simota_signatures(path: Path) -> list[str]:
    """``file:function`` for each function of ``path`` whose parameters are SimOTA's eight tensors."""
    from yolox_fast.ops.simota_batch import SimOTABatch

    return [f"{_rel(path)}:{n.name}" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and set(SimOTABatch._fields) <= {a.arg for a in n.args.args}]


def test_simota_tensors_travel_as_one_batch():
    found = {sig for path in MODULES for sig in _simota_signatures(path)}
    extra = sorted(found - SIMOTA_SPELLED_OUT)
    assert not extra, f"functions spelling out SimOTA's eight tensors (pass a SimOTABatch): {extra}"
    assert found == SIMOTA_SPELLED_OUT  # the check sees them (so it can fail)


def test_the_one_definitions_hold_what_they_say():
    assert (PREDICT_CONF, PREDICT_IOU, PREDICT_MAX_DET) == (0.25, 0.45, 100)
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp"} <= set(IMAGE_SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)
    assert inference_memory_format("cpu") == torch.channels_last
    assert inference_memory_format(torch.device("cpu")) == torch.channels_last


@pytest.mark.parametrize("size, expected", [(416, (416, 416)), ((256, 320), (256, 320)), ([32, 64], (32, 64))])
def test_check_input_size_accepts(size, expected):
    assert check_input_size(size) == expected


@pytest.mark.parametrize("size", [0, 31, 33, 400, -32, (416,), (416, 416, 416), (416, 40), 416.0, True, "416"])
def test_check_input_size_names_the_setting(size):
    with pytest.raises(ValueError, match=r"^--img-size must be a positive multiple of 32, got "):
        check_input_size(size, "--img-size")


def test_the_guards_can_fail(tmp_path):
    """Each source check above reports a copy (so none of them is vacuous)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\nCONF = 0.25\nBAD = size % 32\nEXT = ('.jpg', '.png')\nF = torch.channels_last\n")
    for check in (_threshold_copies, _size_checks, _suffix_lists, _layout_choices):
        assert len(check(probe)) == 1, check.__name__
