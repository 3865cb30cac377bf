"""Typed messages: layouts from annotations, decoding both ways, precise errors."""

from __future__ import annotations

import copy
import dataclasses
import gc
import inspect
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from binif import (
    DATAGRAM_BIG_ENDIAN,
    BadFieldLength,
    DecodeError,
    FieldTypeError,
    IntOutOfRange,
    LayoutError,
    PacketReader,
    PacketWriter,
    TrailingBytes,
    TruncatedField,
)
from binif.errors import BadFieldText, MessageMismatch
from binif.messages import LOCAL, Message, MessageField, MessageRegistry
from binif.wire import DATAGRAM, WireFormat


class Greeting(Message, module="test", command=7):
    """A message with every field kind."""

    name: str
    count: int
    blob: bytes
    note: str


class Ping(Message, module="test", command=8):
    """A message without fields."""


class Shared(Message):
    """Fields without a module: a base for two commands."""

    key: str
    value: int


class Put(Shared, module="kv", command=1):
    pass


class Drop(Shared, module="kv", command=2):
    pass


def parse(data: bytes) -> PacketReader:
    return PacketReader.parse(data)


def test_layout_and_fields_come_from_the_annotations() -> None:
    assert Greeting.LAYOUT == "siss"
    fields = Greeting.FIELDS
    assert fields == (
        MessageField("name", "s", str),
        MessageField("count", "i", int),
        MessageField("blob", "s", bytes),
        MessageField("note", "s", str),
    )
    assert (Greeting.MODULE, Greeting.COMMAND) == ("test", 7)
    assert Ping.LAYOUT == "" and Ping.FIELDS == ()
    assert Put.LAYOUT == Drop.LAYOUT == "si"
    assert (Put.COMMAND, Drop.COMMAND) == (1, 2)


def test_messages_are_frozen_slotted_dataclasses() -> None:
    message = Greeting("ana", 3, b"\x00\xff", "hi")
    assert dataclasses.is_dataclass(message)
    assert not hasattr(message, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.count = 4  # type: ignore[misc]
    assert message == Greeting("ana", 3, b"\x00\xff", "hi")
    assert hash(message) == hash(Greeting("ana", 3, b"\x00\xff", "hi"))
    assert isinstance(Put("k", 1), Shared)


def test_round_trip_keeps_text_as_str_and_bytes_raw() -> None:
    message = Greeting("Zoë", -5, b"\xff\xfe raw", "")
    data = bytes(message)
    assert data == PacketWriter("test", 7).pack("siss", "Zoë", -5, b"\xff\xfe raw", "").to_bytes()
    decoded = Greeting.from_packet(parse(data))
    assert decoded == message
    assert isinstance(decoded.name, str) and isinstance(decoded.blob, bytes)
    assert Greeting.from_bytes(data) == message
    assert message.to_bytes() == data
    assert message.to_writer().field_count == 4


def test_decoded_messages_are_the_frozen_class_itself() -> None:
    made = Greeting("ana", 3, b"\x00", "hi")
    decoded = Greeting.from_bytes(bytes(made))
    assert type(decoded) is Greeting
    assert not hasattr(decoded, "__dict__")
    assert (decoded, hash(decoded), repr(decoded)) == (made, hash(made), repr(made))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.count = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del decoded.name  # type: ignore[misc]
    assert decoded.count == 3


def test_a_message_is_one_object_for_the_garbage_collector() -> None:
    # Its values sit in one tuple of str, bytes and int, which the collector stops
    # tracking: a full collection over a table of messages visits one object each.
    message = Greeting.from_bytes(bytes(Greeting("ana", 3, b"\x00", "hi")))
    gc.collect()
    referents = [item for item in gc.get_referents(message) if item is not Greeting]
    assert referents == [("ana", 3, b"\x00", "hi")]
    assert not gc.is_tracked(referents[0])


def test_messages_survive_pickle_copy_and_replace() -> None:
    message = Greeting("ana", 3, b"\x00", "hi")
    for again in (pickle.loads(pickle.dumps(message)), copy.copy(message), copy.deepcopy(message)):
        assert type(again) is Greeting and again == message
    changed = dataclasses.replace(message, count=4)
    assert (changed.name, changed.count) == ("ana", 4)
    assert dataclasses.astuple(changed) == ("ana", 4, b"\x00", "hi")
    assert Greeting.__match_args__ == ("name", "count", "blob", "note")


class Tagged(Message, module="tag", command=1):
    """Fields outside the layout: a default factory, a keyword-only one, a check."""

    name: str
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple, metadata=LOCAL)
    level: int = dataclasses.field(default=1, kw_only=True, metadata=LOCAL)

    def __post_init__(self) -> None:
        if self.level < 0:
            raise ValueError(f"level {self.level}")


