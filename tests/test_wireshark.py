"""The Lua dissector: generated from the layouts, and run for real in tshark on the vectors."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pcaps import TcpFlow, pcap_bytes, split, udp_frame

from binif.opensips21 import OPENSIPS21, UsrlocContactUpdated, lookup
from binif.opensips40_usrloc import ContactDeleted, ContactInserted
from binif.wireshark import DISSECTOR_PATH, generate_dissector, stream_packets

VECTORS = Path(__file__).parent / "vectors" / "opensips-2.1"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
ENTRIES = {entry["file"]: entry for entry in MANIFEST["files"]}
PORT = 5999
OTHER_PORT = 40001


def test_shipped_dissector_is_the_generated_one() -> None:
    assert DISSECTOR_PATH.read_text(encoding="utf-8") == generate_dissector(), (
        "binif/wireshark/binif.lua is stale: run"
        " `python -m binif wireshark-plugin --generate --write binif/wireshark/binif.lua`"
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


def run_tshark(tshark: str, pcap: Path, *options: str) -> list[dict[str, Any]]:
    """Run tshark with the shipped dissector; return its JSON frames (duplicate keys kept
    as lists)."""
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
            "--no-duplicate-keys",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Lua Error" not in result.stdout + result.stderr
    frames: list[dict[str, Any]] = json.loads(result.stdout)
    return frames


def dissect(tshark: str, pcap: Path, *options: str) -> list[dict[str, Any]]:
    """Each frame's binif fields (or {})."""
    frames = run_tshark(tshark, pcap, *options)
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
    """Wireshark 4.4+ runs Lua 5.4, which has no bit32: the native-operator path must agree.

    Debian's tshark runs Lua 5.2 (the bit32 path), so this is the only run of that path.
    """
    interpreter = shutil.which("lua5.4") or shutil.which("lua5.3")
    if interpreter is None:
        if os.environ.get("CI"):
            pytest.fail("a Lua 5.3+ interpreter is required in CI (Debian package lua5.4)")
        pytest.skip("no Lua 5.3+ interpreter (apt-get install lua5.4)")
    version = subprocess.run([interpreter, "-v"], capture_output=True, text=True, timeout=30)
    assert re.search(r"Lua 5\.[34]", version.stdout + version.stderr), version
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


# --- the stream profile over TCP ---------------------------------------------------

VECTORS40 = Path(__file__).parent / "vectors" / "opensips-4.0"
VECTORS_UL = Path(__file__).parent / "vectors" / "opensips-4.0-usrloc"
MANIFEST40: dict[str, Any] = json.loads((VECTORS40 / "manifest.json").read_text())
MANIFEST_UL: dict[str, Any] = json.loads((VECTORS_UL / "manifest.json").read_text())
# The manifests name the count of a SYNC_END two ways; the dissector calls it sync_chunks.
ALIASES = {"no_sync_chunks": "sync_chunks", "sync_chunks_sent": "sync_chunks"}
PACKETS = stream_packets()


