"""cloudfs/listing.py: a directory handle's listing, over a real namespace (SQLite file), with the
kernel's side played by the test: each request starts at the offset of the last entry the
previous reply carried, and takes as many rows as its "buffer" holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudfs import attrs
from cloudfs import listing as listing_mod
from cloudfs.holds import Holds
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
    """One READDIRPLUS as ops.readdir makes it: the entries the listing gives (kept, or one
    query when none are kept), as many as the kernel's buffer (`room` entries) holds."""
    got = listing.take(offset)
    sent = got.rows[:room]
    assert got.items == got.rows, "prepare (here: the rows themselves) made each item"
    assert got.offsets == [r[0] for r in got.rows] and got.names == [r[1] for r in got.rows]
    assert got.inodes == [r[2] for r in got.rows]
    listing.consumed(len(sent))
    listing.last_sent = len(sent)
    if len(sent) < len(got.rows):
        listing.room = len(sent)
    if prefetch and listing.wants_prefetch():
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
        (e.next_offset, e.name, tuple(getattr(e.attr, f) for f in e.attr.__slots__)[:-1])
        for e in entries]  # every attribute but the version
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
    first = list_some(listing, 300)
    assert listing.kept() > 0
    second = request(listing, first[-1][0], 100)
    assert [r[1] for r in second] == [b"e%03d" % i for i in range(300, 400)]
    # The kernel goes back (seekdir, a rewind): the same rows again, from the namespace.
    again = request(listing, first[99][0], 50)
    assert [r[1] for r in again] == [b"e%03d" % i for i in range(100, 100 + len(again))]
    assert request(listing, 0, 2)[0][1] == b"e000"


def list_some(listing: Listing, n: int) -> list:
    """Requests of 100 entries from the start until `n` entries were listed."""
    sent: list = []
    while len(sent) < n:
        sent += request(listing, sent[-1][0] if sent else 0, min(100, n - len(sent)))
    return sent


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
    first = list_some(listing, 100)
    assert listing.kept() > 0
    with Namespace.open(tmp_path / "ns.db") as other:  # another process's change
        other.unlink(R, b"e0100")
    # Within HOLD the kept rows may still be served (as a reply built then would have been).
    clock.now = listing_mod.HOLD / 2
    assert request(listing, first[-1][0], 1, prefetch=False)[0][1] == b"e0100"
    clock.now = listing_mod.HOLD * 2
    assert request(listing, first[-1][0], 1, prefetch=False)[0][1] == b"e0101"
    ns.close()


