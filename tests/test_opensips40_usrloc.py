"""Registrations and profile counters of OpenSIPS 3.4-4.0 (WIRE.md "usrloc replication",
"dialog profiles") against every packet captured between two OpenSIPS 4.0.1 nodes.

No OpenSIPS 3.4 capture is shipped: the version 3 layouts are built here from
WIRE.md's description, then read back.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vectors import VECTORS, Vector, field_value, load

from binif import (
    STREAM,
    BadFieldText,
    BadRawValue,
    BadVersion,
    DecodeError,
    EncodeError,
    FieldTypeError,
    InvalidVersion,
    MessageMismatch,
    PacketReader,
    PacketWriter,
    TrailingBytes,
    TruncatedField,
)
from binif.cluster.packets import chunk_reader
from binif.opensips40_usrloc import (
    USRLOC_CAPABILITY,
    USRLOC_VERSIONS,
    AorDeleted,
    AorInserted,
    ContactDeleted,
    ContactId,
    ContactInserted,
    ContactMatch,
    ContactUpdated,
    ProfileCounters,
    ProfileEntry,
    UsrlocPacket,
    usrloc_chunk,
    usrloc_chunk_body,
)

FOLDER = VECTORS / "opensips-4.0-usrloc"
ALL = load(FOLDER, key="packets")
BY_NAME = {vector.name: vector for vector in ALL}
CLASSES: dict[str, Any] = {
    "REPL_URECORD_INSERT": AorInserted,
    "REPL_URECORD_DELETE": AorDeleted,
    "REPL_UCONTACT_INSERT": ContactInserted,
    "REPL_UCONTACT_UPDATE": ContactUpdated,
    "REPL_UCONTACT_DELETE": ContactDeleted,
    "REPLICATION_DLG_PROFILE": ProfileCounters,
}
TYPED = [vector for vector in ALL if vector.entry["packet_type_name"] in CLASSES]
RAW_PROPERTIES = {
    "contact_id": "contact_id_value",
    "expires": "expires_at",
    "q": "q_value",
    "last_modified": "last_modified_at",
}


def ids(vectors: list[Vector]) -> list[str]:
    return [vector.name for vector in vectors]


def without_trailer(vector: Vector) -> tuple[PacketReader, list[int]]:
    """The vector's reader with the clusterer trailer popped from the back."""
    reader = PacketReader.parse(vector.data, wire=STREAM)
    trailer = []
    for _ in range(3):
        value, reader = reader.pop_back_int()
        trailer.append(value)
    return reader, trailer[::-1]


def body_fields(vector: Vector) -> list[dict[str, Any]]:
    return [field for field in vector.fields if not field["name"].startswith("trailer.")]


def with_trailer(writer: PacketWriter, trailer: list[int]) -> bytes:
    for value in trailer:
        writer = writer.push_int(value)
    return writer.to_bytes()


def test_every_file_is_here_and_genuine() -> None:
    assert len(ALL) == 25
    assert len(TYPED) == 20  # the 5 others are clusterer-extra sync packets
    for vector in ALL:
        assert hashlib.sha256(vector.data).hexdigest() == vector.entry["sha256"]


@pytest.mark.parametrize("vector", TYPED, ids=ids(TYPED))
def test_typed_message_has_every_manifest_field(vector: Vector) -> None:
    reader, trailer = without_trailer(vector)
    assert trailer == [field["value"] for field in vector.fields[-3:]]
    message = CLASSES[vector.entry["packet_type_name"]].from_packet(reader)
    assert message.version == vector.entry["version"]
    fields = body_fields(vector)
    # The wire fields, in wire order, with the manifest's names and values.
    items = list(message.items())
    assert [spec.name for spec, _ in items] == [field["name"] for field in fields]
    for (_, value), field in zip(items, fields, strict=True):
        expected = field_value(field)
        assert (value.encode() if isinstance(value, str) else value) == expected
        if field.get("hex"):
            assert getattr(message, RAW_PROPERTIES[field["name"]]) == field["decoded"]


@pytest.mark.parametrize("vector", TYPED, ids=ids(TYPED))
def test_typed_message_rebuilds_the_exact_bytes(vector: Vector) -> None:
    reader, trailer = without_trailer(vector)
    message = CLASSES[vector.entry["packet_type_name"]].from_packet(reader)
    assert with_trailer(message.to_writer(), trailer) == vector.data
    # And decoding the rebuilt packet gives an equal message.
    assert type(message).from_bytes(message.to_bytes(), wire=STREAM) == message


