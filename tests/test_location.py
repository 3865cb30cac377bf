"""The location table (binif.location) kept from the usrloc packets of two OpenSIPS 4.0.1
nodes, replayed in the order they were captured, and from crafted messages."""

from __future__ import annotations

import dataclasses

import pytest
from usrloc_helpers import FOLDER, captured
from vectors import load

from binif import BadRawValue, EncodeError
from binif.location import Change, ChangeKind, LocationTable
from binif.opensips40_usrloc import (
    AorDeleted,
    AorInserted,
    ContactDeleted,
    ContactId,
    ContactInserted,
    ContactMatch,
    ContactUpdated,
    ProfileCounters,
)

CAPTURED = load(FOLDER, key="packets")
T0 = 1795903200  # the rig's clock after the registrations


def replay() -> tuple[LocationTable, list[tuple[str, tuple[Change, ...]]]]:
    """Every captured usrloc packet applied in capture order (the sync aside)."""
    table = LocationTable()
    steps = []
    for vector in sorted(CAPTURED, key=lambda vector: vector.entry["frame"]):
        if vector.entry["capability"] == "usrloc-contact-repl":
            steps.append((vector.name, table.apply(captured(vector.name))))
    return table, steps


def kinds(changes: tuple[Change, ...]) -> list[str]:
    return [change.kind.value for change in changes]


def test_the_capture_replayed_leaves_what_node_1_held() -> None:
    table, steps = replay()
    done = dict(steps)
    assert kinds(done["ul-aor-insert-1.bin"]) == ["aor_added"]
    assert kinds(done["ul-contact-insert-1.bin"]) == ["contact_added"]
    assert kinds(done["ul-contact-update-1.bin"]) == ["contact_updated"]
    # Bob's second contact: its insert is held out of the vectors, so its update
    # inserts it, as OpenSIPS does with an update for a contact it does not hold.
    assert kinds(done["ul-contact-update-3.bin"]) == ["contact_added"]
    assert kinds(done["ul-contact-delete-1.bin"]) == ["contact_removed"]
    # Dave's Contact: *: the contact delete, then the AoR delete twice.
    assert kinds(done["ul-contact-delete-2.bin"]) == ["contact_removed"]
    assert kinds(done["ul-aor-delete-1.bin"]) == ["aor_removed"]
    assert done["ul-aor-delete-2.bin"] == ()

    assert sorted(aor for _, aor in table.records) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]
    (alice,) = table.lookup("alice@example.com")
    assert (alice.contact, alice.cseq, alice.expires_at) == (
        "sip:alice@127.0.0.1:7001",
        2,
        1795910389,
    )
    assert alice.contact_id == ContactId(aor_hash=3029, rlabel=0, clabel=14471)
    (bob,) = table.lookup("bob@example.com")
    assert (bob.contact, bob.q) == ("sip:bob@127.0.0.1:7002", 800)
    (carol,) = table.lookup("carol@example.com")
    assert (carol.cflags, carol.path, carol.sock) == (
        "NAT",
        "<sip:edge.example.net;lr>",
        "udp:sipsock",
    )
    assert table.lookup("dave@example.com") == ()
    assert (len(table), table.contact_count) == (3, 3)


def test_contact_star_sends_two_identical_aor_deletes_and_the_second_is_harmless() -> None:
    first, second = captured("ul-aor-delete-1.bin"), captured("ul-aor-delete-2.bin")
    assert first == second
    table = LocationTable()
    table.apply(captured("ul-aor-insert-4.bin"))
    table.apply(captured("ul-contact-insert-5.bin"))
    assert kinds(table.apply(first)) == ["contact_removed", "aor_removed"]
    assert table.apply(second) == ()
    assert len(table) == 0


def contact(expires_at: int, **changes: object) -> ContactInserted:
    values: dict[str, object] = {
        "aor": "eve@example.com",
        "contact": "sip:eve@127.0.0.1:7005",
        "contact_id": ContactId(1, 0, 1),
        "callid": "reg-eve-1@binif",
        "expires_at": expires_at,
    }
    values.update(changes)
    return ContactInserted.build(**values)  # type: ignore[arg-type]


def test_local_expiry_follows_the_injected_clock() -> None:
    now = [float(T0)]
    table = LocationTable(clock=lambda: now[0])
    table.apply(AorInserted("location", "eve@example.com", 0, 1))
    table.apply(contact(T0 + 5))
    table.apply(contact(0, contact="sip:eve@192.0.2.1", contact_id=2))  # permanent
    (soon, forever) = sorted(table.lookup("eve@example.com"), key=lambda b: b.expires_at)[::-1]
    assert soon.expires_in(now[0]) == 5 and forever.expires_in(now[0]) is None

    now[0] = T0 + 4.9
    assert table.expire() == ()
    now[0] = T0 + 5
    (expired,) = table.expire()
    assert (expired.kind, expired.binding) == (ChangeKind.CONTACT_EXPIRED, soon)
    assert table.lookup("eve@example.com") == (forever,)
    # A given time wins over the clock; a permanent binding never expires.
    assert table.expire(now=T0 + 10**9) == ()
    table.apply(
        ContactDeleted("location", "eve@example.com", "sip:eve@192.0.2.1", "reg-eve-1@binif", 1)
    )
    # An AoR left without contacts goes at the next expiry run, as usrloc's timer does.
    assert kinds(table.expire()) == ["aor_removed"]
    assert len(table) == 0


