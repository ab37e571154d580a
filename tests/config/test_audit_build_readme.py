"""The README's tour shows files of examples/ as they are: a block whose first
line names such a file holds the same code (the module docstring aside), so
what a reader copies configures and runs."""

from __future__ import annotations

import ast
import re

import pytest

from tests.config.tooling import ROOT

BLOCK = re.compile(r"```python\n# (examples/\S+\.py)\n(.*?)```", re.S)


def shown_files() -> list[tuple[str, str]]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def code_of(source: str) -> str:
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the module docstring
    return "\n".join(ast.dump(node) for node in body)


def test_the_tour_shows_example_files() -> None:
    assert {path for path, _ in shown_files()} >= {
        "examples/static_website/config.py",
        "examples/hello/unikernel.py",
    }


@pytest.mark.parametrize(("path", "shown"), shown_files())
def test_a_shown_file_is_the_real_one(path: str, shown: str) -> None:
    real = (ROOT / path).read_text()
    assert code_of(shown) == code_of(real), f"README's {path} differs from the file"
