"""The README's examples run as written, and so does the codec tour."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)


def test_readme_has_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


def test_readme_error_examples_fail_when_no_error_is_raised() -> None:
    """An example of an error passes silently if the call stops raising: each has a failing else."""
    for index, block in enumerate(BLOCKS):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Try) and node.handlers:
                assert node.orelse, f"README python block {index}, line {node.lineno}: no else"


def test_readme_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    """What the README shows type-checks as it is written: users copy it into strict projects."""
    files = []
    for index, block in enumerate(BLOCKS):
        path = tmp_path / f"readme_block_{index}.py"
        path.write_text(block)
        files.append(str(path))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # the editable install hides binif from mypy
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_codec_tour_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/codec_tour.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "rebuilt byte for byte: True" in result.stdout
    assert "TruncatedField: field 15" in result.stdout