@pytest.mark.parametrize("vector", TYPED, ids=ids(TYPED))
def test_raw_fields_rebuild_the_exact_bytes(vector: Vector) -> None:
    entry = vector.entry
    layout = vector.layout
    writer = PacketWriter(
        entry["capability"], entry["packet_type"], wire=STREAM, version=entry["version"]
    )
    assert writer.pack(layout, *vector.values).to_bytes() == vector.data
    reader = PacketReader.parse(vector.data, wire=STREAM)
    assert reader.unpack(layout, exact=True) == vector.values


def test_contact_update_carries_contact_id_after_kv_storage() -> None:
    inserted = ContactInserted.from_packet(without_trailer(BY_NAME["ul-contact-insert-1.bin"])[0])
    updated = ContactUpdated.from_packet(without_trailer(BY_NAME["ul-contact-update-1.bin"])[0])
    insert_names = [spec.name for spec, _ in inserted.items()]
    update_names = [spec.name for spec, _ in updated.items()]
    assert insert_names.index("contact_id") == 3
    assert update_names.index("contact_id") == update_names.index("kv_storage") + 1
    assert sorted(insert_names) == sorted(update_names)
    # The same contact, refreshed: same id, later expiry, higher cseq.
    assert updated.contact_key == inserted.contact_key
    assert updated.expires_at > inserted.expires_at
    assert (inserted.cseq, updated.cseq) == (1, 2)


def test_raw_c_values_read_through_typed_properties() -> None:
    bob = ContactInserted.from_packet(without_trailer(BY_NAME["ul-contact-insert-2.bin"])[0])
    assert bob.q_value == 800
    assert bob.contact_key == ContactId(aor_hash=30643, rlabel=0, clabel=11053)
    assert int(bob.contact_key) == bob.contact_id_value
    assert bob.contact_key.to_bytes() == bob.contact_id
    carol = ContactInserted.from_packet(without_trailer(BY_NAME["ul-contact-insert-4.bin"])[0])
    assert (carol.cflags, carol.path) == ("NAT", "<sip:edge.example.net;lr>")
    # The AoR insert's next_clabel is the clabel of the AoR's first contact.
    aor = AorInserted.from_packet(without_trailer(BY_NAME["ul-aor-insert-3.bin"])[0])
    assert aor.aor == carol.aor
    assert aor.next_clabel == carol.contact_key.clabel


def test_build_from_decoded_values_gives_the_captured_packet() -> None:
    reader, trailer = without_trailer(BY_NAME["ul-contact-insert-1.bin"])
    built = ContactInserted.build(
        aor="alice@example.com",
        contact="sip:alice@127.0.0.1:7001",
        contact_id=ContactId(aor_hash=3029, rlabel=0, clabel=14471),
        callid="reg-alice-1@binif",
        user_agent="binif-capture/1.0",
        expires_at=1795906785,
        sock="udp:sipsock",
        last_modified_at=1795903185,
    )
    assert built == ContactInserted.from_packet(reader)
    assert with_trailer(built.to_writer(), trailer) == BY_NAME["ul-contact-insert-1.bin"].data


def test_contact_id_parts() -> None:
    key = ContactId.from_int((5 << 46) | (7 << 14) | 9)
    assert (key.aor_hash, key.rlabel, key.clabel) == (5, 7, 9)
    assert ContactId.from_bytes(key.to_bytes()) == key
    top = ContactId.from_int(2**64 - 1)
    assert (top.aor_hash, top.rlabel, top.clabel) == (2**18 - 1, 2**32 - 1, 2**14 - 1)
    with pytest.raises(EncodeError, match="14 bits"):
        ContactId(0, 0, 2**14)
    with pytest.raises(EncodeError, match="unsigned 64-bit"):
        ContactId.from_int(-1)
    with pytest.raises(BadRawValue, match="4 raw bytes"):
        ContactId.from_bytes(b"\0" * 4)


