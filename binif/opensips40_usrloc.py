"""OpenSIPS 3.4-4.0 registrations and profile counters, as typed messages.

``usrloc-contact-repl`` replicates the location table (who is registered
where); ``dialog-prof-repl`` the dialog profile counters. Field names follow
``tests/vectors/opensips-4.0-usrloc/manifest.json``. These packets do not fit
one fixed layout: the version chooses some fields (cflags an int up to v3,
kv_storage in the AoR insert from v5), a contact match mode of 2 adds a counted
list of params, the contact id moves in an update and a profile packet is a list
of entries. The classes here read and build every variant themselves.

usrloc carries ``contact_id``, ``expires``, ``q`` and ``last_modified`` as raw
C values inside str fields; they stay ``bytes`` (so a packet rebuilds byte for
byte) and properties decode them as the little-endian integers an x86-64 or
arm64 sender writes. ``build`` takes the decoded values instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from types import MappingProxyType
from typing import Any, ClassVar, Self

from .errors import (
    BadFieldText,
    BadRawValue,
    BadVersion,
    EncodeError,
    FieldTypeError,
    IntOutOfRange,
    InvalidVersion,
    MessageMismatch,
    TrailingBytes,
    TruncatedField,
)
from .layout import INT, STR
from .messages import LOCAL, Message, MessageField, _fits
from .opensips21 import ContactRawValues, c_int, c_time
from .reader import Field, PacketReader
from .wire import STREAM, WireFormat
from .writer import PacketWriter

__all__ = [
    "PROFILE_CAPABILITY",
    "PROFILE_MESSAGES",
    "USRLOC_CAPABILITY",
    "USRLOC_MESSAGES",
    "USRLOC_VERSIONS",
    "AorDeleted",
    "AorInserted",
    "ContactDeleted",
    "ContactId",
    "ContactInserted",
    "ContactMatch",
    "ContactUpdated",
    "ProfileCounters",
    "ProfileEntry",
    "UsrlocPacket",
    "usrloc_chunk",
    "usrloc_chunk_body",
]

USRLOC_CAPABILITY = "usrloc-contact-repl"
PROFILE_CAPABILITY = "dialog-prof-repl"
USRLOC_VERSIONS = frozenset({3, 4, 5})
"""usrloc layouts binif reads and builds: 3 (OpenSIPS 3.4, 3.5), 4, 5 (3.6, 4.0)."""
_LATEST = 5


class UsrlocPacket(IntEnum):
    """Packet types of ``usrloc-contact-repl`` (REPL_URECORD_* / REPL_UCONTACT_*)."""

    AOR_INSERT = 1
    AOR_DELETE = 2
    CONTACT_INSERT = 3
    CONTACT_UPDATE = 4
    CONTACT_DELETE = 5


class ContactMatch(IntEnum):
    """``cmatch_mode``: how the receiver finds the contact a packet is about."""

    NONE = -1
    """The receiver's own default (usrloc's ``matching_mode``): inserts, updates, single deletes."""
    CONTACT_ONLY = 0
    """By contact URI alone."""
    CONTACT_CALLID = 1
    """By contact and Call-ID (sync chunks, ``Contact: *``)."""
    PARAMS = 2
    """By the contact URI params listed in ``cmatch_params``."""


# --- raw C values ---------------------------------------------------------------------

_CLABEL_BITS = 14
_RLABEL_BITS = 32
_AOR_HASH_SHIFT = _CLABEL_BITS + _RLABEL_BITS
_AOR_HASH_BITS = 64 - _AOR_HASH_SHIFT


@dataclass(frozen=True, slots=True)
class ContactId:
    """A usrloc contact id (``ucontact_id``, uint64) and its three parts.

    OpenSIPS packs it as ``clabel + (rlabel << 14) + (aor_hash << 46)``: the
    AoR's hash, the AoR's label within its hash slot, the contact's label.
    """

    aor_hash: int
    """Bits 46-63: the hash of the AoR (18 bits)."""
    rlabel: int
    """Bits 14-45: the AoR's label (32 bits)."""
    clabel: int
    """Bits 0-13: the contact's label within its AoR (14 bits)."""

    def __post_init__(self) -> None:
        for name, bits in (
            ("aor_hash", _AOR_HASH_BITS),
            ("rlabel", _RLABEL_BITS),
            ("clabel", _CLABEL_BITS),
        ):
            value = getattr(self, name)
            if type(value) is not int:
                raise FieldTypeError(f"ContactId.{name}: an int, not {type(value).__name__}")
            if not 0 <= value < 1 << bits:
                raise IntOutOfRange(f"ContactId.{name}: {value} does not fit in {bits} bits")

    @classmethod
    def from_int(cls, value: int) -> ContactId:
        """Split a 64-bit contact id into its parts."""
        if not 0 <= value < 1 << 64:
            raise IntOutOfRange(f"a contact id is an unsigned 64-bit int, not {value}")
        return cls(
            value >> _AOR_HASH_SHIFT,
            (value >> _CLABEL_BITS) & ((1 << _RLABEL_BITS) - 1),
            value & ((1 << _CLABEL_BITS) - 1),
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ContactId:
        """Decode the 8 raw bytes usrloc sends (little-endian)."""
        return cls.from_int(_contact_id_int(raw))

    def __int__(self) -> int:
        return (self.aor_hash << _AOR_HASH_SHIFT) | (self.rlabel << _CLABEL_BITS) | self.clabel

    def to_bytes(self) -> bytes:
        """The 8 raw bytes usrloc sends (little-endian)."""
        return int(self).to_bytes(8, "little")


def _contact_id_int(raw: bytes) -> int:
    if len(raw) != 8:
        raise BadRawValue(f"contact_id: {len(raw)} raw bytes, not an 8-byte ucontact_id")
    return int.from_bytes(raw, "little")


# --- the shared machinery ---------------------------------------------------------------


def _text(name: str) -> MessageField:
    return MessageField(name, STR, str)


def _raw(name: str) -> MessageField:
    return MessageField(name, STR, bytes)


def _int(name: str) -> MessageField:
    return MessageField(name, INT, int)


class _Variable(Message):
    """A message whose wire fields depend on the version and on its own values.

    Subclasses list their wire fields per version in :meth:`_wire_fields`; the
    instance's actual fields (with a variable tail) come from :meth:`items`.
    ``FIELDS`` and ``LAYOUT`` describe the latest version without a tail.
    """

    VERSIONS: ClassVar[frozenset[int]]
    """The layout versions the class reads and builds."""

    version: int = dataclasses.field(default=_LATEST, kw_only=True, metadata=LOCAL)
    """The layout version (the packet header's; usrloc 5 for OpenSIPS 3.6 and 4.0)."""

    @classmethod
    def _wire_fields(cls, version: int) -> tuple[MessageField, ...]:
        raise NotImplementedError

    def _tail(self) -> Iterator[tuple[MessageField, str | bytes | int]]:
        """Fields after the fixed ones (none unless a subclass says so)."""
        return iter(())

    @classmethod
    def _read_tail(
        cls, reader: PacketReader, fixed: dict[str, Any]
    ) -> tuple[dict[str, Any], PacketReader]:
        return {}, reader

    # --- decoding ---------------------------------------------------------------------

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Self:
        """Decode ``reader``'s packet, choosing the layout by the packet's version.

        Raises :class:`~binif.errors.MessageMismatch` for another capability or
        type, :class:`~binif.errors.BadVersion` for a version not in
        ``VERSIONS``, and the codec's precise errors otherwise.
        """
        if reader.command != cls.COMMAND or reader.module != cls.MODULE:
            raise MessageMismatch(
                f"{cls.__name__} is {cls.MODULE}/{cls.COMMAND},"
                f" the packet is {reader.module}/{reader.command}"
            )
        if reader.index:
            reader = reader.rewind()
        message, rest = cls.read_fields(reader, reader.version)
        _expect_end(rest)
        return message

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, wire: WireFormat = STREAM) -> Self:
        """Parse and decode one stream packet without its trailer (see :meth:`from_packet`)."""
        return cls.from_packet(PacketReader.parse(data, wire=wire))

    @classmethod
    def read_fields(cls, reader: PacketReader, version: int | None) -> tuple[Self, PacketReader]:
        """Decode this message's fields from ``reader``'s position, for ``version``.

        Returns the message and the reader after its last field; a sync chunk
        holds the same fields as the packet.
        """
        if version not in cls.VERSIONS:
            raise BadVersion(
                f"{cls.MODULE}/{cls.COMMAND} version {version}: binif reads"
                f" {', '.join(map(str, sorted(cls.VERSIONS)))}"
            )
        fields = cls._wire_fields(version)
        values, rest = reader.unpack_reader(_layout(fields))
        named = _named(reader, fields, values)
        tail, rest = cls._read_tail(rest, named)
        return cls(**named, **tail, version=version), rest

    # --- encoding ---------------------------------------------------------------------

    def items(self) -> Iterator[tuple[MessageField, str | bytes | int]]:
        """Each wire field of this packet with its value, in wire order."""
        for field in self._wire_fields(self.version):
            yield field, getattr(self, field.name)
        yield from self._tail()

    def values(self) -> tuple[str | bytes | int, ...]:
        """The wire field values in wire order."""
        return tuple(value for _, value in self.items())

    def push_to(self, writer: PacketWriter) -> PacketWriter:
        """``writer`` with this message's fields pushed (as a sync chunk holds them)."""
        items = list(self.items())
        try:
            return writer.pack(_layout([field for field, _ in items]), *(v for _, v in items))
        except (FieldTypeError, IntOutOfRange) as exc:
            for field, value in items:
                if not _fits(field, value):
                    raise type(exc)(f"{type(self).__name__}.{field.name}: {exc}") from None
            raise

    def to_writer(self, *, wire: WireFormat = STREAM) -> PacketWriter:
        """A writer holding this message, with its version in the header."""
        writer = PacketWriter(self.MODULE, self.COMMAND, wire=wire, version=self.version)
        return self.push_to(writer)

    def to_bytes(self, *, wire: WireFormat = STREAM) -> bytes:
        """The complete packet (without the clusterer trailer)."""
        return self.to_writer(wire=wire).to_bytes()

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        """Refuse values the version cannot carry (subclasses call their base's first)."""
        if self.version not in self.VERSIONS:
            raise InvalidVersion(
                f"{type(self).__name__}: version {self.version} is not one of"
                f" {', '.join(map(str, sorted(self.VERSIONS)))}"
            )


