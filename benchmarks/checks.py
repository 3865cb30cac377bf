"""A correctness check for benchmarks that holds under ``python -O`` (unlike ``assert``)."""

from __future__ import annotations


def require(ok: bool, what: object) -> None:
    """Stop the benchmark with exit status 1 when ``ok`` is false: its figures would be wrong."""
    if not ok:
        raise SystemExit(f"benchmark check failed: {what}")
