"""A location table (who is registered where) kept from replicated usrloc messages.

Feed :meth:`LocationTable.apply` every ``usrloc-contact-repl`` message a cluster
node receives (sync chunks included) and it holds what the OpenSIPS nodes hold,
applied as OpenSIPS's usrloc applies them: an update of a contact it does not
know inserts it, a delete of something already gone changes nothing (``Contact:
*`` sends the AoR delete twice), a change older than the stored one (lower CSeq,
same Call-ID) is ignored. Expiry is not replicated: each OpenSIPS node expires
contacts on its own timer, so the table does too, in :meth:`LocationTable.expire`
with the time given or read from the clock it was built with. Sans-I/O: nothing
here sleeps or schedules; an application calls ``expire`` on its own timer.

Contacts are compared as strings (OpenSIPS compares them as SIP URIs, so two
spellings of one URI are one contact there and two here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from .errors import EncodeError
from .opensips40_usrloc import (
    AorDeleted,
    AorInserted,
    ContactDeleted,
    ContactId,
    ContactInserted,
    ContactMatch,
    ContactUpdated,
)

__all__ = ["Binding", "Change", "ChangeKind", "LocationTable", "Record", "UsrlocMessage"]

UsrlocMessage = AorInserted | AorDeleted | ContactInserted | ContactUpdated | ContactDeleted
"""Every message a location table applies."""


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of an address-of-record, with its raw C values decoded."""

    domain: str
    aor: str
    contact: str
    callid: str
    cseq: int
    expires_at: int
    """Unix time the binding ends; 0 for a permanent one."""
    q: int
    """q-value times 1000 (0 to 1000), -1 when the REGISTER gave none."""
    user_agent: str
    received: str
    """The address the REGISTER came from when it is not the contact's (NAT)."""
    path: str
    instance: str
    sock: str
    attr: str
    cflags: str | int
    """Branch flag names (e.g. ``NAT``), an int bitmask from a version 3 sender."""
    flags: int
    methods: int
    last_modified: int
    contact_id: ContactId
    kv_storage: str

    @classmethod
    def from_message(cls, message: ContactInserted | ContactUpdated) -> Binding:
        """The binding a contact insert or update describes.

        Raises :class:`~binif.errors.BadRawValue` when a raw C value has a size no
        platform uses.
        """
        return cls(
            domain=message.domain,
            aor=message.aor,
            contact=message.contact,
            callid=message.callid,
            cseq=message.cseq,
            expires_at=message.expires_at,
            q=message.q_value,
            user_agent=message.user_agent,
            received=message.received,
            path=message.path,
            instance=message.instance,
            sock=message.sock,
            attr=message.attr,
            cflags=message.cflags,
            flags=message.flags,
            methods=message.methods,
            last_modified=message.last_modified_at,
            contact_id=message.contact_key,
            kv_storage=message.kv_storage,
        )

    def to_message(self, version: int = 5) -> ContactInserted:
        """The contact insert of this binding (``cmatch_mode`` 1, as in a sync chunk)."""
        return ContactInserted.build(
            domain=self.domain,
            aor=self.aor,
            contact=self.contact,
            contact_id=self.contact_id,
            callid=self.callid,
            user_agent=self.user_agent,
            path=self.path,
            attr=self.attr,
            received=self.received,
            instance=self.instance,
            expires_at=self.expires_at,
            q_value=self.q,
            sock=self.sock,
            cseq=self.cseq,
            flags=self.flags,
            cflags=_cflags_for(self.cflags, version),
            methods=self.methods,
            last_modified_at=self.last_modified,
            kv_storage=self.kv_storage,
            cmatch_mode=ContactMatch.CONTACT_CALLID,
            version=version,
        )

    def expires_in(self, now: float) -> float | None:
        """Seconds left at ``now`` (negative once expired); None for a permanent binding."""
        return None if self.expires_at == 0 else self.expires_at - now

    def expired(self, now: float) -> bool:
        """True once ``now`` has reached ``expires_at`` (never for a permanent binding)."""
        return 0 < self.expires_at <= now


def _cflags_for(cflags: str | int, version: int) -> str | int:
    """Branch flags as ``version`` carries them: none converts, names and bits do not."""
    if version <= 3:
        if isinstance(cflags, str) and cflags:
            raise EncodeError(f"branch flags {cflags!r} (names) cannot go in a version 3 packet")
        return cflags or 0
    if isinstance(cflags, int) and cflags:
        raise EncodeError(f"branch flags {cflags:#x} (bits) need a version 3 packet, not {version}")
    return cflags or ""


