"""The repository stands alone: its documentation is inside it, and the README is a short front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".cpp", ".h", ".cu", ".cuh", ".toml", ".cfg", ".txt", ".yaml", ".yml"}
#: Names of documents that live outside the repository (the design it came from, the seed walk-through).
OUTSIDE = re.compile(r"DESIGN\.md|shared/seed|\.\./shared/(?!data\b)")


def _repo_text_files() -> list[Path]:
    skip = {".git", "build", "__pycache__", ".pytest_cache", ".benchmarks", "runs"}
    return sorted(p for p in ROOT.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                  and not skip.intersection(p.relative_to(ROOT).parts) and not p.name.endswith(".egg-info"))


def test_nothing_points_outside_the_repository():
    """Only the shared test data (``../shared/data``, skipped when absent) may be named from outside."""
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in _repo_text_files() if p != Path(__file__)
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "references to files outside the repository: " + ", ".join(hits)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines; long sections belong in docs/"


@pytest.mark.parametrize("doc", sorted((ROOT).glob("*.md")) + sorted((ROOT / "docs").glob("*.md")),
                         ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path):
    missing = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
               if "://" not in target and not (doc.parent / target).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_the_design_is_in_docs():
    design = (ROOT / "docs" / "design.md").read_text()
    for fact in ("2.5 strides", "1.5 strides", "1e5", "1e6", "log1p", "lowest anchor index", "114"):
        assert fact in design, f"docs/design.md does not state {fact!r}"