def _layout(fields: Iterable[MessageField]) -> str:
    return "".join(field.code for field in fields)


def _named(
    reader: PacketReader, fields: tuple[MessageField, ...], values: tuple[Field, ...]
) -> dict[str, Any]:
    """``values`` by field name, text fields decoded (``BadFieldText`` names the field)."""
    named: dict[str, Any] = {}
    for position, (field, value) in enumerate(zip(fields, values, strict=True)):
        if field.type is not str:
            named[field.name] = value
            continue
        try:
            named[field.name] = value.decode() if isinstance(value, bytes) else value
        except UnicodeDecodeError as exc:
            _, at = reader.unpack_reader(_layout(fields[:position]))
            raise BadFieldText(
                f"field {at.index} ({field.name}) at byte offset {at.offset}: not UTF-8"
                f" text ({exc.reason} at byte {exc.start} of the value)",
                index=at.index,
                offset=at.offset,
            ) from None
    return named


def _expect_end(reader: PacketReader) -> None:
    if not reader.at_end:
        raise TrailingBytes(
            f"{len(reader.remaining)} bytes left after field {reader.index - 1}"
            " (a clusterer trailer not split off?)",
            index=reader.index,
            offset=reader.offset,
        )


# --- usrloc-contact-repl ----------------------------------------------------------------


