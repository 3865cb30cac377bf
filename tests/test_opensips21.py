"""OpenSIPS 2.1's built-in layouts against every captured and crafted vector."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from endpoint_helpers import assert_accounted

from binif import (
    BadChecksum,
    Endpoint,
    PacketReader,
    PacketWriter,
    TrailingBytes,
    TruncatedField,
)
from binif.dispatch import Address, DropReason
from binif.errors import BadRawValue, FieldTypeError, IntOutOfRange
from binif.messages import Message
from binif.opensips21 import (
    OPENSIPS21,
    DialogCreated,
    DialogDeleted,
    DialogState,
    DialogUpdated,
    UsrlocContactDeleted,
    UsrlocContactInserted,
    UsrlocContactUpdated,
    UsrlocRecordDeleted,
    UsrlocRecordInserted,
    c_int,
    c_time,
    lookup,
)

VECTORS = Path(__file__).parent / "vectors" / "opensips-2.1"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
ENTRIES = {entry["file"]: entry for entry in MANIFEST["files"]}
DECODABLE = [
    name
    for name, entry in ENTRIES.items()
    if entry["crc_valid"]
    and "truncated_in" not in entry
    and entry["command_name"]
    and "bad-marker" not in name
]
TRUNCATED = [
    name for name, entry in ENTRIES.items() if entry["crc_valid"] and "truncated_in" in entry
]


def manifest_value(field: dict[str, Any]) -> str | bytes | int:
    value: str | int = field["value"]
    if field.get("hex"):
        assert isinstance(value, str)
        return bytes.fromhex(value)
    return value


def test_every_captured_packet_is_covered() -> None:
    captured = [name for name in ENTRIES if not name.startswith("crafted-")]
    assert set(captured) <= set(DECODABLE)
    assert len(DECODABLE) == len(captured) + 2  # the two crafted packets OpenSIPS accepted


@pytest.mark.parametrize("name", DECODABLE)
def test_vector_decodes_to_manifest_fields_and_rebuilds_byte_exact(name: str) -> None:
    entry = ENTRIES[name]
    data = (VECTORS / name).read_bytes()
    reader = PacketReader.parse(data)
    cls = lookup(entry["module"], entry["command"])
    assert cls is not None
    message = cls.from_packet(reader)
    assert [field.name for field in cls.FIELDS] == [f["name"] for f in entry["fields"]]
    assert [field.code for field in cls.FIELDS] == [f["type"][0] for f in entry["fields"]]
    assert list(message.values()) == [manifest_value(f) for f in entry["fields"]]
    assert bytes(message) == data


def test_manifest_layouts_match_the_classes() -> None:
    layouts = MANIFEST["field_layouts"]
    by_title = {title.split()[0]: fields for title, fields in layouts.items()}
    expected = {
        DialogCreated: by_title["dialog/1"],
        DialogUpdated: by_title["dialog/1"],
        DialogDeleted: by_title["dialog/3"],
        UsrlocRecordInserted: by_title["ul/1"],
        UsrlocRecordDeleted: by_title["ul/1"],
        UsrlocContactInserted: by_title["ul/3"],
        UsrlocContactUpdated: by_title["ul/3"],
        UsrlocContactDeleted: by_title["ul/5"],
    }
    for cls, fields in expected.items():
        assert [
            f"{field.name}:{'str' if field.code == 's' else 'int'}" for field in cls.FIELDS
        ] == (fields), cls.__name__


@pytest.mark.parametrize("name", TRUNCATED)
def test_truncated_vector_is_rejected_at_the_field_it_was_cut_in(name: str) -> None:
    entry = ENTRIES[name]
    reader = PacketReader.parse((VECTORS / name).read_bytes())
    with pytest.raises(TruncatedField) as caught:
        DialogCreated.from_packet(reader)
    # The bulk reader reports a run of ints at its first field.
    names = [field.name for field in DialogCreated.FIELDS]
    cut = names.index(entry["truncated_in"]["field"])
    assert caught.value.index <= cut
    assert caught.value.index >= len(entry["fields_complete"]) - 2


def test_bad_crc_vectors_are_rejected_before_decoding() -> None:
    for name in (
        "crafted-dialog-created-bad-crc.bin",
        "crafted-dialog-created-truncated-140-full-crc.bin",
    ):
        with pytest.raises(BadChecksum):
            PacketReader.parse((VECTORS / name).read_bytes())


def test_unknown_module_and_command_have_no_class() -> None:
    for name in ("crafted-unknown-module.bin", "crafted-dialog-cmd9.bin"):
        reader = PacketReader.parse((VECTORS / name).read_bytes())
        assert lookup(reader.module, reader.command) is None
        assert OPENSIPS21.decode(reader) is None


def test_trailing_field_after_dialog_deleted_is_rejected() -> None:
    data = PacketWriter("dialog", 3).pack("ssss", "c", "f", "t", "extra").to_bytes()
    with pytest.raises(TrailingBytes):
        DialogDeleted.from_packet(PacketReader.parse(data))


def test_usrloc_raw_values_decode_as_little_endian_ints() -> None:
    entry = ENTRIES["usrloc-contact-insert-1.bin"]
    contact = UsrlocContactInserted.from_bytes((VECTORS / entry["file"]).read_bytes())
    assert contact.expires == bytes.fromhex("a5610a6b00000000")
    assert contact.expires_at == 1795842469
    assert contact.q_value == -1
    assert contact.last_modified_at == 1795838869
    assert c_time(1795842469) == contact.expires and c_int(-1) == contact.q
    # A 32-bit sender's 4-byte time_t decodes too; other sizes are refused.
    assert UsrlocContactUpdated.with_defaults(expires=c_int(7)).expires_at == 7
    with pytest.raises(BadRawValue, match="expires: 0 raw bytes"):
        _ = UsrlocContactUpdated.with_defaults().expires_at


def test_c_values_out_of_range_or_of_the_wrong_type_are_encode_errors() -> None:
    assert c_time(2**63 - 1) == b"\xff" * 7 + b"\x7f" and c_int(-(2**31)) == bytes(3) + b"\x80"
    with pytest.raises(
        IntOutOfRange, match=r"c_time\(1180591620717411303424\): outside the signed 64-bit"
    ):
        c_time(2**70)
    with pytest.raises(
        IntOutOfRange, match=r"c_int\(2147483648\): outside the signed 32-bit range"
    ):
        c_int(2**31)
    with pytest.raises(FieldTypeError, match=r"c_time\(\) takes an int, not float"):
        c_time(1.5)  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match=r"c_int\(\) takes an int, not bool"):
        c_int(True)


def test_registry_names() -> None:
    assert set(OPENSIPS21.names) == {
        "dialog.created",
        "dialog.updated",
        "dialog.deleted",
        "ul.record_inserted",
        "ul.record_deleted",
        "ul.contact_inserted",
        "ul.contact_updated",
        "ul.contact_deleted",
    }
    assert OPENSIPS21.by_name("dialog.created") is DialogCreated
    assert OPENSIPS21.name_of(UsrlocContactDeleted) == "ul.contact_deleted"


def test_dialog_state_codes() -> None:
    created = DialogCreated.from_bytes((VECTORS / "dialog-created-1.bin").read_bytes())
    updated = DialogUpdated.from_bytes((VECTORS / "dialog-updated-1.bin").read_bytes())
    assert DialogState(created.state) is DialogState.CONFIRMED_NA
    assert DialogState(updated.state) is DialogState.CONFIRMED


# --- typed routing through real endpoints ---------------------------------------------


async def test_endpoint_delivers_built_in_messages_in_order() -> None:
    """Two endpoints on 127.0.0.1: typed handlers get instances; bad fields are counted drops."""
    received: list[tuple[str, Message]] = []
    done = asyncio.Event()

    async with Endpoint(("127.0.0.1", 0)) as backup, Endpoint(("127.0.0.1", 0)) as active:

        @backup.on(DialogCreated)
        async def created(message: DialogCreated, source: Address) -> None:
            assert source == active.local_address
            await asyncio.sleep(0)  # order must hold while a handler awaits
            received.append(("created", message))

        @backup.on(DialogDeleted)
        async def deleted(message: DialogDeleted, source: Address) -> None:
            received.append(("deleted", message))
            if message.callid == "rig21-call-3@127.0.0.1":
                done.set()

        trailing = (
            DialogCreated.with_defaults(callid="x")
            .to_writer()
            .pack("s", "")  # one field too many: trailing bytes
        )
        bad_text = PacketWriter("dialog", 3).pack("sss", b"\xff\xfe", "f", "t")
        packets: list[bytes | PacketWriter] = []
        for call in (1, 2, 3):
            packets += [
                (VECTORS / f"dialog-created-{call}.bin").read_bytes(),
                (VECTORS / f"dialog-updated-{call}.bin").read_bytes(),  # no handler for 2
                (VECTORS / f"dialog-deleted-{call}.bin").read_bytes(),
            ]
            if call == 1:
                packets += [
                    (VECTORS / "crafted-dialog-created-truncated-240-crc-ok.bin").read_bytes(),
                    trailing,
                    bad_text,
                ]
        for packet in packets:
            await active.send(packet, backup.local_address)
        await asyncio.wait_for(done.wait(), 10)
        stats = backup.stats

    assert [kind for kind, _ in received] == ["created", "deleted"] * 3
    expected = [
        (VECTORS / f"dialog-{kind}-{call}.bin").read_bytes()
        for call in (1, 2, 3)
        for kind in ("created", "deleted")
    ]
    assert [bytes(message) for _, message in received] == expected
    assert isinstance(received[0][1], DialogCreated)
    assert stats.handled == 6
    assert stats.drops[DropReason.UNDECODABLE] == 3
    assert stats.drops[DropReason.UNKNOWN_COMMAND] == 3
    assert_accounted(stats)