class Counting:
    """The namespace, counting readdir_rows queries."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.queries = 0

    def __getattr__(self, name: str):
        return getattr(self.ns, name)

    def readdir_rows(self, inode: int, offset: int, limit: int) -> list:
        self.queries += 1
        return self.ns.readdir_rows(inode, offset, limit)


def test_requests_answer_with_prepared_entries_fetched_ahead(ns: Namespace) -> None:
    """The first request costs one small query; the prefetch after each reply grows until a
    reply is full, then fetches what the next one will take (a bit more): from then on no
    request queries, each is answered in full from prepared entries."""
    for i in range(3000):
        ns.create(R, b"e%04d" % i, 0o644, 0, 0)
    counting = Counting(ns)
    prepared: list[list] = []

    def prepare(rows: list) -> list:
        prepared.append(rows)
        return [("prepared", r[0]) for r in rows]

    listing = Listing(counting, R, prepare, clock=Clock())  # type: ignore[arg-type]
    offset, sizes, queries_in_requests = 0, [], 0
    while True:
        before = counting.queries
        got = listing.take(offset)
        queries_in_requests += counting.queries - before
        assert got.items == [("prepared", o) for o in got.offsets]
        if not got.offsets:
            break
        sent = min(len(got.offsets), 100)  # the kernel's buffer: 100 entries
        sizes.append(sent)
        listing.consumed(sent)
        listing.last_sent = sent
        if sent < len(got.offsets):
            listing.room = sent
        offset = got.offsets[sent - 1]
        if listing.wants_prefetch():
            listing.prefetch()
    assert sizes[:2] == [16, 64]  # FIRST_BATCH, then GROWTH times as many
    assert set(sizes[2:-1]) == {100} and sum(sizes) == 3000
    assert queries_in_requests == 1, "the first request's only (a prefetch found the end)"
    assert sum(len(rows) for rows in prepared) == 3000, "every row prepared once"


def test_prefetch_fetches_what_the_next_request_wants(ns: Namespace) -> None:
    for i in range(1000):
        ns.create(R, b"e%04d" % i, 0o644, 0, 0)
    listing = Listing(ns, R, clock=Clock())
    list_some(listing, 200)
    listing.room = 100  # the last reply was full at 100 entries
    assert listing.wants_prefetch() or listing.kept() > 100
    listing.prefetch()
    assert listing.kept() > 100
    assert not listing.wants_prefetch()


def test_prefetch_refreshes_entries_about_to_expire(tmp_path: Path) -> None:
    """Kept entries older than HOLD / 2 would likely expire before the next request comes: a
    prefetch fetches them again (and so sees another process's change) instead of adding to
    them."""
    ns = Namespace.open(tmp_path / "ns.db", create=True)
    for i in range(300):
        ns.create(R, b"e%04d" % i, 0o644, 0, 0)
    clock = Clock()
    listing = Listing(ns, R, clock=clock)
    first = request(listing, 0, 10, prefetch=False)
    assert listing.kept() == listing_mod.FIRST_BATCH - 10
    with Namespace.open(tmp_path / "ns.db") as other:
        other.unlink(R, b"e0010")
    clock.now = listing_mod.HOLD * 0.75
    listing.prefetch()
    assert listing.kept() >= 13
    nxt = request(listing, first[-1][0], 20, prefetch=False)
    assert [r[1] for r in nxt][:2] == [b"e0011", b"e0012"]
    ns.close()


def test_missing_or_not_a_directory(ns: Namespace) -> None:
    from sqlfsn.errors import NotADirectory, NotFound

    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(NotADirectory):
        Listing(ns, f.inode).take(0)
    with pytest.raises(NotFound):
        Listing(ns, 999).take(0)


# -- the mount's side: cloudfs/attrs.py prepares the entries and shows writes in progress ------


class NoWrites:
    """Files as ops sees them with nothing being written (and its queued releases unused)."""

    writing = False

    def __init__(self, ns: Namespace) -> None:
        self.holds = Holds(ns)


class OneWrite:
    """Files as ops sees them while `inode` is being written (its writer sees 5000 bytes)."""

    writing = True

    def __init__(self, inode: int) -> None:
        self.inode = inode

    def shown(self, inode: int, size: int, mtime_ns: int) -> tuple[int, int]:
        return (5000, mtime_ns + 1) if inode == self.inode else (size, mtime_ns)


def test_prepared_attributes_are_those_a_lookup_answers(ns: Namespace) -> None:
    import stat

    from cloudfs.ops import Operations

    ops = Operations(ns, NoWrites(ns))  # type: ignore[arg-type]  # (its lookups' attributes)
    ns.create(R, b"file", 0o640, 7, 8)
    ns.mknod(R, b"dev", stat.S_IFCHR | 0o600, 0x0103, 0, 0)  # rdev not 0
    ns.symlink(R, b"link", b"x" * 700, 1, 1)  # size 700: blocks 2
    ns.mkdir(R, b"dir", 0o755, 0, 0)
    rows = ns.readdir_rows(R, 0, 10)
    prepared = attrs.prepared(rows)
    assert [e.__getstate__() for e in prepared] == [
        ops._entry(ns.getattr(row[2])).__getstate__() for row in rows]
    assert prepared[2].st_blocks == 2 and prepared[1].st_rdev == 0x0103


def test_a_file_being_written_shows_its_writers_size(ns: Namespace) -> None:
    for i in range(3):
        ns.create(R, b"f%d" % i, 0o644, 0, 0)
    writing = ns.lookup(R, b"f1").inode
    listing = Listing(ns, R, attrs.prepared, clock=Clock())
    got = listing.take(0)
    kept = list(got.items)
    shown = attrs.shown_items(got, OneWrite(writing))
    assert [e.st_size for e in shown] == [0, 5000, 0]
    assert shown[1].st_mtime_ns == got.rows[1][10] + 1
    assert shown[0] is kept[0] and shown[2] is kept[2]
    assert listing.take(0).items[1].st_size == 0, "the kept entry stays as committed"
