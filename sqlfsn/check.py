"""check.py - the consistency check: one function per invariant of the schema.

Each ``check_*`` function verifies one invariant written in schema.py and yields one line per
violation; ``run_checks`` runs them all on one snapshot. The check only reads: repairing is
the job of a separate fsck. It also re-verifies per-row rules that CHECK constraints and
foreign keys enforce, because a database written with those switched off (or by an older
tool) must not slip through. The queries are the same on both engines (dialect.py).
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator

from .core import HEX64
from .database import Database
from .schema import SCHEMA_VERSION
from .types import NAME_MAX, ROOT_INODE

_TYPES = {
    stat.S_IFSOCK,
    stat.S_IFLNK,
    stat.S_IFREG,
    stat.S_IFBLK,
    stat.S_IFDIR,
    stat.S_IFCHR,
    stat.S_IFIFO,
}


def _is_dir(alias: str) -> str:
    """SQL condition: the inode row ``alias`` is a directory."""
    return f"({alias}.mode & 61440) = 16384"


Check = Callable[[Database], Iterator[str]]


def _bad_hash(value: object) -> bool:
    return not isinstance(value, str) or not HEX64.fullmatch(value)


def check_meta(c: Database) -> Iterator[str]:
    row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] != str(SCHEMA_VERSION):
        yield f"meta: schema_version is {row and row[0]!r}, expected '{SCHEMA_VERSION}'"


def check_root(c: Database) -> Iterator[str]:
    row = c.execute("SELECT mode, nlink FROM inode WHERE id = ?", (ROOT_INODE,)).fetchone()
    if row is None or not stat.S_ISDIR(row[0]) or row[1] == 0:
        yield f"root inode {ROOT_INODE} missing, not a directory or removed: {row}"
    for (dentry_id,) in c.execute("SELECT id FROM dentry WHERE inode = ?", (ROOT_INODE,)):
        yield f"dentry {dentry_id}: names the root directory"


def check_dentry_ends(c: Database) -> Iterator[str]:
    rows = c.execute(
        "SELECT d.id, d.parent, d.inode, p.mode, p.nlink, i.id FROM dentry d"
        " LEFT JOIN inode p ON p.id = d.parent LEFT JOIN inode i ON i.id = d.inode"
    )
    for dentry_id, parent, inode, parent_mode, parent_nlink, found in rows:
        if parent_mode is None:
            yield f"dentry {dentry_id}: parent inode {parent} does not exist"
        elif not stat.S_ISDIR(parent_mode):
            yield f"dentry {dentry_id}: parent inode {parent} is not a directory"
        elif parent_nlink == 0:
            yield f"dentry {dentry_id}: parent directory {parent} was removed (nlink 0)"
        if found is None:
            yield f"dentry {dentry_id}: inode {inode} does not exist"


def check_names(c: Database) -> Iterator[str]:
    for dentry_id, name in c.execute("SELECT id, name FROM dentry"):
        if (
            not isinstance(name, bytes)
            or not 0 < len(name) <= NAME_MAX
            or name in (b".", b"..")
            or b"/" in name
            or b"\0" in name
        ):
            yield f"dentry {dentry_id}: invalid name {name!r}"


def check_file_link_counts(c: Database) -> Iterator[str]:
    rows = c.execute(
        "SELECT id, nlink, names FROM (SELECT i.id, i.nlink, i.mode,"
        "  (SELECT count(*) FROM dentry d WHERE d.inode = i.id) AS names FROM inode i) AS t"
        f" WHERE NOT {_is_dir('t')} AND t.nlink != t.names"
    )
    for inode, nlink, names in rows:
        if names == 0:
            yield f"inode {inode}: nlink {nlink} but no name (lost)"
        else:
            yield f"inode {inode}: nlink {nlink} but {names} name(s)"


def check_dir_link_counts(c: Database) -> Iterator[str]:
    rows = c.execute(
        "SELECT i.id, i.nlink,"
        " (SELECT count(*) FROM dentry d WHERE d.inode = i.id),"
        " (SELECT count(*) FROM dentry d JOIN inode s ON s.id = d.inode"
        f"  WHERE d.parent = i.id AND {_is_dir('s')})"
        f" FROM inode i WHERE {_is_dir('i')}"
    )
    for inode, nlink, names, subdirs in rows:
        if nlink == 0:
            if names:
                yield f"directory {inode}: removed (nlink 0) but has {names} name(s)"
            continue
        expected_names = 0 if inode == ROOT_INODE else 1
        if names != expected_names:
            what = "no name (lost)" if names == 0 else f"{names} names"
            yield f"directory {inode}: {what}, expected {expected_names}"
        if nlink != 2 + subdirs:
            yield f"directory {inode}: nlink {nlink} but {subdirs} subdirectories"


def check_reachable(c: Database) -> Iterator[str]:
    """Every named inode hangs below the root (no cycles, no detached subtrees)."""
    rows = c.execute(
        "WITH RECURSIVE reach (id) AS (SELECT CAST(? AS BIGINT) UNION"
        " SELECT d.inode FROM dentry d JOIN reach r ON d.parent = r.id"
        f" JOIN inode i ON i.id = d.inode AND {_is_dir('i')})"
        " SELECT i.id FROM inode i WHERE i.nlink > 0 AND i.id != ?"
        " AND EXISTS (SELECT 1 FROM dentry d WHERE d.inode = i.id)"
        " AND NOT EXISTS (SELECT 1 FROM dentry d WHERE d.inode = i.id"
        "  AND d.parent IN (SELECT id FROM reach))",
        (ROOT_INODE, ROOT_INODE),
    )
    for (inode,) in rows:
        yield f"inode {inode}: not reachable from the root (detached or in a cycle)"


def check_inode_rows(c: Database) -> Iterator[str]:
    rows = c.execute("SELECT id, mode, nlink, size, rdev, version, target FROM inode")
    for inode, mode, nlink, size, rdev, version, target in rows:
        kind = stat.S_IFMT(mode)
        if kind not in _TYPES:
            yield f"inode {inode}: unknown file type in mode {mode:#o}"
        if nlink < 0 or size < 0 or version < 0:
            yield f"inode {inode}: negative nlink, size or version"
        if kind == stat.S_IFLNK:
            if not target:
                yield f"inode {inode}: symlink without target"
            elif size != len(target):
                yield f"inode {inode}: symlink size {size} != target length {len(target)}"
        elif target is not None:
            yield f"inode {inode}: target set on a non-symlink"
        elif kind != stat.S_IFREG and size != 0:
            yield f"inode {inode}: size {size} on a {kind:#o} inode"
        if rdev and kind not in (stat.S_IFCHR, stat.S_IFBLK):
            yield f"inode {inode}: rdev set on a non-device"


def check_orphans(c: Database) -> Iterator[str]:
    """Inodes with nlink 0 (normal while the mount runs; run only when asked)."""
    for (inode,) in c.execute("SELECT id FROM inode WHERE nlink = 0 ORDER BY id"):
        yield f"inode {inode}: orphan (nlink 0)"


def check_file_sizes(c: Database) -> Iterator[str]:
    rows = c.execute(
        "SELECT id, size, total FROM (SELECT i.id, i.size, i.mode,"
        "  (SELECT CAST(coalesce(sum(p.length), 0) AS BIGINT) FROM file_piece p"
        "   WHERE p.inode = i.id) AS total FROM inode i) AS t"
        " WHERE (t.mode & 61440) = 32768 AND t.size != t.total"
    )
    for inode, size, total in rows:
        yield f"inode {inode}: size {size} but pieces hold {total} bytes"


def check_pieces(c: Database) -> Iterator[str]:
    rows = c.execute(
        "SELECT p.inode, p.idx, p.hash, p.obj_offset, p.length, i.mode, k.size, k.state"
        " FROM file_piece p LEFT JOIN inode i ON i.id = p.inode"
        " LEFT JOIN content k ON k.hash = p.hash ORDER BY p.inode, p.idx"
    )
    expected: dict[int, int] = {}
    for inode, idx, h, offset, length, mode, content_size, state in rows:
        where = f"piece {idx} of inode {inode}"
        if mode is None:
            yield f"{where}: no such inode"
        elif not stat.S_ISREG(mode):
            yield f"{where}: inode is not a regular file"
        if idx != expected.get(inode, 0):
            yield f"{where}: expected index {expected.get(inode, 0)} (gap)"
        expected[inode] = idx + 1
        if length <= 0 or offset < 0:
            yield f"{where}: length {length}, obj_offset {offset}"
        if h is None:
            if offset != 0:
                yield f"{where}: hole with obj_offset {offset}"
            continue
        if _bad_hash(h):
            yield f"{where}: bad hash {h!r}"
        elif state is None:
            yield f"{where}: content {h} has no content row"
        elif state != "live":
            yield f"{where}: content {h} is being deleted ({state})"
        elif offset + length > content_size:
            yield f"{where}: ends at {offset + length}, content {h} has {content_size} bytes"


def check_content(c: Database) -> Iterator[str]:
    rows = c.execute("SELECT hash, size, state, claimed_ns, deleting_ns FROM content")
    for h, size, state, _claimed_ns, deleting_ns in rows:
        if _bad_hash(h):
            yield f"content {h!r}: bad hash"
        if size < 0:
            yield f"content {h}: negative size"
        if state not in ("live", "deleting") or (state == "deleting") != (deleting_ns is not None):
            yield f"content {h}: state {state!r} with deleting_ns {deleting_ns}"


def check_segments(c: Database) -> Iterator[str]:
    rows = c.execute(
        "SELECT s.content_hash, count(*), min(s.seq), max(s.seq), CAST(sum(s.size) AS BIGINT),"
        " min(s.size),"
        " k.size FROM content_segment s LEFT JOIN content k ON k.hash = s.content_hash"
        " GROUP BY s.content_hash, k.size"
    )
    for h, count, first, last, total, smallest, size in rows:
        if size is None:
            yield f"segments of content {h}: no such content row"
            continue
        if first != 0 or last != count - 1:
            yield f"segments of content {h}: seq not 0..{count - 1}"
        if smallest <= 0:
            yield f"segments of content {h}: empty segment"
        if total != size:
            yield f"segments of content {h}: sum to {total}, content has {size} bytes"
    for h, seq, segment in c.execute("SELECT content_hash, seq, segment_hash FROM content_segment"):
        if _bad_hash(segment):
            yield f"segment {seq} of content {h}: bad hash {segment!r}"


def check_xattrs(c: Database) -> Iterator[str]:
    rows = c.execute(
        "SELECT x.inode, x.name FROM xattr x WHERE NOT EXISTS"
        " (SELECT 1 FROM inode i WHERE i.id = x.inode)"
    )
    for inode, name in rows:
        yield f"xattr {name!r}: inode {inode} does not exist"


#: Every check run by ``run_checks``, in order (check_orphans is optional).
CHECKS: tuple[Check, ...] = (
    check_meta,
    check_root,
    check_dentry_ends,
    check_names,
    check_file_link_counts,
    check_dir_link_counts,
    check_reachable,
    check_inode_rows,
    check_file_sizes,
    check_pieces,
    check_content,
    check_segments,
    check_xattrs,
)


def run_checks(c: Database, *, include_orphans: bool = False) -> list[str]:
    """All violations found (empty = consistent); ``c`` should be in a read transaction."""
    checks = CHECKS + (check_orphans,) if include_orphans else CHECKS
    return [problem for check in checks for problem in check(c)]
