"""OpenSIPS 4.0's dialog replication as typed messages, and the clusterer trailer.

Capability ``dialog-dlg-repl``, layout version 4 (the same push order from
OpenSIPS 3.1 to 4.0; type 5, value, from 3.5 on), over the stream profile.
Field names and order follow the packets captured between two OpenSIPS 4.0.1
nodes (``tests/vectors/opensips-4.0/manifest.json``, WIRE.md part 2).

Every packet a module sends through OpenSIPS's clusterer ends with a
:class:`Trailer` of three ints, which the receiver pops from the back before
the module reads its fields: split it off first, then decode::

    trailer, reader = Trailer.split(reader)
    message = OPENSIPS40.decode(reader)

A packet decoded with its trailer still on fails with ``TrailingBytes``, as
any field beyond a layout does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Self, cast

from .errors import BadFieldText, FieldTypeError, IntOutOfRange
from .messages import LOCAL, MessageField, MessageRegistry, StreamMessage, _fits
from .opensips21 import DialogState
from .opensips40_usrloc import PROFILE_MESSAGES, USRLOC_MESSAGES, _expect_end
from .reader import Field, PacketReader
from .wire import STREAM, WireFormat
from .writer import INT32_MAX, INT32_MIN, PacketWriter

__all__ = [
    "DIALOG_CAPABILITY",
    "DIALOG_VERSION",
    "OPENSIPS40",
    "DialogCreated",
    "DialogCseq",
    "DialogDeleted",
    "DialogPacket",
    "DialogState",
    "DialogUpdated",
    "DialogValue",
    "Trailer",
    "ValueType",
]

DIALOG_CAPABILITY = "dialog-dlg-repl"
"""The capability (module name) of dialog replication packets."""
DIALOG_VERSION = 4
"""The layout version OpenSIPS 3.1 to 4.0 send and accept for dialog replication."""


class DialogPacket(IntEnum):
    """Packet types of ``dialog-dlg-repl`` (REPLICATION_DLG_*)."""

    CREATED = 1
    UPDATED = 2
    DELETED = 3
    CSEQ = 4
    VALUE = 5


class ValueType(IntEnum):
    """``val_type`` of a dialog value (DLG_VAL_TYPE_*): what follows it in the packet."""

    NONE = 0
    STR = 1
    INT = 2


# --- the clusterer trailer -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trailer:
    """The three ints OpenSIPS's clusterer appends to a module's packet (msg_add_trailer).

    A broadcast rewrites ``dst_node_id`` per destination. A packet forwarded
    over a cluster bridge carries a fourth int (the source cluster) before
    these, with ``dst_node_id`` 0xC0000000; :meth:`split` leaves it in the
    reader, so a message decoded from it fails with ``TrailingBytes``.
    """

    cluster_id: int
    src_node_id: int
    """The node that sent the packet (a node ignores its own id)."""
    dst_node_id: int
    """The node the packet is for."""

    @classmethod
    def split(cls, reader: PacketReader) -> tuple[Trailer, PacketReader]:
        """The trailer popped from the back of ``reader``, and the reader without it.

        Raises ``TruncatedField`` when fewer than three ints are left unread.
        """
        dst_node_id, reader = reader.pop_back_int()
        src_node_id, reader = reader.pop_back_int()
        cluster_id, reader = reader.pop_back_int()
        return cls(cluster_id, src_node_id, dst_node_id), reader

    def append_to(self, writer: PacketWriter) -> PacketWriter:
        """``writer`` with the trailer's three ints pushed after its fields."""
        return writer.pack("iii", self.cluster_id, self.src_node_id, self.dst_node_id)


# --- dialog-dlg-repl -------------------------------------------------------------------


class DialogFields(StreamMessage):
    """The 35 fields OpenSIPS 4.0 sends when a dialog is created or updated."""

    callid: str
    caller_tag: str
    callee_tag: str
    from_uri: str
    to_uri: str
    h_id: int
    """The dialog's id in its hash entry: with the callid's hash, what identifies it."""
    start_ts: int
    """Unix time the dialog started."""
    state: int
    """A :class:`DialogState` value."""
    caller_sock: str
    """The caller leg's socket, e.g. ``udp:sipsock`` (a tag the receiver must know)."""
    callee_sock: str
    caller_r_cseq: str
    callee_r_cseq: str
    caller_route_set: str
    callee_route_set: str
    caller_contact: str
    callee_contact: str
    callee_from_uri: str
    callee_to_uri: str
    caller_in_sdp: str
    caller_out_sdp: str
    callee_in_sdp: str
    callee_out_sdp: str
    caller_adv_contact: str
    callee_adv_contact: str
    vars: str
    """``name#value|`` pairs, ``\\``, ``#`` and ``|`` escaped by a backslash."""
    profiles: str
    """``name#value|`` pairs like ``vars``."""
    user_flags: int
    mod_flags: int
    flags: int
    timeout_abs: int
    """Absolute unix time the dialog expires."""
    caller_last_gen_cseq: int
    callee_last_gen_cseq: int
    rt_on_answer: str
    """Script route run on answer, by name (empty for none)."""
    rt_on_timeout: str
    rt_on_hangup: str


class DialogCreated(
    DialogFields,
    module=DIALOG_CAPABILITY,
    command=DialogPacket.CREATED,
    version=DIALOG_VERSION,
):
    """A dialog was confirmed (REPLICATION_DLG_CREATED)."""