class _Usrloc(_Variable):
    """A usrloc packet: the version field every one of them carries."""

    VERSIONS = USRLOC_VERSIONS


class _Matched(_Usrloc):
    """A usrloc packet that ends with a contact match: mode, then params when 2."""

    cmatch_mode: int = dataclasses.field(default=-1, kw_only=True)
    """A :class:`ContactMatch`: -1 in inserts, updates and single deletes."""
    cmatch_params: tuple[str, ...] = dataclasses.field(default=(), kw_only=True, metadata=LOCAL)
    """The contact URI params to match on, sent only when ``cmatch_mode`` is 2."""

    def _check(self) -> None:
        _Variable._check(self)
        if self.cmatch_params and self.cmatch_mode != ContactMatch.PARAMS:
            raise EncodeError(
                f"{type(self).__name__}: cmatch_params are sent only with cmatch_mode 2,"
                f" not {self.cmatch_mode}"
            )
        if not isinstance(self.cmatch_params, tuple):
            raise FieldTypeError(f"{type(self).__name__}.cmatch_params: a tuple of str")

    def _tail(self) -> Iterator[tuple[MessageField, str | bytes | int]]:
        if self.cmatch_mode != ContactMatch.PARAMS:
            return
        yield _int("cmatch_param_count"), len(self.cmatch_params)
        for index, param in enumerate(self.cmatch_params):
            yield _text(f"cmatch_param[{index}]"), param

    @classmethod
    def _read_tail(
        cls, reader: PacketReader, fixed: dict[str, Any]
    ) -> tuple[dict[str, Any], PacketReader]:
        if fixed["cmatch_mode"] != ContactMatch.PARAMS:
            return {}, reader
        count, rest = reader.pop_int()
        # Each param takes at least its length prefix: a larger count cannot be true.
        most = len(rest.remaining) // rest.wire.length.size
        if not 0 <= count <= most:
            raise TruncatedField(
                f"field {reader.index} (cmatch_param_count) at byte offset {reader.offset}:"
                f" {count} params cannot fit in the {len(rest.remaining)} bytes left",
                index=reader.index,
                offset=reader.offset,
            )
        fields = tuple(_text(f"cmatch_param[{index}]") for index in range(count))
        values, after = rest.unpack_reader(STR * count)
        named = _named(rest, fields, values)
        return {"cmatch_params": tuple(named.values())}, after


