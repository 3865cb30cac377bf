"""The command line, run as ``python -m binif`` in a subprocess like a user would."""

from __future__ import annotations

import json
import logging
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from binif import DATAGRAM, DATAGRAM_BIG_ENDIAN
from binif.cli import (
    SafeFormatter,
    analyse,
    build_packet,
    build_parser,
    main,
    terminal_safe,
    walk,
)
from binif.opensips21 import DialogDeleted
from binif.reader import PacketReader
from binif.wireshark import DISSECTOR_PATH, generate_dissector
from binif.writer import PacketWriter

VECTORS = Path(__file__).parent / "vectors" / "opensips-2.1"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
ENTRIES = {entry["file"]: entry for entry in MANIFEST["files"]}


def binif(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "binif", *args], capture_output=True, text=True, timeout=30
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``binif: ...`` line of a user error, which exits with status 1 exactly."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("binif: ")
    return lines[0]


# --- decode ---------------------------------------------------------------------------


def test_decode_prints_named_fields() -> None:
    result = binif("decode", str(VECTORS / "dialog-created-1.bin"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("dialog-created-1.bin: dialog/1 dialog.created, 282 bytes")
    assert re.search(r'^  callid +"rig21-call-1@127\.0\.0\.1"$', result.stdout, re.M)
    assert re.search(r"^  timeout +1795882047$", result.stdout, re.M)
    assert len(lines) == 1 + 25


def test_decode_json_matches_the_manifest() -> None:
    names = ["dialog-created-1.bin", "usrloc-contact-insert-1.bin", "usrloc-contact-delete-1.bin"]
    result = binif("decode", "--json", *(str(VECTORS / name) for name in names))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    for name, record in zip(names, records, strict=True):
        entry = ENTRIES[name]
        assert record["file"].endswith(name)
        assert (record["module"], record["command"]) == (entry["module"], entry["command"])
        assert record["fields"] == {field["name"]: field["value"] for field in entry["fields"]}
        assert "error" not in record and "walk" not in record
    assert records[1]["message"] == "ul.contact_inserted"
    assert records[1]["raw_ints"] == {
        "expires_at": 1795842469,
        "q_value": -1,
        "last_modified_at": 1795838869,
    }


def test_decode_walks_an_unknown_module() -> None:
    result = binif("decode", "--json", str(VECTORS / "crafted-unknown-module.bin"))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["module"] == "nosuchmod" and record["message"] is None
    assert record["walk"] == [{"offset": 25, "kind": "str", "hex": "78", "value": "x"}]
    text = binif("decode", str(VECTORS / "crafted-dialog-cmd9.bin"))
    assert "dialog/9, 27 bytes, no built-in layout; best-effort walk:" in text.stdout
    assert re.search(r'^  @22 +str\[1\] +"x" +78$', text.stdout, re.M)


def test_decode_malformed_fields_show_the_walk_and_fail() -> None:
    result = binif("decode", str(VECTORS / "crafted-dialog-created-truncated-240-crc-ok.bin"))
    line = one_error_line(result)
    assert "TruncatedField: field 15 (str) at byte offset 223" in line
    assert "does not fit its layout" in result.stdout
    assert re.search(r'^  @191 +str\[28\] +"sip:crafted-a@127\.0\.0\.1:5180"', result.stdout, re.M)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("crafted-dialog-created-bad-crc.bin", "BadChecksum: checksum in header is 0x9ecbf254"),
        ("crafted-bad-marker.bin", "BadMarker"),
        ("crafted-runt-12.bin", "PacketTooShort"),
    ],
)
def test_decode_bad_packet_is_one_line(name: str, error: str) -> None:
    result = binif("decode", str(VECTORS / name))
    assert error in one_error_line(result)
    assert result.stdout == ""


def test_decode_unreadable_file_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(binif("decode", str(tmp_path / "missing.bin")))
    assert line == f"binif: cannot read {tmp_path / 'missing.bin'}: No such file or directory"
    assert "Is a directory" in one_error_line(binif("decode", str(tmp_path)))


