"""docs/requirements.md and the tests agree: every requirement has a test, and every test it lists
exists and names that requirement in its docstring (so a renamed, moved or relabelled test is seen)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "requirements.md"
HEADING = re.compile(r"^### R(\d+) ")
LISTED = re.compile(r"^- `([^`:]+)::(\w+)`$")
REQUIREMENTS = range(1, 40)  # R1 to R39


def listed() -> dict[int, list[tuple[str, str]]]:
    """R-number -> the (file, test) pairs listed under its heading, in order."""
    found: dict[int, list[tuple[str, str]]] = {}
    current: int | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if heading := HEADING.match(line):
            current = int(heading.group(1))
            assert current not in found, f"R{current} has two headings"
            found[current] = []
        elif (test := LISTED.match(line)) and current is not None:
            found[current].append((test.group(1), test.group(2)))
    return found


@cache
def docstrings(path: str) -> dict[str, str]:
    """Each test function of a file (module level or in a class) -> its docstring."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return {
        node.name: ast.get_docstring(node) or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_requirement_has_a_heading_in_order_and_a_test() -> None:
    found = listed()
    assert list(found) == list(REQUIREMENTS)
    assert [f"R{n}" for n, tests in found.items() if not tests] == []


def test_every_listed_test_exists_and_names_its_requirement() -> None:
    wrong = []
    for n, tests in listed().items():
        for path, name in tests:
            if not (ROOT / path).is_file():
                wrong.append(f"R{n}: {path} does not exist")
            elif name not in docstrings(path):
                wrong.append(f"R{n}: {path} has no test {name}")
            elif not re.search(rf"\bR{n}\b", docstrings(path)[name]):
                wrong.append(f"R{n}: the docstring of {path}::{name} does not name R{n}")
    assert wrong == []