class AorInserted(_Usrloc, module=USRLOC_CAPABILITY, command=UsrlocPacket.AOR_INSERT):
    """A new address-of-record (REPL_URECORD_INSERT); also a sync chunk with is_contact 0."""

    domain: str
    """The usrloc table, e.g. ``location``."""
    aor: str
    label: int
    """The AoR's label within its hash slot (the contact ids' rlabel)."""
    next_clabel: int
    """The label the AoR's next contact gets."""
    kv_storage: str = ""
    """Key-value data kept with the AoR, JSON or empty (sent from version 5)."""

    def _check(self) -> None:
        _Variable._check(self)
        if self.version < 5 and self.kv_storage:
            raise EncodeError(f"AorInserted: kv_storage is not sent before version 5 ({self})")

    @classmethod
    def _wire_fields(cls, version: int) -> tuple[MessageField, ...]:
        return _AOR_FIELDS[: 5 if version >= 5 else 4]


_AOR_FIELDS = (
    _text("domain"),
    _text("aor"),
    _int("label"),
    _int("next_clabel"),
    _text("kv_storage"),
)


class AorDeleted(_Usrloc, module=USRLOC_CAPABILITY, command=UsrlocPacket.AOR_DELETE):
    """An address-of-record removed (REPL_URECORD_DELETE).

    ``Contact: *`` makes OpenSIPS send it twice: applying it twice must be harmless.
    """

    domain: str
    aor: str

    @classmethod
    def _wire_fields(cls, version: int) -> tuple[MessageField, ...]:
        return _AOR_FIELDS[:2]


