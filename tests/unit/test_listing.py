"""cloudfs/listing.py: a directory handle's listing, over a real namespace (SQLite file), with the
kernel's side played by the test: each request starts at the offset of the last entry the
previous reply carried, and takes as many rows as its "buffer" holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudfs import listing as listing_mod
from cloudfs.listing import Listing
from sqlfsn import ROOT_INODE, Namespace

R = ROOT_INODE


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch):
    """In memory (the other connection's test uses a file); small batches, so that a few
    hundred entries take several queries of growing size."""
    monkeypatch.setattr(listing_mod, "FIRST_BATCH", 16)
    monkeypatch.setattr(listing_mod, "MAX_BATCH", 128)
    ns = Namespace.open(":memory:", create=True)
    yield ns
    ns.close()


def request(listing: Listing, offset: int, room: int, *, prefetch: bool = True) -> list:
    """One READDIRPLUS as ops.readdir makes it: rows until `room` entries were sent."""
    sent: list = []
    while len(sent) < room and (rows := listing.rows(offset)):
        take = rows[:room - len(sent)]
        sent += take
        listing.consumed(len(take))
        offset = take[-1][0]
    listing.last_sent = len(sent)
    if prefetch:
        listing.prefetch()
    return sent


def list_all(listing: Listing, room: int, between=None) -> list[bytes]:
    names: list[bytes] = []
    offset = 0
    while rows := request(listing, offset, room):
        names += [row[1] for row in rows]
        offset = rows[-1][0]
        if between is not None:
            between(names)
    return names


def test_rows_are_readdir_as_tuples(ns: Namespace) -> None:
    for i in range(50):
        ns.create(R, b"f%02d" % i, 0o644, 1, 2)
    entries = list(ns.readdir(R))
    rows = ns.readdir_rows(R, 0, 20) + ns.readdir_rows(R, entries[19].next_offset, 100)
    assert [(r[0], r[1], r[2:]) for r in rows] == [
        (e.next_offset, e.name, tuple(getattr(e.attr, f) for f in e.attr.__slots__))
        for e in entries]
    assert ns.readdir_rows(R, rows[-1][0], 10) == []


@pytest.mark.parametrize("room", [1, 7, 16, 127, 128, 300, 5000])
def test_every_entry_once_in_order_across_batches(ns: Namespace, room: int) -> None:
    names = [b"e%05d" % i for i in range(1000)]
    for name in names:
        ns.create(R, name, 0o644, 0, 0)
    assert list_all(Listing(ns, R, clock=Clock()), room) == names


def test_a_request_at_any_given_offset_is_answered_from_it(ns: Namespace) -> None:
    for i in range(600):
        ns.create(R, b"e%03d" % i, 0o644, 0, 0)
    listing = Listing(ns, R, clock=Clock())
    first = request(listing, 0, 300)
    assert listing.kept() > 0
    second = request(listing, first[-1][0], 100)
    assert [r[1] for r in second] == [b"e%03d" % i for i in range(300, 400)]
    # The kernel goes back (seekdir, a rewind): the same rows again, from the namespace.
    again = request(listing, first[99][0], 50)
    assert [r[1] for r in again] == [b"e%03d" % i for i in range(100, 150)]
    assert request(listing, 0, 2)[0][1] == b"e000"


def test_changes_through_this_mount_are_never_served_stale(ns: Namespace) -> None:
    for i in range(1000):
        ns.create(R, b"e%04d" % i, 0o644, 0, 0)
    removed: list[bytes] = []
    added: list[bytes] = []

    def meanwhile(names: list[bytes]) -> None:  # between two requests
        n = len(names)
        if n + 50 < 1000:
            ns.unlink(R, b"e%04d" % (n + 50))  # not listed yet, probably kept
            removed.append(b"e%04d" % (n + 50))
        listed = names[-1]
        if listed.startswith(b"e") and listed not in removed:
            ns.unlink(R, listed)  # listed already
            removed.append(listed)
        if n < 1000:  # (a listing that always finds one more entry never ends)
            ns.create(R, b"new%04d" % n, 0o644, 0, 0)
            added.append(b"new%04d" % n)

    names = list_all(Listing(ns, R, clock=Clock()), 37, meanwhile)
    assert len(names) == len(set(names)), "no entry listed twice"
    olds = [n for n in names if n.startswith(b"e")]
    expected = [b"e%04d" % i for i in range(1000)]
    assert olds == [n for n in expected if n not in removed or n in olds]
    assert names[len(olds):] == added, "entries added meanwhile come after the old ones"


def test_rows_kept_from_another_connection_expire_after_hold(tmp_path: Path) -> None:
    ns = Namespace.open(tmp_path / "ns.db", create=True)
    for i in range(300):
        ns.create(R, b"e%04d" % i, 0o644, 0, 0)
    clock = Clock()
    listing = Listing(ns, R, clock=clock)
    first = request(listing, 0, 100)
    assert listing.kept() > 0
    with Namespace.open(tmp_path / "ns.db") as other:  # another process's change
        other.unlink(R, b"e0100")
    # Within HOLD the kept rows may still be served (as a reply built then would have been).
    clock.now = listing_mod.HOLD / 2
    assert request(listing, first[-1][0], 1, prefetch=False)[0][1] == b"e0100"
    clock.now = listing_mod.HOLD * 2
    assert request(listing, first[-1][0], 1, prefetch=False)[0][1] == b"e0101"
    ns.close()


def test_prefetch_fetches_what_the_next_request_wants(ns: Namespace) -> None:
    for i in range(1000):
        ns.create(R, b"e%04d" % i, 0o644, 0, 0)
    listing = Listing(ns, R, clock=Clock())
    request(listing, 0, 100, prefetch=False)
    assert listing.wants_prefetch()
    listing.prefetch()
    assert listing.kept() >= 100
    assert not listing.wants_prefetch()


def test_missing_or_not_a_directory(ns: Namespace) -> None:
    from sqlfsn.errors import NotADirectory, NotFound

    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(NotADirectory):
        Listing(ns, f.inode).rows(0)
    with pytest.raises(NotFound):
        Listing(ns, 999).rows(0)
