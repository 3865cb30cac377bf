"""Typed messages: one (module, command) layout declared once, decoded and built both ways.

BIN fields are untyped on the wire, so a receiver must know the order and type
of every field. A :class:`Message` subclass states it once, as annotations::

    class DialogDeleted(Message, module="dialog", command=3):
        callid: str
        from_tag: str
        to_tag: str

The class becomes a frozen dataclass whose layout (``"sss"``) comes from the
annotations: ``str`` is a str field decoded as UTF-8, ``bytes`` a str field
kept raw, ``int`` an int field. An instance has one slot, the tuple of its
values; each field is a read-only property over it (see :class:`_MessageMeta`
for why). ``from_packet`` decodes with the reader's
bulk path and rejects leftover bytes; ``to_writer`` and ``bytes()`` build the
packet. A subclass without ``module``/``command`` is a reusable set of fields.

In the stream profile a packet carries the version of its layout: a class
declares it with ``version=`` and refuses a packet of another version
(:class:`~binif.errors.BadVersion`); :class:`StreamMessage` subclasses build
and parse in :data:`~binif.wire.STREAM` by default::

    class DialogDeleted(StreamMessage, module="dialog-dlg-repl", command=3, version=4):
        ...
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Self, cast, dataclass_transform

from .errors import (
    BadFieldText,
    BadVersion,
    DecodeError,
    FieldTypeError,
    IntOutOfRange,
    LayoutError,
    MessageMismatch,
)
from .layout import INT, STR, compile_layout
from .reader import PacketReader
from .wire import DATAGRAM, STREAM, WireFormat
from .writer import INT16_MAX, INT16_MIN, INT32_MAX, INT32_MIN, PacketWriter

__all__ = ["LOCAL", "Message", "MessageField", "MessageRegistry", "StreamMessage"]

LOCAL: Mapping[str, object] = MappingProxyType({"binif": "local"})
"""``dataclasses.field(metadata=LOCAL)``: a value of the message that is no fixed field.

Such fields (a version, a variable tail of the packet) are left out of ``FIELDS``
and ``LAYOUT``; the class that declares them reads and writes them itself.
"""

_CODES: dict[object, tuple[str, type]] = {
    str: (STR, str),
    "str": (STR, str),
    bytes: (STR, bytes),
    "bytes": (STR, bytes),
    int: (INT, int),
    "int": (INT, int),
}


class MessageField(NamedTuple):
    """One field of a message layout, in wire order."""

    name: str
    """The dataclass attribute that holds the value."""
    code: str
    """Its wire kind: ``"s"`` (str field) or ``"i"`` (int field)."""
    type: type
    """Its Python type: ``str`` (UTF-8 text), ``bytes`` (raw) or ``int``."""

    @property
    def default(self) -> str | bytes | int:
        """The value an unset field takes: empty or zero."""
        return cast("str | bytes | int", self.type())


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
class _MessageMeta(type):
    """Turns each :class:`Message` subclass into a frozen dataclass with a layout.

    An instance keeps its values in one tuple, in the order of
    ``dataclasses.fields``, and each field is a read-only property over it.
    Python's garbage collector stops tracking a tuple of str, bytes and int, so
    a kept message costs a collection one object to visit, not one per field:
    over 200,000 dialog CREATED messages a full collection took 41 ms, against
    100 ms with a slot per field, which overflowed a socket taking 64,000
    packets/s. Reading a field costs about 50 ns instead of 11 (Python 3.11).
    ``make bench-typed`` measures both.
    """

    def __new__(
        mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> _MessageMeta:
        if not bases:  # Message itself decodes nothing: from_packet says so
            root = super().__new__(mcls, name, bases, namespace, **kwargs)
            root._by_head = {}
            return root
        if "__init__" in namespace:
            raise LayoutError(
                f"{name}: a message's __init__ is generated from its fields"
                " (build other ways in a classmethod)"
            )
        namespace.setdefault("__slots__", ())
        for field_name in namespace.get("__annotations__", {}):
            # A field declared again without a default would take the base's
            # property as its default: declare it plainly.
            if field_name not in namespace and any(
                field_name in getattr(base, "__dataclass_fields__", {}) for base in bases
            ):
                namespace[field_name] = dataclasses.field()
        cls = super().__new__(mcls, name, bases, namespace, **kwargs)
        made = cast(_MessageMeta, dataclasses.dataclass(frozen=True, eq=False)(cls))
        every = dataclasses.fields(made)  # type: ignore[arg-type]
        for index, field in enumerate(every):
            if field.name == "_values":
                raise LayoutError(f"{name}._values: the name of the slot that holds the values")
            if not field.init:
                raise LayoutError(f"{name}.{field.name}: a message field is set by __init__")
            setattr(made, field.name, _field_property(index, field.name))
        made.__init__ = _compile_init(made, every)  # type: ignore[misc]
        made._EQ = _subset((i for i, field in enumerate(every) if field.compare), len(every))
        made._HASH = _subset(
            (
                i
                for i, field in enumerate(every)
                if (field.compare if field.hash is None else field.hash)
            ),
            len(every),
        )
        fields = []
        wire_indexes = []
        for index, field in enumerate(every):
            if field.metadata.get("binif") == "local":
                continue
            try:
                code, kind = _CODES[field.type]
            except (KeyError, TypeError):
                raise LayoutError(
                    f"{name}.{field.name}: a message field is str, bytes or int, not {field.type!r}"
                ) from None
            fields.append(MessageField(field.name, code, kind))
            wire_indexes.append(index)
        made.FIELDS = tuple(fields)
        made.LAYOUT = "".join(field.code for field in fields)
        made._TEXT = tuple(i for i, field in enumerate(fields) if field.type is str)
        made._WIRE = _subset(wire_indexes, len(every))
        made._decoders = {}
        made._by_head = {}
        return made

    # Set on every class by __new__ (declared for mypy).
    FIELDS: tuple[MessageField, ...]
    LAYOUT: str
    _TEXT: tuple[int, ...]
    _WIRE: tuple[int, ...] | None
    _EQ: tuple[int, ...] | None
    _HASH: tuple[int, ...] | None
    _decoders: dict[WireFormat, _Decoder]
    _by_head: dict[object, tuple[_Decoder, int]]


_HEADS_KEPT = 64
"""Kinds of packet (heads) and wire formats each message class keeps a decoder for."""

_Decoder = Callable[[bytes, int], Any]
"""A generated decoder: (packet, offset of the first field) -> instance, or None."""


def _subset(indexes: Iterable[int], count: int) -> tuple[int, ...] | None:
    """Some of a message's ``count`` values, by position; None when that is all of them."""
    chosen = tuple(indexes)
    return None if len(chosen) == count else chosen