class DialogUpdated(
    DialogFields,
    module=DIALOG_CAPABILITY,
    command=DialogPacket.UPDATED,
    version=DIALOG_VERSION,
):
    """A dialog changed (REPLICATION_DLG_UPDATED); receivers create one they do not know."""


class DialogDeleted(
    StreamMessage,
    module=DIALOG_CAPABILITY,
    command=DialogPacket.DELETED,
    version=DIALOG_VERSION,
):
    """A dialog ended (REPLICATION_DLG_DELETED); matched on the callid's hash and ``h_id``."""

    callid: str
    caller_tag: str
    callee_tag: str
    h_id: int


class DialogCseq(
    StreamMessage,
    module=DIALOG_CAPABILITY,
    command=DialogPacket.CSEQ,
    version=DIALOG_VERSION,
):
    """A leg's last generated CSeq changed (REPLICATION_DLG_CSEQ)."""

    callid: str
    other_leg_tag: str
    leg_tag: str
    h_id: int
    last_gen_cseq: int


class DialogValue(
    StreamMessage,
    module=DIALOG_CAPABILITY,
    command=DialogPacket.VALUE,
    version=DIALOG_VERSION,
):
    """A dialog value was set (REPLICATION_DLG_VALUE, OpenSIPS 3.5 and later).

    After ``val_type`` comes the value, by its type: a str for
    :attr:`ValueType.STR`, an int for :attr:`ValueType.INT`, nothing for any
    other type (as OpenSIPS reads it). ``value`` holds it: a ``str``, an
    ``int`` or None; building a packet checks that it matches ``val_type``.
    """

    callid: str
    h_id: int
    name: str
    val_type: int
    """A :class:`ValueType`: which kind of value follows, if any."""
    value: str | int | None = dataclasses.field(default=None, metadata=LOCAL)
    """The value: text for ``STR``, an int for ``INT``, None otherwise."""

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Self:
        """Decode the packet: the four fixed fields, then the value ``val_type`` says.

        Raises the errors :meth:`Message.from_packet` raises.
        """
        cls.check_packet(reader)
        reader = reader.rewind()
        (callid, h_id, name, val_type), value_at = reader.unpack_reader(cls.LAYOUT)
        value: Field | None = None
        rest = value_at
        if val_type == ValueType.STR:
            value, rest = value_at.pop_str()
        elif val_type == ValueType.INT:
            value, rest = value_at.pop_int()
        _expect_end(rest)
        return cls(
            callid=_text(callid, reader, "callid"),
            h_id=cast(int, h_id),
            name=_text(name, reader.skip_str().skip_int(), "name"),
            val_type=cast(int, val_type),
            value=_text(value, value_at, "value") if isinstance(value, bytes) else value,
        )

    def items(self) -> Iterator[tuple[MessageField, str | bytes | int]]:
        """Each field with its value, in wire order, the value (when one is sent) last."""
        yield from zip(self.FIELDS, (self.callid, self.h_id, self.name, self.val_type), strict=True)
        tail = self._tail()
        if tail is not None:
            yield tail, self._tail_value()

    def values(self) -> tuple[str | bytes | int, ...]:
        """The field values in wire order, the value (when one is sent) last."""
        return tuple(value for _, value in self.items())

    def to_writer(self, *, wire: WireFormat = STREAM) -> PacketWriter:
        """A writer holding the packet: fixed fields, then the value by ``val_type``."""
        items = list(self.items())
        writer = PacketWriter(self.MODULE, self.COMMAND, wire=wire, version=self.VERSION)
        layout = "".join(field.code for field, _ in items)
        try:
            return writer.pack(layout, *(value for _, value in items))
        except (FieldTypeError, IntOutOfRange) as exc:
            for field, value in items:
                if not _fits(field, value):
                    raise type(exc)(f"DialogValue.{field.name}: {exc}") from None
            raise

    def _tail(self) -> MessageField | None:
        if self.val_type == ValueType.STR:
            return MessageField("value", "s", str)
        if self.val_type == ValueType.INT:
            return MessageField("value", "i", int)
        return None

    def _tail_value(self) -> str | int:
        value = self.value
        if self.val_type == ValueType.STR and isinstance(value, str):
            return value
        if (
            self.val_type == ValueType.INT
            and type(value) is int
            and INT32_MIN <= value <= INT32_MAX
        ):
            return value
        wanted = "a str" if self.val_type == ValueType.STR else "a signed 32-bit int"
        raise FieldTypeError(
            f"DialogValue.value: val_type {self.val_type} sends {wanted}, not {value!r}"
        )


def _text(raw: Field, at: PacketReader, name: str) -> str:
    """A str field's bytes as text, or ``BadFieldText`` naming the field at ``at``."""
    try:
        return cast(bytes, raw).decode()
    except UnicodeDecodeError as exc:
        raise BadFieldText(
            f"field {at.index} ({name}) at byte offset {at.offset}: not UTF-8 text"
            f" ({exc.reason} at byte {exc.start} of the value)",
            index=at.index,
            offset=at.offset,
        ) from None


OPENSIPS40 = MessageRegistry(
    {
        "dialog.created": DialogCreated,
        "dialog.updated": DialogUpdated,
        "dialog.deleted": DialogDeleted,
        "dialog.cseq": DialogCseq,
        "dialog.value": DialogValue,
        **PROFILE_MESSAGES,
        **USRLOC_MESSAGES,
    }
)
"""Every built-in OpenSIPS 4.0 message (dialog, dialog profiles, usrloc), by
(capability, packet type) and by short name. Split the clusterer trailer off
before :meth:`~binif.messages.MessageRegistry.decode`."""