@dataclass(slots=True)
class Record:
    """An address-of-record and its bindings, highest q first (as OpenSIPS orders them)."""

    domain: str
    aor: str
    label: int = 0
    next_clabel: int = 0
    kv_storage: str = ""
    _bindings: list[Binding] = field(default_factory=list, repr=False)

    @property
    def bindings(self) -> tuple[Binding, ...]:
        """The registered contacts, highest q first, then in insertion order."""
        return tuple(self._bindings)

    def _find(self, contact: str, callid: str, mode: int, params: tuple[str, ...]) -> int | None:
        for index, binding in enumerate(self._bindings):
            if _matches(binding, contact, callid, mode, params):
                return index
        return None

    def _put(self, binding: Binding, at: int | None) -> None:
        if at is not None:
            del self._bindings[at]
        # Before the first of lower q: equal q keeps insertion order.
        where = next(
            (i for i, other in enumerate(self._bindings) if other.q < binding.q),
            len(self._bindings),
        )
        self._bindings.insert(where, binding)


def _uri_params(uri: str) -> dict[str, str]:
    """The ``;name=value`` params of a SIP URI (names lower-cased), before any headers."""
    uri = uri.split("?", 1)[0]
    params = {}
    for part in uri.split(";")[1:]:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip()
    return params


def _matches(
    binding: Binding, contact: str, callid: str, mode: int, params: tuple[str, ...]
) -> bool:
    if mode == ContactMatch.CONTACT_CALLID:
        return binding.contact == contact and binding.callid == callid
    if mode == ContactMatch.PARAMS:
        # RFC 3261 19.1.4, as OpenSIPS applies it: a param missing from either URI matches.
        ours, theirs = _uri_params(contact), _uri_params(binding.contact)
        return all(
            ours[name] == theirs[name]
            for name in (param.lower() for param in params)
            if name in ours and name in theirs
        )
    return binding.contact == contact


class ChangeKind(Enum):
    """What a message or an expiry did to the table."""

    AOR_ADDED = "aor_added"
    AOR_REMOVED = "aor_removed"
    CONTACT_ADDED = "contact_added"
    CONTACT_UPDATED = "contact_updated"
    CONTACT_REMOVED = "contact_removed"
    CONTACT_EXPIRED = "contact_expired"


@dataclass(frozen=True, slots=True)
class Change:
    """One change to the table, for an application to react to (redraw, notify, push)."""

    kind: ChangeKind
    domain: str
    aor: str
    binding: Binding | None = None
    """The binding added, updated (its new state), removed or expired."""


