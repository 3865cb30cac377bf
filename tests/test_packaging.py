"""Packaging: the license is where the metadata says, and the demos need binif alone."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_is_mit_and_the_metadata_says_so_in_spdx() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # the SPDX string: no deprecation warning on install
    assert project["license-files"] == ["LICENSE"]


def test_make_demo_installs_binif_without_the_test_extra() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "demo-codec"):
        assert re.search(rf"^{target}: \$\(DEMO_INSTALLED\)$", makefile, re.M), target
    recipe = makefile.split("$(DEMO_INSTALLED): pyproject.toml\n", 1)[1].split("\n\n", 1)[0]
    assert "pip install --quiet -e .\n" in recipe + "\n" and "[" not in recipe


def test_the_demos_import_only_binif_and_the_standard_library() -> None:
    for name in ("replication.py", "codec_tour.py"):
        tree = ast.parse((ROOT / "examples" / name).read_text())
        modules = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
        }
        extra = modules - set(sys.stdlib_module_names) - {"binif", "__future__"}
        assert not extra, (name, extra)