class _ContactFields(_Matched, ContactRawValues):
    """What a contact insert and a contact update carry (in different orders)."""

    domain: str
    aor: str
    contact: str
    """The Contact URI."""
    contact_id: bytes
    """Raw ``ucontact_id`` (8 bytes): see :attr:`contact_id_value` and :attr:`contact_key`."""
    callid: str
    user_agent: str
    path: str
    attr: str
    received: str
    """Source address of the REGISTER when it differs from the contact (NAT)."""
    instance: str
    """``+sip.instance`` of the contact."""
    expires: bytes
    """Raw ``time_t`` (absolute unix time): see :attr:`expires_at`."""
    q: bytes
    """Raw ``qvalue_t`` (C int): see :attr:`q_value`."""
    sock: str
    """The receiving socket, e.g. ``udp:sipsock``."""
    cseq: int
    flags: int
    cflags: str | int = dataclasses.field(metadata=LOCAL)
    """Branch flags: their names joined by spaces (from version 4), a bitmask int before."""
    methods: int
    """Allowed methods bitmask; -1 for all."""
    last_modified: bytes
    """Raw ``time_t``: see :attr:`last_modified_at`."""
    kv_storage: str

    RAW_INTS = MappingProxyType(
        {
            "contact_id": "contact_id_value",
            "expires": "expires_at",
            "q": "q_value",
            "last_modified": "last_modified_at",
        }
    )

    def _check(self) -> None:
        _Matched._check(self)
        wanted = int if self.version <= 3 else str
        if type(self.cflags) is not wanted:
            raise FieldTypeError(
                f"{type(self).__name__}.cflags: {wanted.__name__} in version {self.version},"
                f" not {type(self.cflags).__name__}"
            )

    @property
    def contact_id_value(self) -> int:
        """``contact_id`` as an unsigned 64-bit int."""
        return _contact_id_int(self.contact_id)

    @property
    def contact_key(self) -> ContactId:
        """``contact_id`` split into AoR hash, rlabel and clabel."""
        return ContactId.from_bytes(self.contact_id)

    @classmethod
    def build(
        cls,
        *,
        aor: str,
        contact: str,
        contact_id: ContactId | int,
        expires_at: int,
        domain: str = "location",
        callid: str = "",
        user_agent: str = "",
        path: str = "",
        attr: str = "",
        received: str = "",
        instance: str = "",
        q_value: int = -1,
        sock: str = "",
        cseq: int = 1,
        flags: int = 0,
        cflags: str | int = "",
        methods: int = -1,
        last_modified_at: int = 0,
        kv_storage: str = "",
        cmatch_mode: int = ContactMatch.NONE,
        cmatch_params: tuple[str, ...] = (),
        version: int = _LATEST,
    ) -> Self:
        """A contact from decoded values; the raw C fields are packed as x86-64 does."""
        return cls(
            domain=domain,
            aor=aor,
            contact=contact,
            contact_id=int(contact_id).to_bytes(8, "little"),
            callid=callid,
            user_agent=user_agent,
            path=path,
            attr=attr,
            received=received,
            instance=instance,
            expires=c_time(expires_at),
            q=c_int(q_value),
            sock=sock,
            cseq=cseq,
            flags=flags,
            cflags=cflags,
            methods=methods,
            last_modified=c_time(last_modified_at),
            kv_storage=kv_storage,
            cmatch_mode=int(cmatch_mode),
            cmatch_params=cmatch_params,
            version=version,
        )