def test_expiry_removes_the_aor_with_its_last_contact() -> None:
    table = LocationTable(clock=lambda: 0.0)
    table.apply(contact(T0 + 5))
    assert kinds(table.expire(now=T0 + 6)) == ["contact_expired", "aor_removed"]


def test_an_older_change_of_the_same_registration_is_ignored() -> None:
    table = LocationTable()
    table.apply(contact(T0 + 60, cseq=5))
    stale = contact(T0 + 30, cseq=4)
    assert table.apply(stale) == ()
    assert table.lookup("eve@example.com")[0].expires_at == T0 + 60
    newer = ContactUpdated.build(
        aor="eve@example.com",
        contact="sip:eve@127.0.0.1:7005",
        contact_id=ContactId(1, 0, 1),
        callid="reg-eve-1@binif",
        cseq=6,
        expires_at=T0 + 90,
    )
    assert kinds(table.apply(newer)) == ["contact_updated"]
    assert table.lookup("eve@example.com")[0].expires_at == T0 + 90


def test_contact_only_matching_replaces_a_binding_registered_again_with_a_new_callid() -> None:
    first, again = contact(T0 + 60), contact(T0 + 60, callid="reboot@binif")
    by_contact = LocationTable()
    by_contact.apply(first)
    assert kinds(by_contact.apply(again)) == ["contact_updated"]
    assert [b.callid for b in by_contact.lookup("eve@example.com")] == ["reboot@binif"]
    by_callid = LocationTable(matching_mode=ContactMatch.CONTACT_CALLID)
    by_callid.apply(first)
    assert kinds(by_callid.apply(again)) == ["contact_added"]
    assert by_callid.contact_count == 2


def test_match_params_find_the_binding_by_its_uri_params() -> None:
    table = LocationTable()
    table.apply(contact(T0 + 60, contact="sip:eve@198.51.100.1:5060;ob;pn-prid=abc"))
    table.apply(contact(T0 + 60, contact="sip:eve@198.51.100.2:5060;ob;pn-prid=xyz", contact_id=2))
    moved = contact(
        T0 + 120,
        contact="sip:eve@203.0.113.9:5060;ob;pn-prid=abc",
        cmatch_mode=ContactMatch.PARAMS,
        cmatch_params=("pn-prid",),
        contact_id=3,
    )
    (change,) = table.apply(moved)
    assert change.kind is ChangeKind.CONTACT_UPDATED
    assert sorted(b.contact for b in table.lookup("eve@example.com")) == [
        "sip:eve@198.51.100.2:5060;ob;pn-prid=xyz",
        "sip:eve@203.0.113.9:5060;ob;pn-prid=abc",
    ]
    gone = ContactDeleted(
        "location", "eve@example.com", "sip:eve@x;pn-prid=xyz", "other", 1, cmatch_mode=2,
        cmatch_params=("pn-prid",),
    )  # fmt: skip
    assert kinds(table.apply(gone)) == ["contact_removed"]
    assert table.contact_count == 1


def test_lookup_gives_the_highest_q_first() -> None:
    table = LocationTable()
    for index, q in enumerate((500, -1, 800, 500)):
        table.apply(contact(T0 + 60, contact=f"sip:eve@h{index}", q_value=q, contact_id=index))
    assert [(b.contact, b.q) for b in table.lookup("eve@example.com")] == [
        ("sip:eve@h2", 800),
        ("sip:eve@h0", 500),
        ("sip:eve@h3", 500),
        ("sip:eve@h1", -1),
    ]


def test_deletes_of_what_is_not_there_change_nothing() -> None:
    table = LocationTable()
    assert table.apply(AorDeleted("location", "nobody@example.com")) == ()
    assert table.apply(ContactDeleted("location", "nobody@example.com", "sip:x", "c", 1)) == ()
    table.apply(contact(T0 + 60))
    assert table.apply(ContactDeleted("location", "eve@example.com", "sip:other", "c", 1)) == ()
    assert table.apply(AorInserted("location", "eve@example.com", 9, 9)) == ()
    assert table.contact_count == 1


def test_a_bad_raw_value_is_refused_before_anything_changes() -> None:
    table = LocationTable()
    odd = dataclasses.replace(contact(T0 + 60), expires=b"\x01\x02\x03")
    with pytest.raises(BadRawValue, match="expires"):
        table.apply(odd)
    assert len(table) == 0


def test_only_usrloc_messages_apply() -> None:
    with pytest.raises(TypeError, match="ProfileCounters"):
        LocationTable().apply(ProfileCounters())
    with pytest.raises(ValueError, match="matching_mode"):
        LocationTable(matching_mode=ContactMatch.PARAMS)


def test_sync_messages_give_each_aor_then_its_contacts_as_a_donor_sends_them() -> None:
    table, _ = replay()
    messages = list(table.sync_messages())
    assert [type(m).__name__ for m in messages] == ["AorInserted", "ContactInserted"] * 3
    refilled = LocationTable()
    for message in messages:
        assert refilled.apply(message)
        if isinstance(message, ContactInserted):
            assert message.cmatch_mode == ContactMatch.CONTACT_CALLID
    assert list(refilled.bindings()) == list(table.bindings())
    # Version 3 carries branch flags as bits: none converts, carol's "NAT" cannot.
    with pytest.raises(EncodeError, match="'NAT'"):
        list(table.sync_messages(version=3))
    table.apply(AorDeleted("location", "carol@example.com"))
    v3 = [m for m in table.sync_messages(version=3) if isinstance(m, ContactInserted)]
    assert [(m.version, m.cflags) for m in v3] == [(3, 0), (3, 0)]
