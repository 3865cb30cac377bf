"""Failover across two hosts: an active replicates dialogs to a backup and dies; then a lossy link.

    sudo python examples/failover.py          # both scenarios, in network namespaces

Each "host" is a Linux network namespace joined to the next by a veth pair,
with addresses in 10.231.0.0/16 that exist only inside those namespaces, so
no packet can leave the machine. The roles run as separate processes:

    python examples/failover.py backup --listen 10.231.1.2:5062 --allow 10.231.1.0/24 --out F
    python examples/failover.py active --peer 10.231.1.2:5062 --bind 10.231.1.1 --log F ...
    python examples/failover.py relay --listen H:P --via H --forward H:P --loss 0.05 ...

1. Kill: the active creates, updates and deletes dialogs (OpenSIPS 2.1 dialog
   packets) and logs each packet once sent; it is SIGKILLed mid-stream. The
   backup's table must hold exactly the dialogs of the packets the active sent.
2. Lossy link: a relay between them drops 5% of the datagrams and reorders
   some. Nothing crashes, and the loss shows in the counters: the active's
   ``packets_sent`` minus the backup's ``received`` is what the relay dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import binif
from binif.opensips21 import DialogCreated, DialogDeleted, DialogState, DialogUpdated

START_TS = 1_795_838_847
PORT = 5062
NET_1 = "10.231.1"  # active <-> backup, or active <-> relay
NET_2 = "10.231.2"  # relay <-> backup


# --- the replicated stream -------------------------------------------------------------


def plan(dialogs: int, window: int) -> list[tuple[str, int]]:
    """Operations in send order: create dialog i, update it later, delete it later still.

    About ``window`` dialogs are open at any moment, so a kill leaves many behind.
    """
    ops = []
    for i in range(dialogs + window):
        if i < dialogs:
            ops.append(("C", i))
        if 0 <= i - window // 2 < dialogs:
            ops.append(("U", i - window // 2))
        if 0 <= i - window < dialogs:
            ops.append(("D", i - window))
    return ops


def callid(i: int) -> str:
    """The Call-ID of dialog ``i``."""
    return f"failover-{i}@{NET_1}.1"


def message(op: str, i: int) -> DialogCreated | DialogUpdated | DialogDeleted:
    """The packet the active sends for one operation."""
    tags = {"callid": callid(i), "from_tag": f"from-{i}", "to_tag": f"to-{i}"}
    if op == "D":
        return DialogDeleted(**tags)
    kind = DialogCreated if op == "C" else DialogUpdated
    return kind.with_defaults(
        **tags,
        from_uri=f"sip:caller-{i}@example.test",
        to_uri="sip:callee@example.test",
        h_id=i,
        start_ts=START_TS,
        state=DialogState.CONFIRMED_NA if op == "C" else DialogState.CONFIRMED,
        caller_sock=f"udp:{NET_1}.1:5060",
        callee_sock=f"udp:{NET_1}.1:5060",
        caller_r_cseq="0",
        callee_r_cseq="1",
        flags=16,
        timeout=START_TS + 3600,
        callee_last_gen_cseq=0 if op == "C" else 1,
    )


def replay(ops: list[tuple[str, int]]) -> dict[str, int]:
    """The table (Call-ID -> state) a backup must hold after exactly these operations."""
    table: dict[str, int] = {}
    for op, i in ops:
        if op == "D":
            table.pop(callid(i), None)
        else:
            table[callid(i)] = int(DialogState.CONFIRMED_NA if op == "C" else DialogState.CONFIRMED)
    return table


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _dump(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        json.dump(data, out)
    os.replace(tmp, path)


# --- the roles -------------------------------------------------------------------------


async def backup(listen: tuple[str, int], allow: list[str], out: str) -> None:
    """Keep a dialog table from replicated packets until SIGTERM, then write it and the stats."""
    table: dict[str, int] = {}
    anomalies = {"update_of_unknown": 0, "delete_of_unknown": 0}
    ep = binif.Endpoint(listen, allow=allow)

    @ep.on(DialogCreated)
    async def created(msg: DialogCreated, source: binif.Address) -> None:
        table[msg.callid] = msg.state

    @ep.on(DialogUpdated)
    async def updated(msg: DialogUpdated, source: binif.Address) -> None:
        # As OpenSIPS does, an update for an unknown dialog creates it.
        if msg.callid not in table:
            anomalies["update_of_unknown"] += 1
        table[msg.callid] = msg.state

    @ep.on(DialogDeleted)
    async def deleted(msg: DialogDeleted, source: binif.Address) -> None:
        if table.pop(msg.callid, None) is None:
            anomalies["delete_of_unknown"] += 1

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with ep:
        print("ready", *ep.local_address[:2], flush=True)
        await stop.wait()
        while True:  # read what is still in the socket buffer before counting
            received = ep.stats.received
            await asyncio.sleep(0.05)
            if ep.stats.received == received:
                break
        await ep.join()
        stats = ep.stats.as_dict()
    _dump(out, {"table": table, "stats": stats, "anomalies": anomalies})


async def active(
    peer: tuple[str, int],
    bind: str,
    dialogs: int,
    window: int,
    rate: float,
    log: str,
    out: str | None,
) -> None:
    """Send the plan to ``peer`` at ``rate`` packets/s, logging each packet once sent."""
    ops = plan(dialogs, window)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    async with binif.Endpoint((bind, 0), allow=[]) as ep:
        start = time.perf_counter()
        for n, (op, i) in enumerate(ops):
            await ep.send(message(op, i).to_bytes(), peer)
            os.write(fd, f"{n} {op} {i}\n".encode())  # unbuffered: on disk before the next send
            ahead = start + (n + 1) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        stats = ep.stats.as_dict()
    os.close(fd)
    if out:
        _dump(out, {"stats": stats, "seconds": time.perf_counter() - start})


class _Relay(asyncio.DatagramProtocol):
    """Forwards datagrams, dropping ``loss`` of them and swapping ``reorder`` with the next."""

    def __init__(
        self, forward: Any, target: tuple[str, int], loss: float, reorder: float, seed: int
    ):
        self.forward = forward
        self.target = target
        self.loss = loss
        self.reorder = reorder
        self.rng = random.Random(seed)
        self.held: bytes | None = None
        self.counts = {"received": 0, "dropped": 0, "forwarded": 0, "reordered": 0}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.counts["received"] += 1
        if self.rng.random() < self.loss:
            self.counts["dropped"] += 1
            return
        if self.held is None and self.rng.random() < self.reorder:
            self.held = data  # goes out after the next one
            self.counts["reordered"] += 1
            asyncio.get_running_loop().call_later(0.05, self.flush)
            return
        self._send(data)
        self.flush()

    def flush(self) -> None:
        if self.held is not None:
            data, self.held = self.held, None
            self._send(data)

    def _send(self, data: bytes) -> None:
        self.forward.sendto(data, self.target)
        self.counts["forwarded"] += 1


async def relay(
    listen: tuple[str, int],
    via: str,
    target: tuple[str, int],
    loss: float,
    reorder: float,
    seed: int,
    out: str,
) -> None:
    """A lossy link of our own (the kernel here has no netem) until SIGTERM."""
    loop = asyncio.get_running_loop()
    forward, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(via, 0))
    protocol = _Relay(forward, target, loss, reorder, seed)
    inbound, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=listen)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", *listen, flush=True)
    await stop.wait()
    protocol.flush()
    inbound.close()
    forward.close()
    _dump(out, protocol.counts)


# --- hosts as network namespaces -------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def netns_available() -> str | None:
    """None if this process may create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "not root"
    probe = f"binif-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        return f"ip netns add refused: {str(detail).strip()}"
    _ip("netns", "del", probe)
    return None