_INSERT_FIELDS = (
    *(_text(name) for name in ("domain", "aor", "contact")),
    _raw("contact_id"),
    *(_text(name) for name in ("callid", "user_agent", "path", "attr", "received", "instance")),
    _raw("expires"),
    _raw("q"),
    _text("sock"),
    _int("cseq"),
    _int("flags"),
    _text("cflags"),
    _int("methods"),
    _raw("last_modified"),
    _text("kv_storage"),
    _int("cmatch_mode"),
)
_UPDATE_FIELDS = (
    *(field for field in _INSERT_FIELDS[:-1] if field.name != "contact_id"),
    _INSERT_FIELDS[3],
    _INSERT_FIELDS[-1],
)


@cache
def _up_to_v3(fields: tuple[MessageField, ...]) -> tuple[MessageField, ...]:
    """``fields`` as version 3 sends them: cflags an int."""
    return tuple(_int("cflags") if field.name == "cflags" else field for field in fields)


class ContactInserted(
    _ContactFields, module=USRLOC_CAPABILITY, command=UsrlocPacket.CONTACT_INSERT
):
    """A new contact for an AoR (REPL_UCONTACT_INSERT); also a sync chunk with is_contact 1."""

    @classmethod
    def _wire_fields(cls, version: int) -> tuple[MessageField, ...]:
        return _INSERT_FIELDS if version > 3 else _up_to_v3(_INSERT_FIELDS)


class ContactUpdated(_ContactFields, module=USRLOC_CAPABILITY, command=UsrlocPacket.CONTACT_UPDATE):
    """A refreshed or changed contact (REPL_UCONTACT_UPDATE): contact_id after kv_storage."""

    @classmethod
    def _wire_fields(cls, version: int) -> tuple[MessageField, ...]:
        return _UPDATE_FIELDS if version > 3 else _up_to_v3(_UPDATE_FIELDS)


class ContactDeleted(_Matched, module=USRLOC_CAPABILITY, command=UsrlocPacket.CONTACT_DELETE):
    """A contact removed (REPL_UCONTACT_DELETE); ``cseq`` is the stored contact's."""

    domain: str
    aor: str
    contact: str
    callid: str
    cseq: int

    @classmethod
    def _wire_fields(cls, version: int) -> tuple[MessageField, ...]:
        return _DELETE_FIELDS


_DELETE_FIELDS = (
    _text("domain"),
    _text("aor"),
    _text("contact"),
    _text("callid"),
    _int("cseq"),
    _int("cmatch_mode"),
)


def usrloc_chunk(chunk: PacketReader) -> AorInserted | ContactInserted:
    """Decode one usrloc sync chunk: ``is_contact``, then an AoR or a contact insert body.

    ``chunk`` holds exactly the chunk's fields, framed as a packet whose version
    is the SYNC's data version (which chooses the layout); a chunk decodes to the
    same message the insert packet gives.
    """
    if chunk.index:
        chunk = chunk.rewind()
    is_contact, rest = chunk.pop_int()
    cls: type[AorInserted] | type[ContactInserted] = ContactInserted if is_contact else AorInserted
    message, rest = cls.read_fields(rest, chunk.version)
    _expect_end(rest)
    return message


def usrloc_chunk_body(message: Message) -> bytes:
    """The sync chunk of an AoR or contact insert: ``is_contact``, then its fields.

    What a donor sends for each item (OpenSIPS sends cmatch_mode 1 in chunks).
    """
    if not isinstance(message, (AorInserted, ContactInserted)):
        raise TypeError(
            f"a usrloc sync chunk holds an AorInserted or a ContactInserted,"
            f" not {type(message).__name__}"
        )
    writer = PacketWriter(USRLOC_CAPABILITY, 0, wire=STREAM, version=message.version)
    writer = message.push_to(writer.push_int(int(isinstance(message, ContactInserted))))
    return PacketReader.parse(writer.to_bytes(), wire=STREAM).fields