def test_walk_takes_binary_at_the_end_as_a_str() -> None:
    data = PacketWriter("x1", 1).push_str("hi").push_int(0).push_int(7).push_str(b"\0\1").to_bytes()
    kinds = [(item.kind, item.value) for item in walk(PacketReader.parse(data))]
    assert kinds == [("str", "hi"), ("zero", 0), ("int", 7), ("str", None)]


def test_analyse_without_a_subprocess() -> None:
    analysis = analyse((VECTORS / "dialog-deleted-1.bin").read_bytes())
    assert analysis.message == DialogDeleted("rig21-call-1@127.0.0.1", "uac6ulenw", "uaswdbht6")
    assert not analysis.malformed


# --- send -----------------------------------------------------------------------------


def build(*argv: str) -> bytes:
    return build_packet(build_parser().parse_args(["send", "--to", "127.0.0.1:1", *argv]))[0]


def test_send_builds_a_vector_byte_exact_from_fields() -> None:
    entry = ENTRIES["dialog-created-1.bin"]
    args = [
        f"s:{field['value']}" if field["type"] == "str" else f"i:{field['value']}"
        for field in entry["fields"]
    ]
    assert build("dialog", "1", *args) == (VECTORS / "dialog-created-1.bin").read_bytes()
    sets = [f"--set={field['name']}={field['value']}" for field in entry["fields"]]
    data = build("--message", "dialog.created", *sets)
    assert data == (VECTORS / "dialog-created-1.bin").read_bytes()


def test_send_field_kinds() -> None:
    expected = PacketWriter("m", 0x10).pack("sisss", "a b", -7, b"\x00\xff", None, "").to_bytes()
    assert build("m", "0x10", "s:a b", "i:-7", "x:00ff", "null", "s:") == expected
    raw = build("--message", "ul.contact_updated", "--set", "expires=a5610a6b00000000")
    assert PacketReader.parse(raw).module == "ul"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--to", "nowhere", "m", "1"], "bad --to address 'nowhere': expected HOST:PORT"),
        (["--to", "127.0.0.1:99999", "m", "1"], "bad --to address '127.0.0.1:99999'"),
        (["--to", "::1:5999", "m", "1"], "bad --to address '::1:5999'"),
        (["--to", "no-such-host.invalid:5999", "m", "1"], "cannot resolve 'no-such-host.invalid'"),
        (["--to", "127.0.0.1:0", "m", "1"], "port 0"),
        (["--to", "127.0.0.1:9", "m", "1", "q:1"], "bad field 'q:1': expected s:TEXT"),
        (["--to", "127.0.0.1:9", "m", "one"], "bad command 'one'"),
        (["--to", "127.0.0.1:9", "m", "1", "i:2147483648"], "IntOutOfRange"),
        (["--to", "127.0.0.1:9", "--message", "dialog.nope"], "known: dialog.created"),
        (["--to", "127.0.0.1:9", "--message", "dialog.deleted", "--set", "x=1"], "no field 'x'"),
        (["--to", "127.0.0.1:9", "--message", "dialog.created", "--set", "h_id=z"], "takes an int"),
        (["--to", "127.0.0.1:9", "--message", "dialog.deleted", "m", "1"], "give either"),
    ],
)
def test_send_errors_are_one_line(argv: list[str], message: str) -> None:
    assert message in one_error_line(binif("send", *argv))


def test_send_reaches_a_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        result = binif("send", "--to", f"127.0.0.1:{port}", "--message", "dialog.deleted",
                       "--set", "callid=c1", "--set", "to_tag=t")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"sent dialog/3 dialog.deleted, 37 bytes, to 127.0.0.1:{port}\n"
        data, _ = sock.recvfrom(65535)
    assert DialogDeleted.from_bytes(data) == DialogDeleted("c1", "", "t")