class Hosts:
    """The namespaces of one scenario and the processes started in them."""

    def __init__(self, spaces: dict[str, str]) -> None:
        self.spaces = spaces
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, host: str, *args: str) -> subprocess.Popen[str]:
        """Run a role of this script on ``host`` (inside its namespace)."""
        command = ["ip", "netns", "exec", self.spaces[host], sys.executable, __file__, *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process


@contextmanager
def hosts(*links: tuple[str, str, str]) -> Iterator[Hosts]:
    """Namespaces for the named hosts, joined by veth pairs; all deleted on exit.

    Each link is ``(host_a, host_b, net)``: host_a gets ``net.1/24``, host_b
    ``net.2/24``. Processes started through the result are killed on exit.
    """
    token = uuid.uuid4().hex[:6]
    names = sorted({host for link in links for host in link[:2]})
    spaces = {host: f"binif-{token}-{host}" for host in names}
    made: list[str] = []
    started = Hosts(spaces)
    try:
        for host in names:
            _ip("netns", "add", spaces[host])
            made.append(spaces[host])
            _ip("-n", spaces[host], "link", "set", "lo", "up")
        for n, (a, b, net) in enumerate(links):
            end_a, end_b = f"bf{token}{n}a", f"bf{token}{n}b"
            _ip(
                "link",
                "add",
                end_a,
                "netns",
                spaces[a],
                "type",
                "veth",
                "peer",
                "name",
                end_b,
                "netns",
                spaces[b],
            )
            for host, end, address in ((a, end_a, f"{net}.1/24"), (b, end_b, f"{net}.2/24")):
                _ip("-n", spaces[host], "addr", "add", address, "dev", end)
                _ip("-n", spaces[host], "link", "set", end, "up")
        yield started
    finally:
        for process in started.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for space in made:
            subprocess.run(["ip", "netns", "del", space], capture_output=True)


def _wait_ready(process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        raise RuntimeError(f"process did not start (exit {process.poll()}): {line!r}")


def _stop(process: subprocess.Popen[str], timeout: float = 15.0) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return text.splitlines()


def _active_args(dialogs: int, window: int, rate: float, log: Path) -> list[str]:
    """The active's role and options: replicate to the first link's far end, log each send."""
    return [
        "active",
        "--peer",
        f"{NET_1}.2:{PORT}",
        "--bind",
        f"{NET_1}.1",
        "--dialogs",
        str(dialogs),
        "--window",
        str(window),
        "--rate",
        str(rate),
        "--log",
        str(log),
    ]


def kill_scenario(
    workdir: Path, dialogs: int = 3000, window: int = 400, rate: float = 4000, kill_at: int = 3500
) -> dict[str, Any]:
    """Kill the active after ``kill_at`` packets; return what each side knew."""
    ops = plan(dialogs, window)
    log, state = workdir / "active.log", workdir / "backup.json"
    with hosts(("active", "backup", NET_1)) as net:
        backup_process = net.start(
            "backup",
            "backup",
            "--listen",
            f"{NET_1}.2:{PORT}",
            "--allow",
            f"{NET_1}.0/24",
            "--out",
            str(state),
        )
        _wait_ready(backup_process)
        active_process = net.start("active", *_active_args(dialogs, window, rate, log))
        deadline = time.monotonic() + 60
        while len(_lines(log)) < kill_at and active_process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        active_process.send_signal(signal.SIGKILL)
        active_exit = active_process.wait(10)
        time.sleep(0.3)  # what was sent is on the wire already; let the backup read it
        backup_exit = _stop(backup_process)
    logged = [tuple(line.split()) for line in _lines(log)]
    result = json.loads(state.read_text())
    received = result["stats"]["received"]
    return {
        "namespaces": sorted(net.spaces.values()),
        "ops_planned": len(ops),
        "ops_logged": len(logged),
        "log_matches_plan": logged
        == [(str(n), op, str(i)) for n, (op, i) in enumerate(ops)][: len(logged)],
        "active_exit": active_exit,
        "backup_exit": backup_exit,
        "backup_stats": result["stats"],
        "backup_table": result["table"],
        "anomalies": result["anomalies"],
        "expected_table": replay(ops[:received]),
        "live_dialogs_at_kill": len(replay(ops[: len(logged)])),
    }


def lossy_scenario(
    workdir: Path,
    dialogs: int = 2000,
    window: int = 200,
    rate: float = 4000,
    loss: float = 0.05,
    reorder: float = 0.05,
    seed: int = 7,
) -> dict[str, Any]:
    """Replicate through a relay that drops and reorders; return every side's counters."""
    log = workdir / "lossy-active.log"
    outs = {role: workdir / f"lossy-{role}.json" for role in ("active", "relay", "backup")}
    links = (("active", "relay", NET_1), ("relay", "backup", NET_2))
    with hosts(*links) as net:
        backup_process = net.start(
            "backup",
            "backup",
            "--listen",
            f"{NET_2}.2:{PORT}",
            "--allow",
            f"{NET_2}.1/32",
            "--out",
            str(outs["backup"]),
        )
        relay_process = net.start(
            "relay",
            "relay",
            "--listen",
            f"{NET_1}.2:{PORT}",
            "--via",
            f"{NET_2}.1",
            "--forward",
            f"{NET_2}.2:{PORT}",
            "--loss",
            str(loss),
            "--reorder",
            str(reorder),
            "--seed",
            str(seed),
            "--out",
            str(outs["relay"]),
        )
        _wait_ready(backup_process)
        _wait_ready(relay_process)
        active_process = net.start(
            "active", *_active_args(dialogs, window, rate, log), "--out", str(outs["active"])
        )
        active_exit = active_process.wait(120)
        time.sleep(0.3)
        relay_exit = _stop(relay_process)
        time.sleep(0.1)
        backup_exit = _stop(backup_process)
    ops = plan(dialogs, window)
    active_out = json.loads(outs["active"].read_text())
    backup_out = json.loads(outs["backup"].read_text())
    expected = replay(ops)
    table = backup_out["table"]
    return {
        "namespaces": sorted(net.spaces.values()),
        "exits": {"active": active_exit, "relay": relay_exit, "backup": backup_exit},
        "ops": len(ops),
        "active_stats": active_out["stats"],
        "relay": json.loads(outs["relay"].read_text()),
        "backup_stats": backup_out["stats"],
        "anomalies": backup_out["anomalies"],
        "table_size": len(table),
        "expected_table_size": len(expected),
        "wrong_dialogs": sum(
            1 for key in set(table) | set(expected) if table.get(key) != expected.get(key)
        ),
    }


def demo() -> int:
    """Run both scenarios and print what each side reports."""
    why_not = netns_available()
    if why_not:
        print(f"needs network namespaces: {why_not} (run as root)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="binif-failover-") as tmp:
        kill = kill_scenario(Path(tmp))
        stats = kill["backup_stats"]
        exact = kill["backup_table"] == kill["expected_table"]
        print("1. active SIGKILLed mid-stream")
        print(f"   active sent (logged)      {kill['ops_logged']} of {kill['ops_planned']} packets")
        print(
            f"   backup received           {stats['received']}, handled {stats['handled']},"
            f" kernel drops {stats['kernel_drops']}"
        )
        print(f"   dialogs live at the kill  {kill['live_dialogs_at_kill']}")
        print(
            f"   backup table              {len(kill['backup_table'])} dialogs,"
            f" {'exactly' if exact else 'NOT'} those of the packets sent"
        )
        lossy = lossy_scenario(Path(tmp))
        sent = lossy["active_stats"]["packets_sent"]
        received = lossy["backup_stats"]["received"]
        print("2. lossy link (relay drops 5%, reorders 5%)")
        print(f"   active packets_sent       {sent}")
        print(f"   relay                     {lossy['relay']}")
        print(
            f"   backup received           {received} (lost {sent - received},"
            f" kernel drops {lossy['backup_stats']['kernel_drops']})"
        )
        print(f"   backup anomalies          {lossy['anomalies']}")
        wrong, expected = lossy["wrong_dialogs"], lossy["expected_table_size"]
        print(f"   dialogs wrong on backup   {wrong} (of {expected} expected)")
        print(f"   exits                     {lossy['exits']}")
        return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    """Command line: no arguments runs the demo; a role name runs that role."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role")
    b = roles.add_parser("backup")
    b.add_argument("--listen", type=_address, required=True)
    b.add_argument("--allow", action="append", default=[])
    b.add_argument("--out", required=True)
    a = roles.add_parser("active")
    a.add_argument("--peer", type=_address, required=True)
    a.add_argument("--bind", required=True)
    a.add_argument("--dialogs", type=int, default=3000)
    a.add_argument("--window", type=int, default=400)
    a.add_argument("--rate", type=float, default=4000)
    a.add_argument("--log", required=True)
    a.add_argument("--out")
    r = roles.add_parser("relay")
    r.add_argument("--listen", type=_address, required=True)
    r.add_argument("--via", required=True)
    r.add_argument("--forward", type=_address, required=True)
    r.add_argument("--loss", type=float, default=0.05)
    r.add_argument("--reorder", type=float, default=0.05)
    r.add_argument("--seed", type=int, default=7)
    r.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.role == "backup":
        binif.run(backup(args.listen, args.allow, args.out))
    elif args.role == "active":
        binif.run(
            active(args.peer, args.bind, args.dialogs, args.window, args.rate, args.log, args.out)
        )
    elif args.role == "relay":
        binif.run(
            relay(args.listen, args.via, args.forward, args.loss, args.reorder, args.seed, args.out)
        )
    else:
        return demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
