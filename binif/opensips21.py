"""The packets of OpenSIPS 2.1's dialog and usrloc modules, as typed messages.

Field names and order follow the packets captured from OpenSIPS 2.1.5 (see
``tests/vectors/opensips-2.1/manifest.json``). usrloc sends ``expires``,
``q`` and ``last_modified`` as raw C values inside str fields, so their size
depends on the sender's platform: they stay ``bytes``, and properties decode
them as the little-endian integers an x86-64 or arm64 sender writes.
"""

from __future__ import annotations

from enum import IntEnum
from types import MappingProxyType

from .errors import BadRawValue, FieldTypeError, IntOutOfRange
from .messages import Message, MessageRegistry

__all__ = [
    "OPENSIPS21",
    "ContactRawValues",
    "DialogCommand",
    "DialogCreated",
    "DialogDeleted",
    "DialogState",
    "DialogUpdated",
    "UsrlocCommand",
    "UsrlocContactDeleted",
    "UsrlocContactInserted",
    "UsrlocContactUpdated",
    "UsrlocRecordDeleted",
    "UsrlocRecordInserted",
    "c_int",
    "c_time",
    "lookup",
]


class DialogCommand(IntEnum):
    """Commands of the ``dialog`` module (REPLICATION_DLG_*)."""

    CREATED = 1
    UPDATED = 2
    DELETED = 3


class UsrlocCommand(IntEnum):
    """Commands of the ``ul`` (usrloc) module (REPL_URECORD_* / REPL_UCONTACT_*)."""

    RECORD_INSERT = 1
    RECORD_DELETE = 2
    CONTACT_INSERT = 3
    CONTACT_UPDATE = 4
    CONTACT_DELETE = 5


class DialogState(IntEnum):
    """Values of a dialog's ``state`` field."""

    UNCONFIRMED = 1
    EARLY = 2
    CONFIRMED_NA = 3
    CONFIRMED = 4
    DELETED = 5


# --- dialog -------------------------------------------------------------------------


class DialogFields(Message):
    """The 25 fields OpenSIPS 2.1 sends when a dialog is created or updated."""

    callid: str
    from_tag: str
    to_tag: str
    from_uri: str
    to_uri: str
    h_id: int
    start_ts: int
    """Unix time the dialog started."""
    state: int
    """A :class:`DialogState` value."""
    caller_sock: str
    callee_sock: str
    caller_r_cseq: str
    callee_r_cseq: str
    caller_route_set: str
    callee_route_set: str
    caller_contact: str
    callee_contact: str
    callee_from_uri: str
    callee_to_uri: str
    vars: str
    """``name#value|`` pairs, ``\\``, ``#`` and ``|`` escaped by a backslash."""
    profiles: str
    """``name#value|`` pairs like ``vars``."""
    user_flags: int
    flags: int
    timeout: int
    """Absolute unix time the dialog expires."""
    caller_last_gen_cseq: int
    callee_last_gen_cseq: int


class DialogCreated(DialogFields, module="dialog", command=DialogCommand.CREATED):
    """A dialog was confirmed (sent after the 200 OK is relayed)."""


class DialogUpdated(DialogFields, module="dialog", command=DialogCommand.UPDATED):
    """A dialog changed (sent on the ACK, for instance)."""


class DialogDeleted(Message, module="dialog", command=DialogCommand.DELETED):
    """A dialog ended (BYE or expiry)."""

    callid: str
    from_tag: str
    to_tag: str


# --- usrloc -------------------------------------------------------------------------


def c_time(value: int) -> bytes:
    """``value`` as the 8-byte little-endian ``time_t`` usrloc carries in a str field.

    Raises :class:`~binif.errors.IntOutOfRange` outside the signed 64-bit range
    and :class:`~binif.errors.FieldTypeError` for a value that is not an int.
    """
    return _to_c(value, 8, "c_time")


def c_int(value: int) -> bytes:
    """``value`` as the 4-byte little-endian C ``int`` usrloc carries in a str field.

    Raises :class:`~binif.errors.IntOutOfRange` outside the signed 32-bit range
    and :class:`~binif.errors.FieldTypeError` for a value that is not an int.
    """
    return _to_c(value, 4, "c_int")


