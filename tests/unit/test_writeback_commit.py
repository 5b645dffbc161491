"""What the write-back's commit does with a closed version (wiring/writeback.py), against a
real SQLite namespace: the compare-and-swap on the version the write started from, the
conflict copy when the file moved on elsewhere, a deleted file. No mount, no Swift: the
content is claimed in the namespace as an upload would have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import blake3
import pytest

from seqwrite import StoredContent
from sqlfsn import ROOT_INODE, Namespace, Piece
from wiring.journal import Record
from wiring.writeback import WriteBack


@pytest.fixture
def ns(tmp_path: Path) -> Any:
    namespace = Namespace.open(str(tmp_path / "ns.db"), create=True)
    yield namespace
    namespace.close()


def stored(ns: Namespace, data: bytes) -> StoredContent:
    digest = blake3.blake3(data).hexdigest()
    assert ns.claim_content(digest, len(data)).ok
    return StoredContent(digest, len(data), "object")


def commit(ns: Namespace, record: Record, content: StoredContent) -> None:
    """WriteBack._commit alone (it uses only the namespace)."""
    wb = WriteBack.__new__(WriteBack)
    wb.ns = ns
    wb.conflicts = 0
    attr, base = ns.versioned_pieces(record.inode)
    wb._commit(record, content, base, attr.size)


def record(inode: int, base_version: int, content: StoredContent, **kw: Any) -> Record:
    fields: dict[str, Any] = dict(seq=42, inode=inode, base_version=base_version,
                                  replace_all=True, start=0, hash=content.hash,
                                  size=content.size, mtime_ns=10**18, path="/doc")
    fields.update(kw)
    return Record(**fields)


def test_commit_over_the_version_it_was_written_on(ns):
    attr = ns.create(ROOT_INODE, b"doc", 0o644, 0, 0)
    new = stored(ns, b"closed bytes")
    commit(ns, record(attr.inode, attr.version, new), new)
    after = ns.getattr(attr.inode)
    assert after.version == attr.version + 1 and after.size == len(b"closed bytes")
    assert after.mtime_ns == 10**18
    assert ns.pieces(attr.inode) == [Piece(new.hash, 0, new.size)]


def test_an_append_keeps_the_committed_bytes_before_it(ns):
    attr = ns.create(ROOT_INODE, b"log", 0o644, 0, 0)
    first = stored(ns, b"12345")
    ns.set_content(attr.inode, [Piece(first.hash, 0, 5)], 5)
    tail = stored(ns, b"678")
    commit(ns, record(attr.inode, attr.version + 1, tail, replace_all=False, start=5), tail)
    assert ns.pieces(attr.inode) == [Piece(first.hash, 0, 5), Piece(tail.hash, 0, 3)]
    assert ns.getattr(attr.inode).size == 8


def test_a_file_changed_elsewhere_keeps_the_closed_bytes_as_a_conflict_copy(ns, caplog):
    """Another mount (PostgreSQL) committed a newer version first: the closed version is not
    written over it and not dropped: it becomes `name.cloudfs-conflict-<stamp>-<seq>`
    beside the file, with its bytes and time; the file keeps the other mount's version."""
    attr = ns.create(ROOT_INODE, b"doc", 0o640, 5, 6)
    theirs = stored(ns, b"the other mount's version")
    ns.set_content(attr.inode, [Piece(theirs.hash, 0, theirs.size)], theirs.size)
    ours = stored(ns, b"this mount's closed version")
    commit(ns, record(attr.inode, attr.version, ours), ours)
    assert ns.pieces(attr.inode) == [Piece(theirs.hash, 0, theirs.size)]
    names = [e.name for e in ns.readdir(ROOT_INODE)]
    (copy,) = [n for n in names if n != b"doc"]
    assert copy == b"doc.cloudfs-conflict-20010909-014640-42"
    kept = ns.lookup(ROOT_INODE, copy)
    assert ns.pieces(kept.inode) == [Piece(ours.hash, 0, ours.size)]
    assert (kept.mode & 0o7777, kept.uid, kept.gid) == (0o640, 5, 6)
    assert kept.mtime_ns == 10**18
    assert "changed elsewhere" in caplog.text


def test_a_file_deleted_before_the_commit_commits_nothing(ns):
    attr = ns.create(ROOT_INODE, b"doc", 0o644, 0, 0)
    ours = stored(ns, b"closed")
    rec = record(attr.inode, attr.version, ours)
    ns.unlink(ROOT_INODE, b"doc")
    wb = WriteBack.__new__(WriteBack)
    wb.ns = ns
    wb._commit(rec, ours, [], 0)  # NotFound: nothing to commit, no copy
    assert [e.name for e in ns.readdir(ROOT_INODE)] == []
