"""Checks for benchmarks and soaks that hold under ``python -O`` (unlike ``assert``)."""

from __future__ import annotations

import json
import sys
from typing import Any


def require(ok: bool, what: object) -> None:
    """Stop the benchmark with exit status 1 when ``ok`` is false: its figures would be wrong."""
    if not ok:
        raise SystemExit(f"benchmark check failed: {what}")


def print_figures(figures: dict[str, Any], *, as_json: bool, width: int, failed: str) -> bool:
    """Print a soak's figures (one JSON line, or a line each) and its violations; True if none."""
    if as_json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:{width}} {value}")
    if figures["violations"]:
        print(failed, *figures["violations"], sep="\n  ", file=sys.stderr)
        return False
    return True