def test_profile_counters_are_a_list_of_entries() -> None:
    reader, trailer = without_trailer(BY_NAME["dlg-prof-3.bin"])
    message = ProfileCounters.from_packet(reader)
    assert message.entries == (
        ProfileEntry("calls", 0, "", 1),
        ProfileEntry("caller", 1, "alice", 1),
    )
    assert message.counts() == {("calls", None): 1, ("caller", "alice"): 1}
    built = ProfileCounters((ProfileEntry.of("calls", 1), ProfileEntry.of("caller", 1, "alice")))
    assert built == message
    assert with_trailer(built.to_writer(), trailer) == BY_NAME["dlg-prof-3.bin"].data
    empty = ProfileCounters(())
    assert ProfileCounters.from_bytes(empty.to_bytes(), wire=STREAM) == empty


def test_a_cut_profile_entry_is_refused() -> None:
    writer = PacketWriter("dialog-prof-repl", 4, wire=STREAM, version=4)
    cut = writer.push_str("caller").push_int(1).push_str("alice").to_bytes()
    with pytest.raises(TruncatedField, match="field 3"):
        ProfileCounters.from_bytes(cut, wire=STREAM)


# --- the variable tail: contact match params ------------------------------------------


def alice(**changes: Any) -> ContactInserted:
    values: dict[str, Any] = {
        "aor": "alice@example.com",
        "contact": "sip:alice@127.0.0.1:7001;ob",
        "contact_id": ContactId(3029, 0, 14471),
        "callid": "c1",
        "expires_at": 1795906785,
    }
    values.update(changes)
    return ContactInserted.build(**values)


@pytest.mark.parametrize("cls", [ContactInserted, ContactUpdated])
def test_match_params_follow_mode_2_with_their_count(cls: type[ContactInserted]) -> None:
    message = cls.build(
        aor="a@x",
        contact="sip:a@h;ob;pn-prid=1",
        contact_id=1,
        expires_at=10,
        cmatch_mode=ContactMatch.PARAMS,
        cmatch_params=("ob", "pn-prid"),
    )
    data = message.to_bytes()
    reader = PacketReader.parse(data, wire=STREAM)
    fixed = "".join(spec.code for spec in cls.FIELDS)
    values, rest = reader.unpack_reader(fixed)
    assert values[-1] == 2
    assert rest.unpack("iss", exact=True) == (2, b"ob", b"pn-prid")
    assert cls.from_packet(reader) == message
    names = [spec.name for spec, _ in message.items()][-3:]
    assert names == ["cmatch_param_count", "cmatch_param[0]", "cmatch_param[1]"]


def test_contact_delete_with_match_params() -> None:
    message = ContactDeleted(
        "location", "a@x", "sip:a@h", "c1", 3, cmatch_mode=2, cmatch_params=("ob",)
    )
    data = message.to_bytes()
    assert PacketReader.parse(data, wire=STREAM).unpack("ssssiiis", exact=True) == (
        b"location",
        b"a@x",
        b"sip:a@h",
        b"c1",
        3,
        2,
        1,
        b"ob",
    )
    assert ContactDeleted.from_bytes(data, wire=STREAM) == message


def test_match_params_need_mode_2() -> None:
    with pytest.raises(EncodeError, match="cmatch_mode 2"):
        alice(cmatch_params=("ob",))


@pytest.mark.parametrize("count", [-1, 1000])
def test_an_impossible_param_count_is_refused(count: int) -> None:
    writer = PacketWriter(USRLOC_CAPABILITY, 5, wire=STREAM, version=5)
    data = writer.pack("ssssiii", "location", "a@x", "sip:a@h", "c", 1, 2, count).to_bytes()
    with pytest.raises(TruncatedField, match="cmatch_param_count"):
        ContactDeleted.from_bytes(data, wire=STREAM)


def test_a_missing_param_is_refused() -> None:
    writer = PacketWriter(USRLOC_CAPABILITY, 5, wire=STREAM, version=5)
    data = writer.pack("ssssiiis", "location", "a@x", "sip:a@h", "c", 1, 2, 2, "ob").to_bytes()
    with pytest.raises(TruncatedField):
        ContactDeleted.from_bytes(data, wire=STREAM)


# --- version 3 (OpenSIPS 3.4, 3.5), built from WIRE.md: no capture is shipped --------