def stream_items(tshark: str, pcap: Path, *options: str) -> list[dict[str, list[str]]]:
    """Every binif item tshark shows, in order, as field name -> values in tree order."""

    def collect(tree: dict[str, Any], out: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, value in tree.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    collect(item, out)
                else:
                    out.setdefault(key, []).append(item)
        return out

    items = []
    for frame in run_tshark(tshark, pcap, *options):
        layers = frame["_source"]["layers"]
        port = layers.get("tcp", {}).get("tcp.dstport")
        layer = layers.get("binif", [])
        for item in layer if isinstance(layer, list) else [layer]:
            items.append(collect(item, {"tcp.dstport": [port]}))
    return items


def expected_fields(entry: dict[str, Any]) -> dict[str, list[str]]:
    """A manifest packet's fields as the dissector names them, values as tshark prints
    them (those of repeated groups in order)."""
    capability = entry["capability"]
    chunk_capability = next(
        (f["value"] for f in entry["fields"] if f["name"] == "capability"), capability
    )
    out: dict[str, list[str]] = {}
    for field in entry["fields"]:
        name = field["name"]
        base = re.sub(r"\[\d+\]$", "", re.sub(r"^(\w+\[\d+\]\.)+", "", name))
        base = ALIASES.get(base, base)
        if name.startswith("trailer."):
            key = f"binif.{name}"
        elif name.startswith("chunk["):
            chunk_keys = {"size": "binif.sync.size", "start_marker": "binif.sync.marker"}
            key = chunk_keys.get(base, f"binif.{chunk_capability}.{base}")
        else:
            key = f"binif.{capability}.{base}"
        if base == "cflags":  # an int up to usrloc v3, text since: named with its kind
            key += ".int" if field["type"] == "int" else ".text"
        out.setdefault(key, []).append(expected_value(field))
    return out


def stream_name(entry: dict[str, Any]) -> str:
    return PACKETS[(entry["capability"], entry["packet_type"])].name


def assert_every_vector_found(
    items: list[dict[str, list[str]]], entries: list[dict[str, Any]]
) -> None:
    for entry in entries:
        expected = expected_fields(entry)
        candidates = [item for item in items if item.get("binif.message") == [stream_name(entry)]]
        assert candidates, entry["file"]
        assert any(
            all(item.get(key) == values for key, values in expected.items()) for item in candidates
        ), (entry["file"], expected, candidates[:2])


def message_counts(items: list[dict[str, list[str]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        for name in item.get("binif.message", []):
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_tshark_names_every_packet_of_the_opensips40_capture(tshark: str) -> None:
    items = stream_items(tshark, VECTORS40 / "capture.pcap")
    entries = [e for e in MANIFEST40["packets"] if e["scenario"] == "baseline"]
    assert_every_vector_found(items, entries)
    # Every BIN packet of the capture, by type, as many as the manifest counted.
    kinds = {}
    for entry in MANIFEST40["packets"]:
        kinds[re.sub(r"^join-|-\d+\.bin$", "", entry["file"])] = stream_name(entry)
    seen = MANIFEST40["packets_seen_in_captures"]["baseline"]
    expected = {kinds[key]: count for key, count in seen.items()}
    assert message_counts(items) == expected
    assert sum(expected.values()) == 113
    assert not any("_ws.expert.message" in item for item in items)  # nothing malformed


def test_tshark_decodes_the_join_vectors(tshark: str, tmp_path: Path) -> None:
    """The join scenario has no capture: its packets go on one connection of their own."""
    entries = [e for e in MANIFEST40["packets"] if e["scenario"] == "thirdparty-join"]
    client = TcpFlow(("127.0.0.1", 41000), ("127.0.0.1", 5555))
    data = b"".join((VECTORS40 / e["file"]).read_bytes() for e in entries)
    pcap = tmp_path / "join.pcap"
    pcap.write_bytes(pcap_bytes([client.syn(), client.send(data)]))
    items = stream_items(tshark, pcap)
    assert [item["binif.message"] for item in items] == [[stream_name(e)] for e in entries]
    assert_every_vector_found(items, entries)


def test_tshark_names_usrloc_and_profile_packets(tshark: str) -> None:
    entries = MANIFEST_UL["packets"]
    items = stream_items(tshark, VECTORS_UL / "capture.pcap")
    ul = [e for e in entries if e["scenario"] == "usrloc-full-sharing"]
    assert_every_vector_found(items, ul)
    # Every usrloc packet of the capture is a vector (held-out frames were cut out).
    usrloc = [e for e in ul if e["capability"] == "usrloc-contact-repl"]
    counts = message_counts(i for i in items if i["binif.capability"] == ["usrloc-contact-repl"])
    assert counts == {
        name: sum(stream_name(e) == name for e in usrloc) for name in map(stream_name, usrloc)
    }
    assert sum(counts.values()) == 15
    (sync,) = [i for i in items if i["binif.message"] == ["clusterer.sync"]]
    assert len(sync["binif.sync.size"]) == 9
    assert sorted(sync["binif.usrloc-contact-repl.is_contact"]) == ["0"] * 4 + ["1"] * 5
    assert len(sync["binif.usrloc-contact-repl.expires_at"]) == 5

    profiles = [e for e in entries if e["scenario"] == "dialog-profiles"]
    items = stream_items(tshark, VECTORS_UL / "capture-dialog-profiles.pcap")
    assert_every_vector_found(items, profiles)
    copies = sum(e["identical_copies_in_capture"] for e in profiles)
    assert message_counts(items)["dialog.profile_counters"] == copies == 98


def all_vectors() -> list[tuple[str, bytes]]:
    entries = MANIFEST40["packets"] + MANIFEST_UL["packets"]
    folder = {id(e): VECTORS40 if e in MANIFEST40["packets"] else VECTORS_UL for e in entries}
    return [(stream_name(e), (folder[id(e)] / e["file"]).read_bytes()) for e in entries]


def test_tshark_reassembles_packets_split_across_segments(tshark: str, tmp_path: Path) -> None:
    """All 102 vectors on one connection, cut into 1 to 1000-byte segments: packets split
    over many segments, and several packets in one segment."""
    vectors = all_vectors()
    stream = b"".join(data for _, data in vectors)
    client = TcpFlow(("127.0.0.1", 41000), ("127.0.0.1", 5555))
    # Found by the heuristic, which needs a whole header (8 bytes) in the connection's first
    # segment: OpenSIPS writes whole packets.
    other = TcpFlow(("::1", 41001), ("::1", 5556))
    frames = [client.syn(), other.syn()]
    pieces = split(stream, [1, 2, 3, 5, 7, 11, 64, 300, 1000, 3, 9])
    other_pieces = split(stream, [20, 1, 2, 3, 5, 7, 11, 64, 300, 1000, 3, 9])
    for number in range(max(len(pieces), len(other_pieces))):
        for flow, part in ((client, pieces), (other, other_pieces)):
            if number < len(part):
                frames.append(flow.send(part[number]))
    pcap = tmp_path / "split.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    items = stream_items(tshark, pcap)
    names = [name for name, _ in vectors]
    assert min(map(len, pieces)) == 1 and max(piece.count(b"P4CK") for piece in pieces) >= 3
    for port in ("5555", "5556"):
        found = [item["binif.message"][0] for item in items if item["tcp.dstport"] == [port]]
        assert found == names, port
    assert not any("_ws.expert.message" in item for item in items)

    # Heuristic off: only the preference's port; set it to the other connection's.
    items = stream_items(tshark, pcap, "-o", "binif.heuristic:FALSE")
    assert [item["binif.message"][0] for item in items] == names
    items = stream_items(tshark, pcap, "-o", "binif.heuristic:FALSE", "-o", "binif.tcp_port:5556")
    assert [item["binif.message"][0] for item in items] == names


def test_tshark_flags_what_opensips_would_close_the_connection_for(
    tshark: str, tmp_path: Path
) -> None:
    good = (VECTORS40 / "dialog-delete-1.bin").read_bytes()
    oversized = b"P4CK" + struct.pack("<I", 70000) + b"\x04\x00" + b"\x00" * 20
    frames = []
    for port, junk in ((41000, b"GARBAGE!" * 4), (41001, oversized)):
        client = TcpFlow(("127.0.0.1", port), ("127.0.0.1", 5555))
        frames += [client.syn(), client.send(good + junk)]
    pcap = tmp_path / "bad.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    items = stream_items(tshark, pcap)
    assert [item.get("binif.message") for item in items] == [["dialog.deleted"], None] * 2
    assert items[1]["_ws.expert.message"] == [
        "Invalid packet marker: OpenSIPS closes the connection"
    ]
    assert items[3]["_ws.expert.message"] == [
        "BIN packet size 70000 outside 17..65515: OpenSIPS closes the connection"
    ]


def with_trailer(packet: bytes, cluster: int = 1, src: int = 1, dst: int = 2) -> bytes:
    """A stream packet with the clusterer trailer appended and its total length fixed."""
    data = bytearray(packet + struct.pack("<iii", cluster, src, dst))
    data[4:8] = struct.pack("<I", len(data))
    return bytes(data)


def test_tshark_reads_usrloc_v3_and_a_contact_match_list(tshark: str, tmp_path: Path) -> None:
    """No OpenSIPS 3.4 capture ships: the packets are built by binif.opensips40_usrloc."""
    v3 = ContactInserted.build(
        aor="zed@example.com",
        contact="sip:zed@10.0.0.9",
        contact_id=7,
        expires_at=1795903600,
        cflags=4,
        version=3,
    )
    matched = ContactDeleted(
        domain="location",
        aor="zed@example.com",
        contact="sip:zed@10.0.0.9",
        callid="c-1",
        cseq=3,
        cmatch_mode=2,
        cmatch_params=("alias", "ob"),
    )
    client = TcpFlow(("127.0.0.1", 41000), ("127.0.0.1", 5555))
    data = b"".join(with_trailer(m.to_bytes()) for m in (v3, matched))
    pcap = tmp_path / "v3.pcap"
    pcap.write_bytes(pcap_bytes([client.syn(), client.send(data)]))
    first, second = stream_items(tshark, pcap)
    assert first["binif.version"] == ["3"]
    assert first["binif.usrloc-contact-repl.cflags.int"] == ["4"]
    assert first["binif.usrloc-contact-repl.expires_at"] == ["1795903600"]
    assert first["binif.trailer.dst_node_id"] == ["2"]
    assert second["binif.usrloc-contact-repl.cmatch_param_count"] == ["2"]
    assert second["binif.usrloc-contact-repl.cmatch_param"] == ["alias", "ob"]
    assert not any("_ws.expert.message" in item for item in (first, second))


def test_tshark_survives_mutated_packets(tshark: str, tmp_path: Path) -> None:
    """Random bytes changed in 300 captured 4.0 packets (some cut short) and 100 2.1
    datagrams: every packet is still shown (named or flagged), the Lua code never fails
    and tshark's output stays valid UTF-8 (run_tshark checks both)."""
    rng = random.Random(2026)
    vectors = [data for _, data in all_vectors()]
    frames = []
    for number in range(300):
        data = bytearray(rng.choice(vectors))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(17, len(data) + 1)]
            data[4:8] = struct.pack("<I", len(data))
        flow = TcpFlow(("127.0.0.1", 40000 + number), ("127.0.0.1", 5555))
        frames += [flow.syn(), flow.send(bytes(data))]
    datagrams = [(VECTORS / name).read_bytes() for name in sorted(ENTRIES)]
    datagrams = [data for data in datagrams if data[:4] == b"P4CK"]  # not the bad marker
    for _ in range(100):  # and the datagram profile's packets over UDP
        data = bytearray(rng.choice(datagrams))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)
        frames.append(udp_frame(("127.0.0.1", 40000), ("127.0.0.1", 5062), bytes(data)))
    pcap = tmp_path / "mutated.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    items = stream_items(tshark, pcap)
    assert len(items) == 400
    flagged = [item for item in items if "_ws.expert.message" in item]
    assert 0 < len(flagged) < 400
