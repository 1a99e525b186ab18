"""The SimOTA variants are defined once (yolox_fast/ops/simota_variant.py) and imported everywhere."""

import ast
from pathlib import Path

import pytest

from yolox_fast.engine.config import TrainConfig
from yolox_fast.ops.simota_variant import (
    CENTER,
    DEFAULT_VARIANT,
    SEED,
    VARIANTS,
    SimOTAVariant,
    get_variant,
    resolve_variant,
)

ROOT = Path(__file__).resolve().parents[1]


def test_variants_are_the_design_table():
    """docs/design.md: the seed's SimOTA (released weights) and the 2023 upstream one."""
    assert SEED == SimOTAVariant(center_radius=2.5, candidates="box_or_center", penalty=1e5)
    assert CENTER == SimOTAVariant(center_radius=1.5, candidates="center", penalty=1e6)
    assert VARIANTS == {"seed": SEED, "center": CENTER} and DEFAULT_VARIANT == "seed"
    assert SEED.op_args() == (2.5, False, 1e5) and CENTER.op_args() == (1.5, True, 1e6)


def test_lookup_and_overrides():
    assert get_variant("center") is CENTER
    with pytest.raises(ValueError, match="unknown SimOTA variant 'seeds'; choose from seed, center"):
        get_variant("seeds")
    assert resolve_variant() is SEED
    assert resolve_variant("seed", candidates="center") == CENTER
    assert resolve_variant(CENTER, center_radius=2.0) == SimOTAVariant(2.0, "center", CENTER.penalty)
    with pytest.raises(ValueError, match="candidates must be one of"):
        SimOTAVariant(2.5, "box", 1e5)
    with pytest.raises(ValueError, match="center_radius must be > 0"):
        resolve_variant(center_radius=0.0)


def test_training_config_takes_the_variant_names():
    assert TrainConfig().simota == DEFAULT_VARIANT
    for name in VARIANTS:
        TrainConfig(simota=name).resolved()
    with pytest.raises(ValueError, match="simota must be one of seed, center, got 'upstream'"):
        TrainConfig(simota="upstream").resolved()


def _variant_literals(path: Path) -> list[str]:
    """Literals that only the variant definition may hold: its candidate rules and penalties."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and node.value in ("box_or_center", "center", 1e5, 1e6):
            if isinstance(node.value, float) or not isinstance(node.value, bool):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def test_no_copy_of_the_variants_outside_their_module():
    # Where assignment code lives (command-line modules print sizes and count folders with such numbers).
    sources = [*(ROOT / "yolox_fast" / "ops").rglob("*.py"), *(ROOT / "yolox_fast" / "models").rglob("*.py"),
               *(ROOT / "yolox_fast" / "engine").rglob("*.py"),
               *(ROOT / "kernels").rglob("*.py")]
    copies = [hit for p in sources if p.name != "simota_variant.py" for hit in _variant_literals(p)]
    # Dividing a parameter count by 1e6 (printing millions) is not a penalty.
    millions = ("yolox_fast/engine/trainer.py", "yolox_fast/models/summary.py")
    copies = [c for c in copies if not c.startswith(millions) or "1000000.0" not in c]
    assert not copies, "SimOTA variant values outside yolox_fast/ops/simota_variant.py:\n" + "\n".join(copies)