def test_version_3_aor_insert_has_no_kv_storage() -> None:
    message = AorInserted("location", "bob@example.com", 4, 11053, version=3)
    data = message.to_bytes()
    reader = PacketReader.parse(data, wire=STREAM)
    assert reader.version == 3
    assert reader.unpack("ssii", exact=True) == (b"location", b"bob@example.com", 4, 11053)
    assert AorInserted.from_packet(reader) == message
    with pytest.raises(EncodeError, match="kv_storage"):
        AorInserted("location", "bob@example.com", 4, 11053, '{"a":1}', version=3)


@pytest.mark.parametrize("cls", [ContactInserted, ContactUpdated])
def test_version_3_contact_cflags_is_an_int(cls: type[ContactInserted]) -> None:
    message = cls.build(
        aor="carol@example.com",
        contact="sip:carol@10.0.0.7:5080",
        contact_id=ContactId(34407, 0, 12349),
        expires_at=1795903786,
        q_value=500,
        cflags=4,
        version=3,
    )
    data = message.to_bytes()
    reader = PacketReader.parse(data, wire=STREAM)
    assert reader.version == 3
    # WIRE.md: as v5 but cflags an int; kv_storage and cmatch_mode as in v5.
    layout = "s" * 13 + "iiii" + "ssi" if cls is ContactInserted else "s" * 12 + "iiii" + "sssi"
    values = reader.unpack(layout, exact=True)
    cflags_at = 15 if cls is ContactInserted else 14
    assert values[cflags_at] == 4
    decoded = cls.from_packet(reader)
    assert decoded == message
    assert (decoded.cflags, decoded.q_value, decoded.version) == (4, 500, 3)
    assert decoded.contact_key == ContactId(34407, 0, 12349)


def test_version_3_and_5_share_the_delete_layouts() -> None:
    for version in (3, 5):
        aor = AorDeleted("location", "dave@example.com", version=version)
        assert AorDeleted.from_bytes(aor.to_bytes(), wire=STREAM) == aor
        contact = ContactDeleted("location", "dave@example.com", "sip:d@h", "c", 1, version=version)
        assert ContactDeleted.from_bytes(contact.to_bytes(), wire=STREAM) == contact
    v3 = AorDeleted("location", "a", version=3).to_bytes()
    v5 = AorDeleted("location", "a").to_bytes()
    assert v3[8:10] == b"\x03\x00" and v5[8:10] == b"\x05\x00"
    assert v3[10:] == v5[10:]


def test_cflags_type_follows_the_version() -> None:
    with pytest.raises(FieldTypeError, match="cflags: int in version 3"):
        alice(cflags="NAT", version=3)
    with pytest.raises(FieldTypeError, match="cflags: str in version 5"):
        alice(cflags=4)


def test_a_version_binif_does_not_read_is_refused() -> None:
    data = bytearray(BY_NAME["ul-aor-delete-1.bin"].data)
    data[8:10] = (6).to_bytes(2, "little")
    reader = PacketReader.parse(bytes(data), wire=STREAM)
    with pytest.raises(BadVersion, match="version 6"):
        AorDeleted.from_packet(reader)
    with pytest.raises(InvalidVersion, match="version 2"):
        AorDeleted("location", "a", version=2)


# --- refusals ---------------------------------------------------------------------------


def test_the_trailer_must_be_split_off_first() -> None:
    reader = PacketReader.parse(BY_NAME["ul-aor-insert-1.bin"].data, wire=STREAM)
    with pytest.raises(TrailingBytes, match="12 bytes left"):
        AorInserted.from_packet(reader)


def test_another_packet_type_is_a_mismatch() -> None:
    reader, _ = without_trailer(BY_NAME["ul-contact-insert-1.bin"])
    with pytest.raises(MessageMismatch, match="usrloc-contact-repl/3"):
        ContactUpdated.from_packet(reader)


def test_text_that_is_not_utf8_names_the_field() -> None:
    writer = PacketWriter(USRLOC_CAPABILITY, UsrlocPacket.AOR_DELETE, wire=STREAM, version=5)
    data = writer.pack("ss", "location", b"\xff").to_bytes()
    with pytest.raises(BadFieldText, match=r"field 1 \(aor\) at byte offset 45") as caught:
        AorDeleted.from_bytes(data, wire=STREAM)
    assert (caught.value.index, caught.value.offset) == (1, 45)