# --- listen ---------------------------------------------------------------------------


class Listener:
    """``binif listen`` in a subprocess, its stdout lines collected by a thread."""

    def __init__(self, *argv: str) -> None:
        self.last = "closed:" if "--stream" in argv else "drops:"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "binif", "listen", "--bind", "127.0.0.1:0", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None and self.proc.stdout is not None
        banner = self.proc.stderr.readline()
        found = re.search(r"listening on (?:TCP )?127\.0\.0\.1:(\d+) \((uvloop|asyncio)\)", banner)
        assert found, banner
        self.port = int(found.group(1))
        self.loop = found.group(2)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def take(self, count: int) -> list[str]:
        return [self.lines.get(timeout=10) for _ in range(count)]

    def stop(self) -> tuple[list[str], str]:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=10) == 0
        assert self.proc.stderr is not None
        rest = []
        while True:
            try:
                rest.append(self.lines.get(timeout=2))
            except queue.Empty:
                break
            if rest[-1].startswith((self.last, '{"stats"')):
                break
        return rest, self.proc.stderr.read()


def send_raw(port: int, *names: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            sock.sendto((VECTORS / name).read_bytes(), ("127.0.0.1", port))


def test_listen_json_prints_packets_and_stats_on_ctrl_c() -> None:
    listener = Listener("--json")
    try:
        assert listener.loop == "uvloop"
        send_raw(
            listener.port,
            "dialog-created-1.bin",
            "crafted-dialog-created-bad-crc.bin",
            "crafted-unknown-module.bin",
            "crafted-dialog-created-truncated-240-crc-ok.bin",
        )
        sent = binif("send", "--to", f"127.0.0.1:{listener.port}", "ul", "2", "s:location", "s:bo")
        assert sent.returncode == 0, sent.stderr
        records = [json.loads(line) for line in listener.take(4)]
    finally:
        rest, stderr = listener.stop()
    # Each module has its own queue: order holds within a module, not across modules.
    dialog = [record for record in records if record["module"] == "dialog"]
    assert len(dialog) == 2
    created, truncated = dialog
    (unknown,) = [record for record in records if record["module"] == "nosuchmod"]
    (deleted,) = [record for record in records if record["module"] == "ul"]
    assert created["message"] == "dialog.created"
    assert created["fields"]["callid"] == "rig21-call-1@127.0.0.1"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", created["source"])
    assert created["time"].endswith("+00:00")
    assert unknown["module"] == "nosuchmod" and unknown["walk"][0]["value"] == "x"
    assert truncated["error"].startswith("TruncatedField: field 15")
    assert deleted["message"] == "ul.record_deleted" and deleted["fields"]["aor"] == "bo"
    stats = json.loads(rest[-1])["stats"]
    assert stats["received"] == 5 and stats["handled"] == 3
    assert stats["drops"]["bad_checksum"] == 1 and stats["drops"]["undecodable"] == 1
    assert "Traceback" not in stderr
    assert "bad_checksum" in stderr  # the endpoint's drop log line


def test_listen_text_output_and_stats() -> None:
    listener = Listener()
    try:
        send_raw(listener.port, "dialog-deleted-1.bin", "crafted-runt-12.bin")
        lines = listener.take(4)
    finally:
        rest, stderr = listener.stop()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} 127\.0\.0\.1:\d+ dialog/3 dialog\.deleted, 74 bytes", lines[0]
    )
    assert re.fullmatch(r'  callid +"rig21-call-1@127\.0\.0\.1"', lines[1])
    assert rest[-2] == "stats: received 2, handled 1, dropped 1, handler errors 0"
    assert "too_short 1" in rest[-1] and "bad_checksum 0" in rest[-1]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("127.0.0.1:port", "bad --bind address '127.0.0.1:port'"),
        ("192.0.2.1:5999", "cannot listen on 192.0.2.1:5999: "),
    ],
)
def test_listen_errors_are_one_line(bind: str, message: str) -> None:
    assert message in one_error_line(binif("listen", "--bind", bind))