class Clashing(Message, module="clash", command=1):
    """Field names the generated decoder uses for itself."""

    data: str
    pos: int
    n: str
    start: int
    cls: bytes


def test_field_names_do_not_clash_with_the_generated_code() -> None:
    message = Clashing("d", 1, "x", 2, b"c")
    assert Clashing.from_bytes(bytes(message)) == message


class Noted(Message, module="note", command=1):
    """A field left out of equality and hash, as dataclasses allow."""

    key: str
    note: str = dataclasses.field(default="", compare=False, metadata=LOCAL)


def test_equality_and_hash_leave_out_what_the_field_says() -> None:
    assert Noted("k", "one") == Noted("k", "two")
    assert hash(Noted("k", "one")) == hash(Noted("k", "two"))
    assert Noted("k") != Noted("j")
    assert Noted("k") != Greeting("k", 0, b"", "")


def test_a_field_named_like_the_slot_is_refused() -> None:
    with pytest.raises(LayoutError, match="_values"):

        class Bad(Message, module="bad", command=1):
            _values: str


def test_an_init_of_its_own_is_refused() -> None:
    with pytest.raises(LayoutError, match="__init__ is generated"):

        class Bad(Message, module="bad", command=1):
            key: str

            def __init__(self, key: str) -> None:
                pass


class Renamed(Shared, module="kv", command=3):
    """Declares an inherited field again: it stays a required field."""

    key: str