# --- dialog-prof-repl ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """One profile counter: the profile, its value when it has one, the sender's count."""

    profile: str
    has_value: int
    """Non-zero when the profile is kept per value (then ``value`` is sent)."""
    value: str
    count: int
    """How many dialogs the sending node has in the profile (with that value)."""

    @classmethod
    def of(cls, profile: str, count: int, value: str | None = None) -> ProfileEntry:
        """An entry for a profile without a value, or with ``value``."""
        return cls(profile, 0 if value is None else 1, value or "", count)


class ProfileCounters(_Variable, module=PROFILE_CAPABILITY, command=4):
    """A node's dialog profile counters (REPLICATION_DLG_PROFILE), sent every 200 ms."""

    VERSIONS = frozenset({4})

    entries: tuple[ProfileEntry, ...] = dataclasses.field(default=(), metadata=LOCAL)
    version: int = dataclasses.field(default=4, kw_only=True, metadata=LOCAL)
    """The layout version (4 from OpenSIPS 3.1 to 4.0)."""

    def _check(self) -> None:
        _Variable._check(self)
        if not isinstance(self.entries, tuple) or not all(
            isinstance(entry, ProfileEntry) for entry in self.entries
        ):
            raise FieldTypeError("ProfileCounters.entries: a tuple of ProfileEntry")

    @classmethod
    def _wire_fields(cls, version: int) -> tuple[MessageField, ...]:
        return ()

    @classmethod
    def _read_tail(
        cls, reader: PacketReader, fixed: dict[str, Any]
    ) -> tuple[dict[str, Any], PacketReader]:
        entries = []
        while not reader.at_end:
            values, after = reader.unpack_reader("si")
            profile, has_value = _named(reader, _ENTRY_HEAD, values).values()
            value = ""
            if has_value:
                raw, rest = after.pop_str()
                value = _named(after, _ENTRY_VALUE, (raw,))["value"]
                after = rest
            count, reader = after.pop_int()
            entries.append(ProfileEntry(profile, has_value, value, count))
        return {"entries": tuple(entries)}, reader

    def _tail(self) -> Iterator[tuple[MessageField, str | bytes | int]]:
        for index, entry in enumerate(self.entries):
            yield _text(f"entry[{index}].profile"), entry.profile
            yield _int(f"entry[{index}].has_value"), entry.has_value
            if entry.has_value:
                yield _text(f"entry[{index}].value"), entry.value
            yield _int(f"entry[{index}].count"), entry.count

    def counts(self) -> dict[tuple[str, str | None], int]:
        """The counters by (profile, value or None)."""
        return {
            (entry.profile, entry.value if entry.has_value else None): entry.count
            for entry in self.entries
        }


_ENTRY_HEAD = (_text("profile"), _int("has_value"))
_ENTRY_VALUE = (_text("value"),)


USRLOC_MESSAGES: Mapping[str, type[Message]] = MappingProxyType(
    {
        "usrloc.aor_inserted": AorInserted,
        "usrloc.aor_deleted": AorDeleted,
        "usrloc.contact_inserted": ContactInserted,
        "usrloc.contact_updated": ContactUpdated,
        "usrloc.contact_deleted": ContactDeleted,
    }
)
"""The usrloc messages by short name, for a :class:`~binif.messages.MessageRegistry`."""

PROFILE_MESSAGES: Mapping[str, type[Message]] = MappingProxyType(
    {"dialog.profile_counters": ProfileCounters}
)
"""The dialog profile message by short name."""

_VARIABLE: tuple[type[_Variable], ...] = (
    AorInserted,
    AorDeleted,
    ContactInserted,
    ContactUpdated,
    ContactDeleted,
    ProfileCounters,
)
for _cls in _VARIABLE:
    # What tools show of a class: the latest layout without a variable tail.
    _cls.FIELDS = _cls._wire_fields(_LATEST)
    _cls.LAYOUT = _layout(_cls.FIELDS)
