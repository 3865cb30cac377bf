"""What the cluster tests share: run examples/cluster_watch.py as node 3 of a cluster."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def run_cluster_watch(node_port: int, seed_port: int) -> tuple[int, str, str]:
    """``cluster_watch.py --once`` as node 3 seeded with node 1: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples/cluster_watch.py"),
        "--node=3",
        f"--url=bin:127.0.0.1:{node_port}",
        f"--seed=1=bin:127.0.0.1:{seed_port}",
        "--once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
