"""The shipped script and stylesheet (static/js/) are what their readable sources (static/src/) build to."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "static" / "build.py"
ESBUILD = ROOT / "e2e" / "node_modules" / ".bin" / "esbuild"

pytestmark = pytest.mark.skipif(
    not ESBUILD.exists(), reason="esbuild is not installed: `npm ci` in e2e/ (./run test does)"
)


def check(sources: Path, shipped: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD), "--check", "--sources", str(sources), "--shipped", str(shipped)],
        capture_output=True,
        text=True,
    )


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the sources and the shipped files, to make stale."""
    sources, shipped = tmp_path / "src", tmp_path / "js"
    shutil.copytree(ROOT / "static" / "src", sources)
    shutil.copytree(ROOT / "static" / "js", shipped)
    return sources, shipped


def test_shipped_files_are_built_from_their_sources() -> None:
    out = check(ROOT / "static" / "src", ROOT / "static" / "js")
    assert out.returncode == 0, out.stderr


def test_a_hand_edited_shipped_file_is_stale_and_the_check_says_to_rebuild(tree: tuple[Path, Path]) -> None:
    sources, shipped = tree
    (shipped / "consent.js").write_text((shipped / "consent.js").read_text().replace("consent:change", "x"))
    out = check(sources, shipped)
    assert out.returncode == 1
    assert "consent.js is stale" in out.stderr and "./run build" in out.stderr
    assert "consent.css" not in out.stderr


def test_a_changed_source_makes_its_shipped_file_stale(tree: tuple[Path, Path]) -> None:
    sources, shipped = tree
    css = (sources / "consent.css").read_text()
    (sources / "consent.css").write_text(css.replace("max-width: 40rem", "max-width: 41rem"))
    out = check(sources, shipped)
    assert out.returncode == 1 and "consent.css is stale" in out.stderr


def test_a_comment_in_a_source_changes_nothing_shipped(tree: tuple[Path, Path]) -> None:
    """The check compares what is built, not the text: comments are free."""
    sources, shipped = tree
    js = (sources / "consent.js").read_text()
    (sources / "consent.js").write_text(js.replace('"use strict";', '"use strict";\n  // a note for readers'))
    assert check(sources, shipped).returncode == 0