def test_listen_port_in_use_is_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        line = one_error_line(binif("listen", "--bind", f"127.0.0.1:{port}"))
    assert line == f"binif: cannot listen on 127.0.0.1:{port}: Address already in use"


# --- wireshark-plugin -----------------------------------------------------------------


def test_wireshark_plugin_path_print_and_write(tmp_path: Path) -> None:
    path = binif("wireshark-plugin", "--path")
    assert path.returncode == 0 and Path(path.stdout.strip()) == DISSECTOR_PATH
    assert DISSECTOR_PATH.is_file()
    source = binif("wireshark-plugin")
    assert source.stdout == DISSECTOR_PATH.read_text(encoding="utf-8")
    written = binif("wireshark-plugin", "--write", str(tmp_path))
    assert written.stdout == f"wrote {tmp_path / 'binif.lua'}\n"
    assert (tmp_path / "binif.lua").read_text(encoding="utf-8") == source.stdout
    line = one_error_line(binif("wireshark-plugin", "--write", str(tmp_path / "no" / "x.lua")))
    assert "No such file or directory" in line


def test_big_endian_packets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = build("--big-endian", "--message", "dialog.deleted", "--set", "callid=be")
    assert analyse(data, wire=DATAGRAM_BIG_ENDIAN).message == DialogDeleted("be", "", "")
    assert analyse(data).error is not None  # read as little-endian: the CRC is wrong
    (tmp_path / "be.bin").write_bytes(data)
    assert main(["decode", "--big-endian", "--json", str(tmp_path / "be.bin")]) == 0
    assert json.loads(capsys.readouterr().out)["fields"]["callid"] == "be"


# --- the stream profile and captures -------------------------------------------------------

V40 = Path(__file__).parent / "vectors" / "opensips-4.0"
VUL = Path(__file__).parent / "vectors" / "opensips-4.0-usrloc"
MANIFEST40: dict[str, Any] = json.loads((V40 / "manifest.json").read_text())
ENTRIES40 = {entry["file"]: entry for entry in MANIFEST40["packets"]}


