"""The Lua dissector: generated from the layouts, and run for real in tshark on the vectors."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from binif.opensips21 import OPENSIPS21, UsrlocContactUpdated, lookup
from binif.wireshark import DISSECTOR_PATH, generate_dissector

VECTORS = Path(__file__).parent / "vectors" / "opensips-2.1"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
ENTRIES = {entry["file"]: entry for entry in MANIFEST["files"]}
PORT = 5999
OTHER_PORT = 40001


def test_shipped_dissector_is_the_generated_one() -> None:
    assert DISSECTOR_PATH.read_text(encoding="utf-8") == generate_dissector(), (
        "binif/wireshark/binif.lua is stale: run `python -m binif wireshark-plugin --generate`"
    )


def test_generated_fields_follow_the_layouts() -> None:
    lua = generate_dissector()
    for cls in OPENSIPS21.values():
        for field in cls.FIELDS:
            assert f'"binif.{cls.MODULE}.{field.name}"' in lua
    assert '"binif.ul.expires_at"' in lua
    assert "local DEFAULT_PORT = 5062" in lua
    assert "local DEFAULT_PORT = 6000" in generate_dissector(port=6000)


# --- tshark ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is required in CI (Debian package tshark; .ci/run installs it)")
        pytest.skip("tshark is not installed (apt-get install tshark)")
    return path


def ipv4_udp(payload: bytes, src_port: int, dst_port: int) -> bytes:
    """An IPv4 + UDP datagram from 127.0.0.1 to 127.0.0.1 (UDP checksum 0: none)."""
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp


def write_pcap(path: Path, datagrams: list[tuple[bytes, int]]) -> None:
    """A classic pcap of raw IPv4 frames (link type 228), one per (payload, dst port)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228)]
    for number, (payload, port) in enumerate(datagrams):
        frame = ipv4_udp(payload, 40000, port)
        out.append(struct.pack("<IIII", 1_795_838_847 + number, 0, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


def flatten(tree: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Every field of a tshark JSON layer by filter name (first occurrence wins)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            flatten(value, out)
        else:
            out.setdefault(key, value)
    return out


def dissect(tshark: str, pcap: Path, *options: str) -> list[dict[str, Any]]:
    """Run tshark with the shipped dissector; return each frame's binif fields (or {})."""
    result = subprocess.run(
        [
            tshark,
            "-n",
            "-X",
            f"lua_script:{DISSECTOR_PATH}",
            *options,
            "-r",
            str(pcap),
            "-T",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Lua Error" not in result.stdout + result.stderr
    frames = json.loads(result.stdout)
    return [flatten(frame["_source"]["layers"].get("binif", {}), {}) for frame in frames]


def expected_value(field: dict[str, Any]) -> str:
    """A manifest value as tshark's JSON prints it."""
    if field.get("hex"):
        return ":".join(field["value"][i : i + 2] for i in range(0, len(field["value"]), 2))
    return str(field["value"])


@pytest.fixture(scope="module")
def frames(tshark: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    names = sorted(ENTRIES)
    empty_raw = UsrlocContactUpdated.with_defaults(domain="location", aor="dave").to_bytes()
    datagrams = [((VECTORS / name).read_bytes(), PORT) for name in names]
    datagrams += [(empty_raw, PORT), ((VECTORS / "dialog-deleted-1.bin").read_bytes(), OTHER_PORT)]
    pcap = tmp_path_factory.mktemp("pcap") / "vectors.pcap"
    write_pcap(pcap, datagrams)
    decoded = dissect(tshark, pcap, "-o", f"binif.udp_port:{PORT}", "-o", "binif.heuristic:FALSE")
    return dict(zip([*names, "empty-raw", "other-port"], decoded, strict=True))


def test_tshark_decodes_every_vector_field_by_name(frames: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, entry in ENTRIES.items():
        if not entry["crc_valid"] or "truncated_in" in entry or name == "crafted-bad-marker.bin":
            continue
        frame = frames[name]
        assert frame["binif.module"] == entry["module"], name
        assert frame["binif.command"] == str(entry["command"]), name
        assert frame["binif.crc.status"] == "good", name
        if lookup(entry["module"], entry["command"]) is None:
            assert "binif.message" not in frame and "binif.fields" in frame, name
            continue
        assert frame["binif.message"] == OPENSIPS21.name_of(
            OPENSIPS21[(entry["module"], entry["command"])]
        )
        for field in entry["fields"]:
            key = f"binif.{entry['module']}.{field['name']}"
            assert frame[key] == expected_value(field), (name, key)
        checked += 1
    assert checked == 19


def test_tshark_decodes_raw_c_integers(frames: dict[str, dict[str, Any]]) -> None:
    frame = frames["usrloc-contact-insert-1.bin"]
    assert frame["binif.ul.expires_at"] == "1795842469"
    assert frame["binif.ul.q_value"] == "-1"
    assert frame["binif.ul.last_modified_at"] == "1795838869"
    empty = frames["empty-raw"]
    assert empty["binif.ul.aor"] == "dave" and empty["binif.crc.status"] == "good"
    assert "binif.ul.expires_at" not in empty


def test_tshark_shows_bad_crc_as_bad(frames: dict[str, dict[str, Any]]) -> None:
    for name in (
        "crafted-dialog-created-bad-crc.bin",
        "crafted-dialog-created-truncated-140-full-crc.bin",
    ):
        entry = ENTRIES[name]
        frame = frames[name]
        assert frame["binif.crc.status"] == "bad", name
        assert frame["binif.crc"] == entry["crc_wire"]
        assert frame["binif.crc.computed"] != entry["crc_wire"]
    frame = frames["crafted-dialog-created-bad-crc.bin"]
    # The fields are still shown, as the manifest decoded them ignoring the CRC.
    assert frame["binif.dialog.callid"] == "crafted-badcrc@127.0.0.1"
    assert frame["binif.crc.computed"] == "0x9ecbf255"


def test_tshark_flags_the_field_a_truncated_packet_was_cut_in(
    frames: dict[str, dict[str, Any]],
) -> None:
    frame = frames["crafted-dialog-created-truncated-240-crc-ok.bin"]
    assert frame["binif.crc.status"] == "good"
    assert frame["binif.dialog.caller_contact"] == "sip:crafted-a@127.0.0.1:5180"
    assert "binif.dialog.callee_contact" not in frame
    assert "field 15 (callee_contact, str) at offset 223" in frame["_ws.expert.message"]


def test_tshark_port_preference_and_heuristic(
    tshark: str, frames: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    # Heuristic off: a packet on another port is not BIN.
    assert frames["other-port"] == {}
    pcap = tmp_path / "other.pcap"
    write_pcap(pcap, [((VECTORS / "dialog-deleted-1.bin").read_bytes(), OTHER_PORT)])
    (frame,) = dissect(tshark, pcap)  # defaults: port 5062, heuristic on
    assert frame["binif.message"] == "dialog.deleted"
    assert frame["binif.dialog.callid"] == "rig21-call-1@127.0.0.1"


def test_lua_crc_without_bit32(tmp_path: Path) -> None:
    """Wireshark 4.4+ runs Lua 5.4, which has no bit32: the native-operator path must agree."""
    interpreter = shutil.which("lua5.4") or shutil.which("lua5.3")
    if interpreter is None:
        pytest.skip("no Lua 5.3+ interpreter (optional: tshark's Lua is checked above)")
    source = DISSECTOR_PATH.read_text(encoding="utf-8")
    crc_code = source[source.index("local band, bxor, rshift") : source.index("-- Header and")]
    vector = VECTORS / "dialog-created-1.bin"
    script = tmp_path / "crc.lua"
    script.write_text(
        crc_code
        + f'local data = io.open("{vector}", "rb"):read("a"):sub(9)\n'
        + "local fake = { len = function(self) return #data end,"
        + " get_index = function(self, i) return data:byte(i + 1) end }\n"
        + 'print(string.format("0x%08x", opensips_crc(fake)))\n'
    )
    result = subprocess.run([interpreter, str(script)], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == ENTRIES["dialog-created-1.bin"]["crc_wire"], result.stderr