def _to_c(value: int, size: int, name: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldTypeError(f"{name}() takes an int, not {type(value).__name__} {value!r}")
    try:
        return value.to_bytes(size, "little", signed=True)
    except OverflowError:
        bits = size * 8
        raise IntOutOfRange(
            f"{name}({value}): outside the signed {bits}-bit range"
            f" [{-(2 ** (bits - 1))}, {2 ** (bits - 1) - 1}]"
        ) from None


def _from_c(raw: bytes, name: str) -> int:
    if len(raw) not in (4, 8):
        raise BadRawValue(f"{name}: {len(raw)} raw bytes, not a 4- or 8-byte C integer")
    return int.from_bytes(raw, "little", signed=True)


class UsrlocRecordFields(Message):
    """An address-of-record in a usrloc table."""

    domain: str
    """The usrloc table, e.g. ``location``."""
    aor: str


class UsrlocRecordInserted(UsrlocRecordFields, module="ul", command=UsrlocCommand.RECORD_INSERT):
    """A new address-of-record (REPL_URECORD_INSERT)."""


class UsrlocRecordDeleted(UsrlocRecordFields, module="ul", command=UsrlocCommand.RECORD_DELETE):
    """An address-of-record released after its last contact went (REPL_URECORD_DELETE)."""


class ContactRawValues:
    """The raw C values of a usrloc contact, decoded (OpenSIPS 2.1 to 4.0 send them alike)."""

    __slots__ = ()

    expires: bytes
    q: bytes
    last_modified: bytes

    @property
    def expires_at(self) -> int:
        """``expires`` as a unix time (little-endian int64, or int32 from a 32-bit host)."""
        return _from_c(self.expires, "expires")

    @property
    def q_value(self) -> int:
        """``q`` as an int: 0 to 1000 for q=0.000 to 1.000, -1 when unspecified."""
        return _from_c(self.q, "q")

    @property
    def last_modified_at(self) -> int:
        """``last_modified`` as a unix time."""
        return _from_c(self.last_modified, "last_modified")


class UsrlocContactFields(Message, ContactRawValues):
    """The 17 fields of a usrloc contact insert or update."""

    domain: str
    aor: str
    contact: str
    callid: str
    user_agent: str
    path: str
    attr: str
    received: str
    instance: str
    expires: bytes
    """Raw ``time_t``: see :attr:`expires_at`."""
    q: bytes
    """Raw ``qvalue_t`` (C int): see :attr:`q_value`."""
    sock: str
    cseq: int
    flags: int
    cflags: int
    methods: int
    last_modified: bytes
    """Raw ``time_t``: see :attr:`last_modified_at`."""

    RAW_INTS = MappingProxyType(
        {"expires": "expires_at", "q": "q_value", "last_modified": "last_modified_at"}
    )


class UsrlocContactInserted(UsrlocContactFields, module="ul", command=UsrlocCommand.CONTACT_INSERT):
    """A new contact for an address-of-record (REPL_UCONTACT_INSERT)."""


class UsrlocContactUpdated(UsrlocContactFields, module="ul", command=UsrlocCommand.CONTACT_UPDATE):
    """A refreshed or changed contact (REPL_UCONTACT_UPDATE)."""


class UsrlocContactDeleted(Message, module="ul", command=UsrlocCommand.CONTACT_DELETE):
    """A contact removed (REPL_UCONTACT_DELETE); ``cseq`` is the stored contact's."""

    domain: str
    aor: str
    contact: str
    callid: str
    cseq: int


OPENSIPS21 = MessageRegistry(
    {
        "dialog.created": DialogCreated,
        "dialog.updated": DialogUpdated,
        "dialog.deleted": DialogDeleted,
        "ul.record_inserted": UsrlocRecordInserted,
        "ul.record_deleted": UsrlocRecordDeleted,
        "ul.contact_inserted": UsrlocContactInserted,
        "ul.contact_updated": UsrlocContactUpdated,
        "ul.contact_deleted": UsrlocContactDeleted,
    }
)
"""Every built-in OpenSIPS 2.1 message, by (module, command) and by short name."""


def lookup(module: str, command: int) -> type[Message] | None:
    """The built-in message class for ``module``/``command``, or None."""
    return OPENSIPS21.get((module, command))