def manifest_fields(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """A manifest packet's fields and its trailer, as ``decode --json`` prints them."""
    fields = {f["name"]: f["value"] for f in entry["fields"]}
    trailer = {
        name.removeprefix("trailer."): fields.pop(name)
        for name in list(fields)
        if name.startswith("trailer.")
    }
    return fields, trailer


def test_decode_stream_file_of_packets_back_to_back(tmp_path: Path) -> None:
    names = [name for name in ENTRIES40 if name.startswith("dialog-")]
    stream = tmp_path / "dialogs.bin"
    stream.write_bytes(b"".join((V40 / name).read_bytes() for name in names))
    result = binif("decode", "--stream", "--json", str(stream))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(names) == 13
    offset = 0
    for index, (name, record) in enumerate(zip(names, records, strict=True), 1):
        fields, trailer = manifest_fields(ENTRIES40[name])
        assert record["fields"] == fields, name
        assert record["trailer"] == trailer, name
        assert (record["index"], record["offset"], record["version"]) == (index, offset, 4)
        offset += ENTRIES40[name]["total_length"]
    text = binif("decode", "--stream", str(stream)).stdout.splitlines()
    size = ENTRIES40[names[0]]["total_length"]
    assert text[0] == f"{stream}#1 @0: dialog-dlg-repl/1 v4 dialog.created, {size} bytes"
    assert "  trailer: cluster 1, node 1 to 2" in text


def test_decode_stream_names_clusterer_packets_and_reports_a_cut(tmp_path: Path) -> None:
    ping = (V40 / "clusterer-ping-1.bin").read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(ping + ping[:20])
    result = binif("decode", "--stream", str(cut))
    assert result.stdout.startswith(
        f"{cut}#1 @0: clusterer-internal/0 v1 clusterer.ping, 46 bytes\n"
    )
    line = one_error_line(result)
    assert line == f"binif: {cut} @46: the file ends 20 bytes into a packet"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(ping + b"GARBAGE!" * 2)
    line = one_error_line(binif("decode", "--stream", str(garbage)))
    assert line.startswith(f"binif: {garbage} @46: BadMarker")


def test_decode_pcap_of_opensips40_finds_every_packet() -> None:
    result = binif("decode", "--pcap", "--json", str(V40 / "capture.pcap"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"binif: {V40 / 'capture.pcap'}: 113 BIN packets in 253 frames\n"
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 113
    by_frame = {record["frame"]: record for record in records}
    for entry in MANIFEST40["packets"]:
        if entry["scenario"] != "baseline":
            continue
        record = by_frame[entry["frame"]]
        assert (record["module"], record["command"]) == (entry["capability"], entry["packet_type"])
        assert record["transport"] == "tcp" and record["message"] is not None, entry["file"]
        assert record["source"].endswith(f":{entry['tcp_src_port']}")
        assert record["destination"] == f"127.0.0.1:{entry['tcp_dst_port']}"
        if entry["capability"] == "dialog-dlg-repl":
            assert (record["fields"], record["trailer"]) == manifest_fields(entry), entry["file"]
    names = {record["message"] for record in records}
    assert {"clusterer.ping", "clusterer.cap_update", "dialog.value", "clusterer.sync"} <= names


def test_decode_pcap_names_usrloc_and_profile_packets() -> None:
    result = binif(
        "decode", "--pcap", str(VUL / "capture.pcap"), str(VUL / "capture-dialog-profiles.pcap")
    )
    assert result.returncode == 0, result.stderr
    heads = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    for name, count in [
        ("usrloc.aor_inserted", 4),
        ("usrloc.contact_inserted", 4),
        ("usrloc.contact_updated", 3),
        ("usrloc.contact_deleted", 2),
        ("usrloc.aor_deleted", 2),
        ("dialog.profile_counters", 98),
        ("dialog.created", 1),
    ]:
        assert (
            sum(line.split(" v")[-1].split(",")[0].endswith(f" {name}") for line in heads) == count
        ), name
    assert re.search(r'^  aor +"carol@example\.com"$', result.stdout, re.M)


def test_decode_pcap_of_datagrams_and_errors(tmp_path: Path) -> None:
    from pcaps import pcap_bytes, udp_frame

    bad = (VECTORS / "crafted-dialog-created-bad-crc.bin").read_bytes()
    frames = [
        udp_frame(("127.0.0.1", 5061), ("127.0.0.1", 5062), (VECTORS / name).read_bytes())
        for name in ("dialog-created-1.bin", "usrloc-contact-insert-1.bin")
    ]
    frames.append(udp_frame(("::1", 5061), ("::1", 5062), bad))
    pcap = tmp_path / "udp.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    result = binif("decode", "--pcap", str(pcap))
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == f"{pcap} frame 1 udp 127.0.0.1:5061 > 127.0.0.1:5062: dialog/1 dialog.created, 282 bytes"
    )
    assert any(line.endswith("ul/3 ul.contact_inserted, 191 bytes") for line in lines)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"binif: {pcap} frame 3 udp [::1]:5061 > [::1]:5062: BadChecksum: checksum in header is"
        " 0x9ecbf254 but the body's is 0x9ecbf255",
        f"binif: {pcap}: 2 BIN packets in 3 frames",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pcap", "--stream", "x"], "not allowed with argument"),
        (["--pcap", "--big-endian", "x"], "--pcap reads each packet by its transport"),
    ],
)
def test_decode_mode_errors(argv: list[str], message: str) -> None:
    result = binif("decode", *argv)
    assert result.returncode in (1, 2) and message in result.stderr