class LocationTable:
    """Registrations by (domain, AoR), kept from usrloc messages; see the module docstring.

    ``matching_mode`` is what a ``cmatch_mode`` of -1 means, as usrloc's
    ``matching_mode`` parameter: by contact alone (OpenSIPS's default) or by
    contact and Call-ID. ``clock`` gives the time :meth:`expire` uses when it is
    not given one.
    """

    def __init__(
        self,
        *,
        matching_mode: ContactMatch = ContactMatch.CONTACT_ONLY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if matching_mode not in (ContactMatch.CONTACT_ONLY, ContactMatch.CONTACT_CALLID):
            raise ValueError(
                f"matching_mode is CONTACT_ONLY or CONTACT_CALLID, not {matching_mode}"
            )
        self._records: dict[tuple[str, str], Record] = {}
        self._matching_mode = matching_mode
        self._clock = clock

    # --- reading ------------------------------------------------------------------------

    @property
    def records(self) -> Mapping[tuple[str, str], Record]:
        """Every AoR by (domain, aor), read-only."""
        return MappingProxyType(self._records)

    def get(self, aor: str, domain: str = "location") -> Record | None:
        """The AoR's record, or None."""
        return self._records.get((domain, aor))

    def lookup(self, aor: str, domain: str = "location") -> tuple[Binding, ...]:
        """The AoR's bindings, highest q first (none when it is not registered)."""
        record = self._records.get((domain, aor))
        return record.bindings if record is not None else ()

    def bindings(self) -> Iterator[Binding]:
        """Every binding of every AoR."""
        for record in self._records.values():
            yield from record._bindings

    def __len__(self) -> int:
        """The number of AoRs."""
        return len(self._records)

    @property
    def contact_count(self) -> int:
        """The number of bindings in all AoRs."""
        return sum(len(record._bindings) for record in self._records.values())

    # --- changing -----------------------------------------------------------------------

    def apply(self, message: UsrlocMessage) -> tuple[Change, ...]:
        """Apply one replicated message; return what it changed (nothing for a no-op).

        Raises ``TypeError`` for another message, and
        :class:`~binif.errors.BadRawValue` (before changing anything) for a
        contact whose raw C values have a size no platform uses.
        """
        if isinstance(message, (ContactInserted, ContactUpdated)):
            return self._put_contact(message)
        if isinstance(message, ContactDeleted):
            return self._delete_contact(message)
        if isinstance(message, AorInserted):
            return self._insert_aor(message)
        if isinstance(message, AorDeleted):
            return self._delete_aor(message.domain, message.aor)
        raise TypeError(f"a location table applies usrloc messages, not {type(message).__name__}")

    def expire(self, now: float | None = None) -> tuple[Change, ...]:
        """Remove the bindings expired at ``now`` (default: the clock), then emptied AoRs."""
        if now is None:
            now = self._clock()
        changes: list[Change] = []
        for key, record in list(self._records.items()):
            gone = [binding for binding in record._bindings if binding.expired(now)]
            if gone:
                record._bindings = [b for b in record._bindings if not b.expired(now)]
                changes += (
                    Change(ChangeKind.CONTACT_EXPIRED, record.domain, record.aor, binding)
                    for binding in gone
                )
            if not record._bindings:
                # As usrloc's timer: an AoR left without contacts goes.
                del self._records[key]
                changes.append(Change(ChangeKind.AOR_REMOVED, record.domain, record.aor))
        return tuple(changes)

    def sync_messages(self, version: int = 5) -> Iterator[AorInserted | ContactInserted]:
        """The table as a donor's SYNC carries it: each AoR, then its contacts.

        For ``binif.cluster.Node.provide``. Contacts go with ``cmatch_mode`` 1, as
        OpenSIPS sends them; ``version`` is the cluster's usrloc layout version.
        Raises :class:`~binif.errors.EncodeError` for branch flags the version
        cannot carry (names from a v4+ sender in v3, a bitmask from a v3 one in v5).
        """
        for record in self._records.values():
            kv_storage = record.kv_storage if version >= 5 else ""
            yield AorInserted(
                record.domain,
                record.aor,
                record.label,
                record.next_clabel,
                kv_storage,
                version=version,
            )
            for binding in record._bindings:
                yield binding.to_message(version)

    def clear(self) -> None:
        """Forget everything (before applying a fresh sync, for instance)."""
        self._records.clear()

    def _record(self, domain: str, aor: str, changes: list[Change]) -> Record:
        record = self._records.get((domain, aor))
        if record is None:
            record = self._records[(domain, aor)] = Record(domain, aor)
            changes.append(Change(ChangeKind.AOR_ADDED, domain, aor))
        return record

    def _insert_aor(self, message: AorInserted) -> tuple[Change, ...]:
        if (message.domain, message.aor) in self._records:
            return ()  # as OpenSIPS: an AoR it holds already is left as it is
        changes: list[Change] = []
        record = self._record(message.domain, message.aor, changes)
        record.label = message.label
        record.next_clabel = message.next_clabel
        record.kv_storage = message.kv_storage
        return tuple(changes)

    def _delete_aor(self, domain: str, aor: str) -> tuple[Change, ...]:
        record = self._records.pop((domain, aor), None)
        if record is None:
            return ()
        removed = [Change(ChangeKind.CONTACT_REMOVED, domain, aor, b) for b in record._bindings]
        return (*removed, Change(ChangeKind.AOR_REMOVED, domain, aor))

    def _mode(self, cmatch_mode: int) -> int:
        return self._matching_mode if cmatch_mode == ContactMatch.NONE else cmatch_mode

    def _put_contact(self, message: ContactInserted | ContactUpdated) -> tuple[Change, ...]:
        binding = Binding.from_message(message)
        changes: list[Change] = []
        record = self._record(message.domain, message.aor, changes)
        if changes:
            record.label = binding.contact_id.rlabel
        mode = self._mode(message.cmatch_mode)
        at = record._find(binding.contact, binding.callid, mode, message.cmatch_params)
        if at is not None:
            old = record._bindings[at]
            if old.callid == binding.callid and binding.cseq < old.cseq:
                return tuple(changes)  # older than what the table holds
        record._put(binding, at)
        kind = ChangeKind.CONTACT_ADDED if at is None else ChangeKind.CONTACT_UPDATED
        changes.append(Change(kind, record.domain, record.aor, binding))
        return tuple(changes)

    def _delete_contact(self, message: ContactDeleted) -> tuple[Change, ...]:
        record = self._records.get((message.domain, message.aor))
        if record is None:
            return ()
        mode = self._mode(message.cmatch_mode)
        at = record._find(message.contact, message.callid, mode, message.cmatch_params)
        if at is None:
            return ()
        binding = record._bindings.pop(at)
        return (Change(ChangeKind.CONTACT_REMOVED, record.domain, record.aor, binding),)
