"""The read queries of `cloudfs fsck` (fsck_queries.py), on every backend."""

from __future__ import annotations

import sqlite3

from test_sqlfsn_check import corrupt_postgres

from sqlfsn import ROOT_INODE, Namespace, Piece
from sqlfsn.fsck_queries import ContentUse, FileCounts

R = ROOT_INODE
H = "a" * 64  # a two-segment content
S1, S2 = "b" * 64, "c" * 64
SMALL = "d" * 64  # a single object
UNUSED = "e" * 64  # claimed, referenced by no file


def build(ns: Namespace) -> dict[str, int]:
    """/d/f = H whole; /g = bytes 5..15 of H then a hole then SMALL; /d/link = a second name of
    f; /empty (no piece); an orphan referencing SMALL."""
    ns.claim_content(H, 30, [(S1, 10), (S2, 20)])
    ns.claim_content(SMALL, 7)
    ns.claim_content(UNUSED, 3)
    d = ns.mkdir(R, b"d", 0o755, 0, 0).inode
    f = ns.create(d, b"f", 0o644, 0, 0).inode
    ns.set_content(f, [Piece(H, 0, 30)], 30)
    ns.link(f, d, b"link")
    g = ns.create(R, b"g", 0o644, 0, 0).inode
    ns.set_content(g, [Piece(H, 5, 10), Piece(None, 0, 4), Piece(SMALL, 0, 7)], 21)
    ns.create(R, b"empty", 0o644, 0, 0)
    o = ns.create(R, b"o", 0o644, 0, 0).inode
    ns.set_content(o, [Piece(SMALL, 2, 5)], 5)
    ns.unlink(R, b"o")  # open somewhere: an orphan that still references SMALL
    return {"d": d, "f": f, "g": g, "o": o}


def test_contents_in_use(ns: Namespace) -> None:
    build(ns)
    assert ns.contents_in_use() == [
        ContentUse(H, 30, "live", 30, 2, ((S1, 10), (S2, 20))),
        ContentUse(SMALL, 7, "live", 7, 2, ()),
    ]


def test_contents_in_use_without_registry_row(spec: str, tmp_path) -> None:
    """A piece whose content has no row (a damaged namespace) is still listed: Swift must
    hold it all the same."""
    with Namespace.open(spec, create=True) as ns:
        inodes = build(ns)
        sql = f"DELETE FROM content WHERE hash = '{SMALL}'"
        if ns._db.dialect.is_postgres:
            corrupt_postgres(spec, sql)
        else:
            raw = sqlite3.connect(spec, isolation_level=None)
            raw.execute("PRAGMA foreign_keys = OFF")
            raw.execute(sql)
            raw.close()
        uses = {u.hash: u for u in ns.contents_in_use()}
        assert uses[SMALL] == ContentUse(SMALL, None, None, 7, 2, ())
        assert ns.content_use(SMALL) == uses[SMALL]
        assert ns.files_using([SMALL]) == {SMALL: [inodes["g"], inodes["o"]]}


def test_content_use_follows_changes(ns: Namespace) -> None:
    inodes = build(ns)
    assert ns.content_use(H) == ContentUse(H, 30, "live", 30, 2, ((S1, 10), (S2, 20)))
    assert ns.content_use(UNUSED) is None
    ns.set_content(inodes["f"], [], 0)
    assert ns.content_use(H) == ContentUse(H, 30, "live", 15, 1, ((S1, 10), (S2, 20)))
    ns.set_content(inodes["g"], [], 0)
    assert ns.content_use(H) is None


def test_files_using(ns: Namespace) -> None:
    inodes = build(ns)
    assert ns.files_using([H, SMALL, UNUSED]) == {
        H: [inodes["f"], inodes["g"]],
        SMALL: [inodes["g"], inodes["o"]],
    }
    assert ns.files_using([]) == {}


def test_files_using_many(ns: Namespace) -> None:
    """More hashes than one statement takes."""
    hashes = [f"{i:064x}" for i in range(1, 1202)]
    for h in hashes:
        ns.claim_content(h, 1)
    f = ns.create(R, b"f", 0o644, 0, 0).inode
    ns.set_content(f, [Piece(hashes[-1], 0, 1)], 1)
    assert ns.files_using(hashes) == {hashes[-1]: [f]}


def test_names_of(ns: Namespace) -> None:
    inodes = build(ns)
    assert ns.names_of(inodes["f"]) == [(inodes["d"], b"f"), (inodes["d"], b"link")]
    assert ns.names_of(inodes["g"]) == [(R, b"g")]
    assert ns.names_of(inodes["o"]) == []


def test_file_counts(ns: Namespace) -> None:
    assert ns.file_counts() == FileCounts(0, 0)
    build(ns)
    assert ns.file_counts() == FileCounts(4, 3)  # f, g, empty, the orphan o; empty has none