def test_a_raw_value_of_an_odd_size_is_refused_when_read() -> None:
    message = alice()
    odd = dataclasses.replace(message, expires=b"\x01\x02\x03")
    with pytest.raises(BadRawValue, match="expires: 3 raw bytes"):
        _ = odd.expires_at
    # It still travels as it came: the wire does not care.
    assert ContactInserted.from_bytes(odd.to_bytes(), wire=STREAM) == odd


def test_every_truncation_of_a_contact_is_a_decode_error() -> None:
    reader, _ = without_trailer(BY_NAME["ul-contact-update-3.bin"])
    data = ContactUpdated.from_packet(reader).to_bytes()
    for cut in range(reader.offset, len(data)):
        short = bytearray(data[:cut])
        short[4:8] = len(short).to_bytes(4, "little")
        with pytest.raises(DecodeError):
            ContactUpdated.from_bytes(bytes(short), wire=STREAM)


# --- sync chunks --------------------------------------------------------------------------


def chunk_of(message: AorInserted | ContactInserted) -> PacketReader:
    """A chunk as a donor builds it, framed as the cluster's SYNC parser hands it on."""
    return chunk_reader(USRLOC_CAPABILITY, message.version, usrloc_chunk_body(message), 0)


def test_a_chunk_decodes_to_the_insert_it_holds() -> None:
    aor = AorInserted("location", "a@x", 0, 5)
    contact = alice(cmatch_mode=ContactMatch.CONTACT_CALLID)
    assert usrloc_chunk(chunk_of(aor)) == aor
    assert usrloc_chunk(chunk_of(contact)) == contact
    v3 = alice(cflags=0, version=3)
    assert usrloc_chunk(chunk_of(v3)) == v3


# --- any value, any version: built, read back; any body: refused or read exactly ------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
INT32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def contacts(draw: st.DrawFn) -> ContactInserted:
    cls = draw(st.sampled_from([ContactInserted, ContactUpdated]))
    version = draw(st.sampled_from(sorted(USRLOC_VERSIONS)))
    mode = draw(st.sampled_from([-1, 0, 1, 2]))
    values: dict[str, Any] = {}
    for field in cls._wire_fields(version):
        if field.type is bytes:
            values[field.name] = draw(st.binary(max_size=9))
        else:
            values[field.name] = draw(TEXT if field.type is str else INT32)
    values["cmatch_mode"] = mode
    params = tuple(draw(st.lists(TEXT, max_size=3))) if mode == 2 else ()
    return cls(**values, cmatch_params=params, version=version)  # type: ignore[no-any-return]


@given(contacts())
def test_any_contact_reads_back_as_built(message: ContactInserted) -> None:
    assert type(message).from_bytes(message.to_bytes()) == message


@given(st.lists(st.tuples(TEXT, st.integers(0, 2), TEXT, INT32), max_size=4))
def test_any_profile_counters_read_back_as_built(
    entries: list[tuple[str, int, str, int]],
) -> None:
    message = ProfileCounters(
        tuple(
            ProfileEntry(name, has, value if has else "", count)
            for name, has, value, count in entries
        )
    )
    assert ProfileCounters.from_bytes(message.to_bytes()) == message


SHAPES = [AorInserted, AorDeleted, ContactInserted, ContactUpdated, ContactDeleted, ProfileCounters]


@given(st.sampled_from(SHAPES), st.sampled_from([3, 4, 5]), st.binary(max_size=120))
def test_any_body_is_refused_or_read_exactly(cls: Any, version: int, body: bytes) -> None:
    head = PacketWriter(cls.MODULE, cls.COMMAND, wire=STREAM, version=version).to_bytes()
    packet = bytearray(head + body)
    packet[4:8] = len(packet).to_bytes(4, "little")
    try:
        message = cls.from_bytes(bytes(packet))
    except DecodeError:
        return
    assert message.to_bytes() == bytes(packet)


def test_a_chunk_holds_inserts_only() -> None:
    updated = ContactUpdated.build(aor="a@x", contact="sip:a@h", contact_id=1, expires_at=10)
    with pytest.raises(TypeError, match="not ContactUpdated"):
        usrloc_chunk_body(updated)
    assert usrloc_chunk_body(AorInserted("location", "a@x", 0, 5))[:4] == b"\0\0\0\0"