def test_decode_pcap_of_something_else_is_one_line() -> None:
    name = str(VECTORS / "dialog-created-1.bin")
    line = one_error_line(binif("decode", "--pcap", name))
    assert line.startswith("binif: BadCapture: not a pcap or pcapng file")


def test_send_stream_builds_a_4_0_vector_byte_exact() -> None:
    vector = (V40 / "dialog-delete-1.bin").read_bytes()
    fields, trailer = manifest_fields(ENTRIES40["dialog-delete-1.bin"])
    sets = [f"--set={name}={value}" for name, value in fields.items()]
    ids = ",".join(str(trailer[k]) for k in ("cluster_id", "src_node_id", "dst_node_id"))
    assert build("--stream", "--message", "dialog.deleted", *sets, "--trailer", ids) == vector
    raw = [f"s:{fields['callid']}", f"s:{fields['caller_tag']}", f"s:{fields['callee_tag']}"]
    raw.append(f"i:{fields['h_id']}")
    built = build("--stream", "--version", "4", "dialog-dlg-repl", "3", *raw, "--trailer", ids)
    assert built == vector


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trailer", "1,2,3", "m", "1"], "--trailer and --version are for the stream profile"),
        (["--stream", "m", "1"], "a stream packet needs --version N"),
        (["--stream", "--version", "1", "--trailer", "1,2", "m", "1"], "bad --trailer '1,2'"),
        (["--stream", "--message", "dialog.nope"], "known: dialog.created"),
        (["--stream", "--message", "dialog.deleted", "--version", "3"], "a --message has its own"),
    ],
)
def test_send_stream_errors_are_one_line(argv: list[str], message: str) -> None:
    assert message in one_error_line(binif("send", "--to", "127.0.0.1:9", *argv))


def test_listen_and_send_over_tcp() -> None:
    listener = Listener("--stream")
    try:
        to = f"127.0.0.1:{listener.port}"
        sent = binif("send", "--stream", "--to", to, "--message", "dialog.deleted",
                     "--set", "callid=c-9", "--set", "h_id=7", "--trailer", "1,3,1")  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == f"sent dialog-dlg-repl/3 dialog.deleted, 56 bytes, over TCP to {to}\n"
        lines = listener.take(6)
    finally:
        rest, stderr = listener.stop()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} 127\.0\.0\.1:\d+ dialog-dlg-repl/3 v4 dialog\.deleted, 56 bytes",
        lines[0],
    )
    assert lines[1] == '  callid      "c-9"' and lines[4] == "  h_id        7"
    assert lines[5] == "  trailer: cluster 1, node 3 to 1"
    assert rest[0] == "stats: received 1, handled 1, dropped 0, handler errors 0"
    assert rest[2].startswith("connections: accepted 1, open 0, bytes received 56")
    assert "Traceback" not in stderr


def test_send_stream_to_nobody_is_peer_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = binif("send", "--stream", "--to", f"127.0.0.1:{port}", "--version", "1", "m", "1")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("binif: PeerUnreachable: no connection to")