def test_init_keeps_the_dataclass_signature_and_post_init() -> None:
    assert str(inspect.signature(Tagged)) == "(name, tags=<factory>, *, level=1)"
    assert (Tagged("a").tags, Tagged("a").level) == ((), 1)
    assert Tagged("a", ("x",), level=2) == Tagged(name="a", tags=("x",), level=2)
    with pytest.raises(ValueError, match="level -1"):
        Tagged("a", level=-1)
    with pytest.raises(TypeError):
        Tagged("a", ("x",), 2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Tagged()  # type: ignore[call-arg]
    assert Tagged.LAYOUT == "s" and Tagged("a", ("x",), level=2).values() == ("a",)
    decoded = Tagged.from_bytes(PacketWriter("tag", 1).push_str("b").to_bytes())
    assert decoded == Tagged("b")
    assert Renamed("k", 1).key == "k"
    with pytest.raises(TypeError):
        Renamed(value=1)  # type: ignore[call-arg]


class Mixed(Message, module="mix", command=1):
    """Int runs at both ends and between str fields, as OpenSIPS's dialog packets have."""

    first: int
    second: int
    text: str
    raw: bytes
    third: int
    fourth: int
    fifth: int
    last: str


_MIXED_VALUES = st.tuples(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.text(max_size=5),
)


@pytest.mark.parametrize("wire", [DATAGRAM, DATAGRAM_BIG_ENDIAN], ids=lambda wire: wire.name)
@given(values=_MIXED_VALUES, cut=st.integers(0, 60), extra=st.binary(max_size=3))
def test_decoding_agrees_with_unpack_on_any_cut_or_extension(
    wire: WireFormat,
    values: tuple[int, int, str, bytes, int, int, int, str],
    cut: int,
    extra: bytes,
) -> None:
    """The generated decoder and the codec's unpack accept and reject the same packets."""
    whole = PacketReader.parse(Mixed(*values).to_bytes(wire=wire), wire=wire)
    head = whole.data[wire.header_size : whole.fields_offset]
    fields = whole.fields[: max(len(whole.fields) - cut, 0)] + (extra if cut == 0 else b"")
    reader = PacketReader.parse(wire.frame(head + fields), wire=wire)
    try:
        expected = reader.unpack(Mixed.LAYOUT, exact=True)
    except DecodeError as exc:
        with pytest.raises(type(exc)) as caught:
            Mixed.from_packet(reader)
        assert (caught.value.args, vars(caught.value)) == (exc.args, vars(exc))
        return
    decoded = Mixed.from_packet(reader)
    assert decoded == Mixed(*values)
    assert decoded.values() == tuple(
        value.decode() if Mixed.FIELDS[index].type is str else value  # type: ignore[union-attr]
        for index, value in enumerate(expected)
    )


def test_fieldless_message_round_trips() -> None:
    assert Ping.from_bytes(bytes(Ping())) == Ping()


def test_big_endian_wire() -> None:
    message = Put("k", 258)
    data = message.to_bytes(wire=DATAGRAM_BIG_ENDIAN)
    assert data != bytes(message)
    assert Put.from_bytes(data, wire=DATAGRAM_BIG_ENDIAN) == message


def test_from_packet_reads_the_whole_packet_even_from_a_moved_reader() -> None:
    reader = parse(bytes(Put("k", 1)))
    _, moved = reader.pop_str()
    assert Put.from_packet(moved) == Put("k", 1)


def test_trailing_bytes_are_an_error() -> None:
    data = PacketWriter("kv", 1).pack("sii", "k", 1, 2).to_bytes()
    with pytest.raises(TrailingBytes) as caught:
        Put.from_packet(parse(data))
    assert (caught.value.index, caught.value.offset) == (2, len(data) - 4)


def test_truncated_packet_is_an_error() -> None:
    data = PacketWriter("kv", 1).pack("s", "k").to_bytes()
    with pytest.raises(TruncatedField) as caught:
        Put.from_packet(parse(data))
    assert caught.value.index == 1


class Tail(Message, module="kv", command=3):
    """An int then a str that runs to the end of the packet."""

    value: int
    data: bytes


def tail_packet(declared: int, left: int) -> bytes:
    """A kv/3 packet: an int, then a str declaring ``declared`` bytes with ``left`` after it."""
    return PacketWriter("kv", 3).push_int(9).push_int(declared).to_bytes()[8:] + b"y" * left


@pytest.mark.parametrize("left", [0, 1, 5])
def test_str_length_at_the_boundary(left: int) -> None:
    """Exactly the bytes left decodes; one more is TruncatedField at that field."""
    whole = DATAGRAM.frame(tail_packet(left, left))
    assert Tail.from_packet(parse(whole)) == Tail(9, b"y" * left)
    cut = DATAGRAM.frame(tail_packet(left + 1, left))
    with pytest.raises(TruncatedField, match=f"length {left + 1} runs past the end") as caught:
        Tail.from_packet(parse(cut))
    assert (caught.value.index, caught.value.offset) == (1, 8 + 4 + 2 + 4 + 4)


def test_negative_length_is_an_error() -> None:
    data = PacketWriter("kv", 1).push_int(-3).push_int(1).to_bytes()
    with pytest.raises(BadFieldLength):
        Put.from_packet(parse(data))
    # -4 steps back onto the length itself, which then reads as the int: still refused.
    data = PacketWriter("kv", 1).push_int(-4).to_bytes()
    with pytest.raises(BadFieldLength):
        Put.from_packet(parse(data))


def test_non_utf8_text_field_is_a_precise_error_but_bytes_field_is_not() -> None:
    data = PacketWriter("test", 7).pack("siss", "ok", 1, b"\xff", b"a\xffb").to_bytes()
    with pytest.raises(BadFieldText, match=r"field 3 \(note\) at byte offset") as caught:
        Greeting.from_packet(parse(data))
    assert isinstance(caught.value, DecodeError)
    assert caught.value.index == 3
    # The offset points at note's length prefix: after name, count and blob.
    header = 8 + 4 + len("test") + 4
    assert caught.value.offset == header + (4 + 2) + 4 + (4 + 1)
    assert Greeting.from_packet(parse(bytes(Greeting("ok", 1, b"\xff", "")))).blob == b"\xff"


def test_other_module_or_command_is_a_mismatch() -> None:
    with pytest.raises(MessageMismatch, match="Drop is kv/2, the packet is kv/1"):
        Drop.from_packet(parse(bytes(Put("k", 1))))
    with pytest.raises(MessageMismatch):
        Put.from_packet(parse(PacketWriter("other", 1).pack("si", "k", 1).to_bytes()))
    assert issubclass(MessageMismatch, DecodeError)


def test_a_class_that_decoded_a_kind_of_packet_still_refuses_others() -> None:
    """Decoders are kept per kind of packet checked: a mismatch is refused every time."""
    put, drop = parse(bytes(Put("k", 1))), parse(bytes(Drop("k", 2)))
    for _ in range(2):
        assert Put.from_packet(put) == Put("k", 1)
        assert Drop.from_packet(drop) == Drop("k", 2)
        with pytest.raises(MessageMismatch):
            Drop.from_packet(put)
        with pytest.raises(MessageMismatch):
            Put.from_packet(drop)
    with pytest.raises(TypeError, match="Message is a set of fields"):
        Message.from_packet(put)


def test_decoding_with_more_wire_formats_than_a_class_keeps() -> None:
    """Past the kept decoders, each new wire format or head still decodes right."""
    for number in range(70):
        wire = DATAGRAM.with_byte_order("big" if number % 2 else "little")
        message = Put("k", number)
        assert Put.from_bytes(message.to_bytes(wire=wire), wire=wire) == message


def test_a_set_of_fields_cannot_decode() -> None:
    with pytest.raises(TypeError, match="Shared is a set of fields"):
        Shared.from_packet(parse(bytes(Put("k", 1))))


def test_encoding_errors_name_the_field() -> None:
    with pytest.raises(FieldTypeError, match=r"^Put\.value: "):
        Put("k", "1").to_writer()  # type: ignore[arg-type]
    with pytest.raises(IntOutOfRange, match=r"^Put\.value: "):
        bytes(Put("k", 2**31))
    with pytest.raises(FieldTypeError, match=r"^Put\.key: "):
        bytes(Put(3, 1))  # type: ignore[arg-type]


def test_with_defaults_fills_empty_and_zero() -> None:
    assert Greeting.with_defaults(count=2) == Greeting("", 2, b"", "")
    with pytest.raises(TypeError, match="has no field nope"):
        Greeting.with_defaults(nope=1)


def test_items_pairs_fields_with_values() -> None:
    message = Put("k", 9)
    assert message.values() == ("k", 9)
    assert [(field.name, value) for field, value in message.items()] == [("key", "k"), ("value", 9)]


def test_bad_declarations_fail_at_class_creation() -> None:
    with pytest.raises(LayoutError, match=r"Bad\.ratio: a message field is str, bytes or int"):

        class Bad(Message, module="x", command=1):
            ratio: float

    with pytest.raises(TypeError, match="give both module= and command="):

        class Half(Message, module="x"):
            pass

    with pytest.raises(TypeError, match="module must be a non-empty str"):

        class Empty(Message, module="", command=1):
            pass


def test_registry_looks_up_by_key_and_name() -> None:
    registry = MessageRegistry({"kv.put": Put, "kv.drop": Drop})
    assert registry[("kv", 1)] is Put
    assert registry.by_name("kv.drop") is Drop
    assert registry.name_of(Put) == "kv.put"
    assert len(registry) == 2 and set(registry) == {("kv", 1), ("kv", 2)}
    assert registry.decode(parse(bytes(Drop("k", 4)))) == Drop("k", 4)
    assert registry.decode(parse(bytes(Ping()))) is None
    with pytest.raises(KeyError, match=r"known: kv\.drop, kv\.put"):
        registry.by_name("kv.nope")
    with pytest.raises(ValueError, match="already Put"):
        registry.add("other", Put)
    with pytest.raises(ValueError, match="already Drop"):
        registry.add("kv.drop", Ping)