def _pick(values: tuple[Any, ...], where: tuple[int, ...] | None) -> tuple[Any, ...]:
    """The values at the positions ``where`` (all of them when None)."""
    return values if where is None else tuple(values[index] for index in where)


def _field_property(index: int, name: str) -> property:
    """The read-only attribute ``name``: item ``index`` of the instance's values."""

    def get(self: Message, index: int = index) -> Any:
        return self._values[index]

    get.__name__ = get.__qualname__ = name
    return property(get)


def _restore(cls: type[Message], values: tuple[Any, ...]) -> Message:
    """An instance of ``cls`` holding ``values`` (pickle and copy call this)."""
    message = object.__new__(cls)
    _set_values(message, values)
    return message


def _compile_init(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """``__init__`` with the signature dataclasses gives ``cls``, storing one tuple.

    Parameters in field order, keyword-only ones after ``*``, defaults and
    default factories as declared, then ``__post_init__`` when the class has one.
    """
    namespace: dict[str, Any] = {"_binif_set_values": _set_values, "_binif_factory": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for field in fields:
        parameter = field.name
        if field.default is not dataclasses.MISSING:
            namespace[f"_binif_default_{field.name}"] = field.default
            parameter += f"=_binif_default_{field.name}"
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_binif_make_{field.name}"] = field.default_factory
            parameter += "=_binif_factory"
            body.append(
                f"    if {field.name} is _binif_factory: {field.name} = _binif_make_{field.name}()"
            )
        (keyword if field.kw_only else positional).append(parameter)
    parameters = ["self", *positional, *(["*", *keyword] if keyword else [])]
    values = "".join(f"{field.name}, " for field in fields)
    body.append(f"    _binif_set_values(self, ({values}))")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    exec(f"def __init__({', '.join(parameters)}):\n" + "\n".join(body), namespace)
    init = cast("Callable[..., None]", namespace["__init__"])
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init


class _Factory:
    """The default of a parameter whose field has a default factory."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _compile_decoder(cls: _MessageMeta, wire: WireFormat) -> _Decoder:
    """One function that decodes ``cls``'s layout in ``wire``, straight-line.

    Generated per class and wire format (as dataclasses generates ``__init__``):
    each field is read at its place in the code and decoded into a local, and
    the instance is made around the tuple of them, with no loop and no
    per-field call. A field outside the layout takes its default. It returns
    None when the packet does not fit the layout, and raises ``struct.error``
    or ``UnicodeDecodeError``; ``from_packet`` then names the precise error
    the slow way. A str field past the end needs no check of its own: lengths
    are never negative, so the position only grows and the next read raises
    or the final length check refuses the packet.
    """
    namespace: dict[str, Any] = {
        "new": object.__new__,
        "set_values": _set_values,
        "cls": cls,
        "unpack_length": wire.length.unpack_from,
    }
    lines = ["def decode(data, pos):"]
    fields = iter(cls.FIELDS)
    for step_index, step in enumerate(compile_layout(cls.LAYOUT, wire.int32.format[0])):
        if step is None:
            field = next(fields)
            value = "data[start:pos].decode()" if field.type is str else "data[start:pos]"
            lines += [
                "    (n,) = unpack_length(data, pos)",
                f"    start = pos + {wire.length.size}",
                "    pos = start + n",
                "    if n < 0:",
                "        return None",
                f"    {_local(field.name)} = {value}",
            ]
        else:
            run = [next(fields) for _ in range(step.size // wire.int32.size)]
            namespace[f"ints{step_index}"] = step.unpack_from
            targets = "".join(f"{_local(field.name)}, " for field in run)
            lines += [f"    {targets}= ints{step_index}(data, pos)", f"    pos += {step.size}"]
    values = []
    for declared in dataclasses.fields(cls):  # type: ignore[arg-type]
        if declared.metadata.get("binif") != "local":
            values.append(_local(declared.name))
        elif declared.default is not dataclasses.MISSING:
            namespace[f"default_{declared.name}"] = declared.default
            values.append(f"default_{declared.name}")
        elif declared.default_factory is not dataclasses.MISSING:
            namespace[f"make_{declared.name}"] = declared.default_factory
            values.append(f"make_{declared.name}()")
        else:
            raise LayoutError(
                f"{cls.__name__}.{declared.name}: a field outside the layout needs a default"
                " (or the class its own from_packet)"
            )
    lines += [
        "    if pos != len(data):",
        "        return None",
        "    self = new(cls)",
        f"    set_values(self, ({''.join(f'{value}, ' for value in values)}))",
        "    return self",
    ]
    exec("\n".join(lines), namespace)
    return cast(_Decoder, namespace["decode"])


def _local(name: str) -> str:
    """The generated code's local for a field: no field name can shadow its own names."""
    return f"field_{name}"


class Message(metaclass=_MessageMeta):
    """Base of typed messages: subclass with ``module=`` and ``command=`` and annotate fields."""

    __slots__ = ("_values",)  # every field's value, in the order of ``dataclasses.fields``

    if TYPE_CHECKING:  # the slot, declared without making it a dataclass field

        @property
        def _values(self) -> tuple[Any, ...]: ...

    MODULE: ClassVar[str]
    """The module name the message is addressed to."""
    COMMAND: ClassVar[int]
    """The packet type within the module."""
    VERSION: ClassVar[int | None] = None
    """The layout version the packet carries (stream profile), or None for none."""
    FIELDS: ClassVar[tuple[MessageField, ...]] = ()
    """The fields in wire order, derived from the annotations."""
    LAYOUT: ClassVar[str] = ""
    """The layout string (``s``/``i`` per field) the codec reads and writes."""
    _WIRE: ClassVar[tuple[int, ...] | None] = None
    """Where the wire fields sit among the values; None when they are all of them."""
    _EQ: ClassVar[tuple[int, ...] | None] = None
    """The values ``==`` compares (``compare=True``); None for all of them."""
    _HASH: ClassVar[tuple[int, ...] | None] = None
    """The values ``hash`` takes, as a frozen dataclass picks them; None for all."""
    RAW_INTS: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """bytes fields that hold a raw C integer, each with the property decoding it.

    Tools (the CLI, the Wireshark dissector) show those values as numbers too.
    """

    def __init_subclass__(
        cls,
        *,
        module: str | None = None,
        command: int | None = None,
        version: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if (module is None) != (command is None):
            raise TypeError(f"{cls.__name__}: give both module= and command=, or neither")
        if version is not None:
            if module is None:
                raise TypeError(f"{cls.__name__}: version= goes with module= and command=")
            if type(version) is not int or not INT16_MIN <= version <= INT16_MAX:
                raise TypeError(f"{cls.__name__}: version must be a signed 16-bit int")
            cls.VERSION = version
        if module is not None and command is not None:
            if not isinstance(module, str) or not module:
                raise TypeError(f"{cls.__name__}: module must be a non-empty str")
            if not isinstance(command, int) or not INT32_MIN <= command <= INT32_MAX:
                raise TypeError(f"{cls.__name__}: command must be a signed 32-bit int")
            cls.MODULE = module
            cls.COMMAND = command

    # --- decoding -------------------------------------------------------------------

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Self:
        """Decode the fields of ``reader``'s packet, which must be exactly this layout.

        Raises :class:`~binif.errors.MessageMismatch` for another module or command,
        :class:`~binif.errors.BadVersion` when the class declares a version and
        the packet carries another (or none), and the codec's precise errors
        otherwise: ``TruncatedField``, ``BadFieldLength``, ``TrailingBytes``,
        and ``BadFieldText`` for a text field that is not UTF-8.
        """
        # Readers of one kind of packet (module, command, version, wire) share
        # one decoded head: a head this class has checked once maps straight
        # to its decoder and the offset of the first field.
        found = cls._by_head.get(reader._head)
        decode, offset = cls._decoder_for(reader) if found is None else found
        try:
            message = decode(reader._data, offset)
        except (struct.error, UnicodeDecodeError):
            message = None
        if message is None:
            raise cls._decode_error(reader.rewind())
        return cast(Self, message)

    @classmethod
    def _decoder_for(cls, reader: PacketReader) -> tuple[_Decoder, int]:
        """Check a kind of packet not seen yet (raises) and remember its decoder."""
        cls.check_packet(reader)
        wire = reader.wire
        decode = cls._decoders.get(wire)
        if decode is None:
            decode = _compile_decoder(cls, wire)
            if len(cls._decoders) < _HEADS_KEPT:
                cls._decoders[wire] = decode
        found = (decode, reader.fields_offset)
        if len(cls._by_head) < _HEADS_KEPT:
            cls._by_head[reader._head] = found
        return found

    @classmethod
    def check_packet(cls, reader: PacketReader) -> None:
        """Refuse a packet of another module or command, or of another version.

        The checks :meth:`from_packet` makes before reading a field; a class
        that reads its fields itself makes them first too.
        """
        try:
            mismatch = reader.command != cls.COMMAND or reader.module != cls.MODULE
        except AttributeError:
            raise TypeError(
                f"{cls.__name__} is a set of fields: decode with a subclass that has"
                " module= and command="
            ) from None
        if mismatch:
            raise MessageMismatch(
                f"{cls.__name__} is {cls.MODULE}/{cls.COMMAND},"
                f" the packet is {reader.module}/{reader.command}"
            )
        if cls.VERSION is not None and reader.version != cls.VERSION:
            raise BadVersion(
                f"{cls.__name__} reads {cls.MODULE}/{cls.COMMAND} version {cls.VERSION},"
                f" the packet is version {reader.version}"
            )

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, *, wire: WireFormat = DATAGRAM
    ) -> Self:
        """Parse and decode one packet (``PacketReader.parse`` then :meth:`from_packet`)."""
        return cls.from_packet(PacketReader.parse(data, wire=wire))

    @classmethod
    def _decode_error(cls, reader: PacketReader) -> DecodeError:
        """The precise error for a packet the generated decoder refused."""
        values = reader.unpack(cls.LAYOUT, exact=True)  # raises the structural errors
        for index in cls._TEXT:
            try:
                cast(bytes, values[index]).decode()
            except UnicodeDecodeError as exc:
                _, at = reader.unpack_reader(cls.LAYOUT[:index])
                name = cls.FIELDS[index].name
                return BadFieldText(
                    f"field {at.index} ({name}) at byte offset {at.offset}: not UTF-8 text"
                    f" ({exc.reason} at byte {exc.start} of the value)",
                    index=at.index,
                    offset=at.offset,
                )
        raise AssertionError(f"{cls.__name__}: the decoder failed on a packet that fits")

    # --- encoding -------------------------------------------------------------------

    def values(self) -> tuple[str | bytes | int, ...]:
        """The field values in wire order."""
        return _pick(self._values, self._WIRE)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        where = self._EQ
        if where is None:
            return self._values == other._values
        return _pick(self._values, where) == _pick(other._values, where)

    def __hash__(self) -> int:
        return hash(_pick(self._values, self._HASH))

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self._values)

    def items(self) -> Iterator[tuple[MessageField, str | bytes | int]]:
        """Each field with its value, in wire order."""
        return zip(self.FIELDS, self.values(), strict=True)

    def to_writer(self, *, wire: WireFormat = DATAGRAM) -> PacketWriter:
        """A writer holding this message's module, command, version and fields.

        A class with a version is built in a profile that carries one, a class
        without in one that does not (``InvalidVersion`` otherwise).
        """
        values = self.values()
        try:
            writer = PacketWriter(self.MODULE, self.COMMAND, wire=wire, version=self.VERSION)
            return writer.pack(self.LAYOUT, *values)
        except (FieldTypeError, IntOutOfRange) as exc:
            for field, value in zip(self.FIELDS, values, strict=True):
                if not _fits(field, value):
                    raise type(exc)(f"{type(self).__name__}.{field.name}: {exc}") from None
            raise

    def to_bytes(self, *, wire: WireFormat = DATAGRAM) -> bytes:
        """The complete packet, ready to send."""
        return self.to_writer(wire=wire).to_bytes()

    def __bytes__(self) -> bytes:
        return self.to_writer().to_bytes()

    @classmethod
    def with_defaults(cls, **values: str | bytes | int) -> Self:
        """An instance where every field not given is empty (str/bytes) or 0 (int)."""
        known = {field.name for field in cls.FIELDS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        return cls(**{field.name: values.get(field.name, field.default) for field in cls.FIELDS})


_set_values: Callable[[Message, tuple[Any, ...]], None] = Message.__dict__["_values"].__set__


class StreamMessage(Message):
    """A message of the stream profile: built and parsed in :data:`~binif.wire.STREAM` by default.

    Subclass with ``module=``, ``command=`` and ``version=``; the version goes
    in the header of every packet built and must be the one of every packet
    decoded.
    """

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, wire: WireFormat = STREAM) -> Self:
        """Parse and decode one packet (``PacketReader.parse`` then :meth:`from_packet`)."""
        return cls.from_packet(PacketReader.parse(data, wire=wire))

    def to_writer(self, *, wire: WireFormat = STREAM) -> PacketWriter:
        """A writer holding this message's module, command, version and fields."""
        return Message.to_writer(self, wire=wire)

    def to_bytes(self, *, wire: WireFormat = STREAM) -> bytes:
        """The complete packet, ready to send."""
        return self.to_writer(wire=wire).to_bytes()

    def __bytes__(self) -> bytes:
        return self.to_writer().to_bytes()


def _fits(field: MessageField, value: object) -> bool:
    if field.code == INT:
        return isinstance(value, int) and INT32_MIN <= value <= INT32_MAX
    return value is None or isinstance(value, (str, bytes, bytearray, memoryview))


class MessageRegistry(Mapping[tuple[str, int], type[Message]]):
    """Message classes by ``(module, command)``, each also known by a short name.

    A ``Mapping`` from ``(module, command)`` to the class; ``by_name`` looks up
    names such as ``"dialog.created"``; :meth:`decode` picks the class for a packet.
    """

    def __init__(self, named: Mapping[str, type[Message]] | None = None) -> None:
        self._by_key: dict[tuple[str, int], type[Message]] = {}
        self._by_name: dict[str, type[Message]] = {}
        self._names: dict[type[Message], str] = {}
        for name, cls in (named or {}).items():
            self.add(name, cls)

    def add(self, name: str, cls: type[Message]) -> None:
        """Register ``cls`` under its (module, command) and ``name``."""
        key = (cls.MODULE, cls.COMMAND)
        if key in self._by_key:
            raise ValueError(f"{key[0]}/{key[1]} is already {self._by_key[key].__name__}")
        if name in self._by_name:
            raise ValueError(f"the name {name!r} is already {self._by_name[name].__name__}")
        self._by_key[key] = cls
        self._by_name[name] = cls
        self._names[cls] = name

    def __getitem__(self, key: tuple[str, int]) -> type[Message]:
        return self._by_key[key]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def by_name(self, name: str) -> type[Message]:
        """The class registered as ``name``; ``KeyError`` lists the known names."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no message named {name!r}; known: {', '.join(sorted(self._by_name))}"
            ) from None

    def name_of(self, cls: type[Message]) -> str:
        """The short name ``cls`` is registered under."""
        return self._names[cls]

    @property
    def names(self) -> Mapping[str, type[Message]]:
        """Every registered class by short name."""
        return dict(self._by_name)

    def decode(self, reader: PacketReader) -> Message | None:
        """The packet decoded by its registered class, or None when none is registered.

        Raises :class:`~binif.errors.DecodeError` when the class does not fit the packet.
        """
        cls = self._by_key.get((reader.module, reader.command))
        if cls is None:
            return None
        return cls.from_packet(reader)