def test_decode_clusterer_packets_and_sync_items(tmp_path: Path) -> None:
    names = ["clusterer-ping-1.bin", "clusterer-sync-end-1.bin", "join-clusterer-sync-1.bin"]
    stream = tmp_path / "clusterer.bin"
    stream.write_bytes(b"".join((V40 / name).read_bytes() for name in names))
    stream.write_bytes(stream.read_bytes() + (VUL / "ul-sync-1.bin").read_bytes())
    result = binif("decode", "--stream", "--json", str(stream))
    assert result.returncode == 0, result.stderr
    ping, sync_end, dialog_sync, usrloc_sync = map(json.loads, result.stdout.splitlines())
    assert ping["message"] == "clusterer.ping" and "trailer" not in ping
    assert ping["fields"] == {"cluster_id": 1, "src_node_id": 2, "req_node_list": True}
    assert sync_end["fields"] == {"capability": "dialog-dlg-repl", "chunks": 0}
    assert sync_end["trailer"] == {"cluster_id": 1, "src_node_id": 1, "dst_node_id": 2}
    (item,) = dialog_sync["items"]
    assert item["message"] == "dialog.created"
    assert item["fields"]["callid"] == "inject-1@thirdparty"
    # The usrloc SYNC: 4 AoRs and 5 contacts, the same as the inserts sent before.
    items = usrloc_sync["items"]
    assert [i["message"] for i in items].count("usrloc.contact_inserted") == 5
    assert [i["message"] for i in items].count("usrloc.aor_inserted") == 4
    contacts = {i["fields"]["contact"]: i for i in items if "contact" in i["fields"]}
    carol = contacts["sip:carol@10.0.0.7:5080"]
    assert carol["fields"]["cflags"] == "NAT" and carol["raw_ints"]["q_value"] == -1
    text = binif("decode", "--stream", str(stream)).stdout
    assert re.search(
        r"^  item 0: dialog\.created\n    callid +\"inject-1@thirdparty\"$", text, re.M
    )


def test_decode_a_clusterer_packet_that_does_not_fit_is_walked(tmp_path: Path) -> None:
    ping = bytearray((V40 / "clusterer-ping-1.bin").read_bytes() + b"\x07\x00\x00\x00")
    ping[4:8] = len(ping).to_bytes(4, "little")
    bad = tmp_path / "ping.bin"
    bad.write_bytes(bytes(ping))
    result = binif("decode", "--stream", str(bad))
    assert "clusterer.ping, 50 bytes: does not fit its layout:" in result.stdout
    assert "@46    int      7" in result.stdout
    assert "TrailingBytes" in one_error_line(result)


# --- what a new user runs into ----------------------------------------------------------


def test_send_the_os_refuses_exits_1_with_one_line() -> None:
    result = binif("send", "--to", "127.255.255.255:5999", "dialog", "3", "s:c", "s:f", "s:t")
    line = one_error_line(result)
    assert line == "binif: send to 127.255.255.255:5999 failed: Permission denied"
    assert result.stdout == ""  # no "sent ..." after it


