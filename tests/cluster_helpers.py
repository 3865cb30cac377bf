"""What the cluster tests share: free ports, a bounded wait, cluster_watch.py as node 3."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (polling the loop, bounded) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


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