def test_decode_json_reports_a_missing_file_on_stdout_too(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.bin")
    result = binif("decode", "--json", missing, str(VECTORS / "dialog-deleted-1.bin"))
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    error = f"cannot read {missing}: No such file or directory"
    assert records[0] == {"file": missing, "error": error}
    assert records[1]["message"] == "dialog.deleted"
    assert result.stderr == f"binif: {error}\n"


def test_a_non_utf8_argument_names_the_byte_typed() -> None:
    argv = [sys.executable, "-m", "binif", "send", "--to", "127.0.0.1:9", "m", "1"]
    for extra, what in [([b"s:caf\xff"], "field"), ([], "module name")]:
        args = [arg.encode() for arg in argv]
        if extra:
            args += extra
        else:
            args[-2] = b"m\xfe"
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        line = one_error_line(result)
        byte = "0xff" if extra else "0xfe"
        assert f"{what} b" in line and f"is not UTF-8: byte {byte} at character" in line
        assert "udc" not in line


def packet_with_module(module: bytes) -> bytes:
    """A valid packet whose module name is ``module`` (any bytes, as the network may send)."""
    good = PacketWriter("x" * len(module), 7).push_str("payload\x1b[2J").to_bytes()
    return DATAGRAM.frame(good[8:].replace(b"x" * len(module), module, 1))


HOSTILE = b"x\x1b[31m\xc2\x9b\xe2\x80\xae"  # ESC [31m, C1 CSI, a right-to-left override


def test_wire_strings_are_escaped_in_text_and_json_output(tmp_path: Path) -> None:
    path = tmp_path / "hostile.bin"
    path.write_bytes(packet_with_module(HOSTILE))
    for argv in (["decode", str(path)], ["decode", "--json", str(path)]):
        result = binif(*argv)
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x9b" not in result.stdout
        assert "\u202e" not in result.stdout
        assert "x\\u001b[31m\\u009b\\u202e/7" in result.stdout or "--json" in argv
    record = json.loads(binif("decode", "--json", str(path)).stdout)
    assert record["module"] == "x\x1b[31m\x9b\u202e"  # the JSON still says exactly what came
    callid = "c\x9b\x1b]0;owned\x07\u2028"
    path.write_bytes(DialogDeleted(callid, "f", "t").to_bytes())
    text = binif("decode", str(path)).stdout
    assert text.splitlines()[1] == '  callid    "c\\u009b\\u001b]0;owned\\u0007\\u2028"'
    assert json.loads(binif("decode", "--json", str(path)).stdout)["fields"]["callid"] == callid


def test_wire_strings_are_escaped_in_listen_output_and_logs() -> None:
    listener = Listener()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            hostile = packet_with_module(HOSTILE)
            sock.sendto(hostile, ("127.0.0.1", listener.port))
            sock.sendto(hostile[:8] + b"\x00" + hostile[9:], ("127.0.0.1", listener.port))
        lines = listener.take(2)
    finally:
        rest, stderr = listener.stop()
    output = "\n".join([*lines, *rest]) + stderr
    assert "x\\u001b[31m\\u009b\\u202e/7" in lines[0]
    assert "bad_checksum" in stderr  # the drop log line is there, escaped
    assert not any(char in output for char in "\x1b\x9b\u202e")


def test_a_long_str_field_is_cut_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "long.bin"
    path.write_bytes(DialogDeleted("c" * 65000, "f", "t").to_bytes())
    result = binif("decode", str(path))
    assert result.returncode == 0, result.stderr
    callid = result.stdout.splitlines()[1]
    assert callid == f'  callid    "{"c" * 200}"... (64,800 more characters)'
    full = json.loads(binif("decode", "--json", str(path)).stdout)
    assert full["fields"]["callid"] == "c" * 65000  # JSON keeps everything


def test_wireshark_plugin_generate_writes_where_it_is_told(tmp_path: Path) -> None:
    shipped = DISSECTOR_PATH.read_text(encoding="utf-8")
    stamp = DISSECTOR_PATH.stat().st_mtime_ns
    printed = binif("wireshark-plugin", "--generate")
    assert printed.returncode == 0 and printed.stdout == generate_dissector()
    written = binif("wireshark-plugin", "--generate", "--write", str(tmp_path / "fresh.lua"))
    assert written.stdout == f"wrote {tmp_path / 'fresh.lua'}\n"
    assert (tmp_path / "fresh.lua").read_text(encoding="utf-8") == generate_dissector()
    assert DISSECTOR_PATH.read_text(encoding="utf-8") == shipped  # the package is untouched
    assert DISSECTOR_PATH.stat().st_mtime_ns == stamp
    line = one_error_line(binif("wireshark-plugin", "--path", "--generate"))
    assert "--path prints where the shipped file is" in line


def test_terminal_safe_escapes_what_a_terminal_acts_on() -> None:
    assert terminal_safe('plain "text" é 中 ✓') == 'plain "text" é 中 ✓'
    assert terminal_safe("\x1b[2J\x9b\x07\t\u2028\u202e\U000e0001") == (
        "\\u001b[2J\\u009b\\u0007\\u0009\\u2028\\u202e\\udb40\\udc01"
    )
    line = json.dumps({"module": "x\x9b\u202e\U000e0001"}, ensure_ascii=False)
    assert json.loads(terminal_safe(line)) == {"module": "x\x9b\u202e\U000e0001"}  # still JSON
    record = logging.LogRecord("binif", logging.WARNING, "", 0, "module %s", ("x\x1b[31m",), None)
    assert SafeFormatter("binif: %(message)s").format(record) == "binif: module x\\u001b[31m"
