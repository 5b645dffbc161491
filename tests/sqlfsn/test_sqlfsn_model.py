"""Model-based tests: random operation sequences against a dict-tree model of the namespace.

``Model`` is a deliberately naive in-memory filesystem that states the semantics of every
operation (results, errors and their precedence, link counts, pieces, inode numbers).
``Harness`` applies each operation to sqlfsn and to the model, requires the same outcome
(value or error class), and after every step compares the whole state and runs check().
Two drivers: a hypothesis state machine (in memory, on a WAL file and on PostgreSQL), and a
seeded random loop over a database opened twice (a WAL file; PostgreSQL), alternating
connections.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from devtools import postgres as devpostgres
from devtools.postgres import DevPostgres
from sqlfsn import ROOT_INODE, Attr, Claim, Namespace, Piece, errors

R = ROOT_INODE
NAMES = [b"a", b"b", b"c", b"d"]
BAD_NAMES = [b"", b".", b"..", b"x/y", b"n\0", b"L" * 256]
PERMS = [0o755, 0o644, 0o700, 0o4711]
HASHES = [f"{i + 1:064x}" for i in range(4)]
SIZES = {h: 8 * (i + 1) for i, h in enumerate(HASHES)}  # the content size of each hash
MKNOD_KINDS = [stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFDIR, 0]
RENAME_FLAGS = ["", "noreplace", "exchange", "both"]
MISSING = 9999  # an inode number that never exists
# Operations of the seeded loop (each followed by a full comparison), per backend: on
# PostgreSQL every statement is a round trip to the server (~0.1 ms here), 30x SQLite's cost.
SEEDED_OPS = {"file": 3000, "postgresql": 1000}
MAX_NODES = 40  # the seeded loop keeps the tree about this small: more collisions, faster

Outcome = tuple[str, Any]  # ("ok", value) or ("error", error class name)


# -- the model --------------------------------------------------------------------------


@dataclass
class Node:
    kind: int
    perm: int
    nlink: int
    size: int = 0
    version: int = 0
    pieces: list[Piece] = field(default_factory=list)
    target: bytes | None = None
    children: dict[bytes, int] | None = None  # directories only


def check_name(name: bytes) -> None:
    if len(name) > 255:
        raise errors.NameTooLong()
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise errors.InvalidName()


class Model:
    """The specification of sqlfsn's tree semantics, as plainly as possible."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {R: Node(stat.S_IFDIR, 0o755, 2, children={})}
        self.next_id = R + 1  # inode numbers are never reused
        self.contents: dict[str, tuple[int, str]] = {}  # hash -> (size, state)
        self.dropped: list[int] = []

    def proj(self, inode: int) -> tuple[int, int, int, int, int]:
        n = self.nodes[inode]
        return (inode, n.kind | n.perm, n.nlink, n.size, n.version)

    def node(self, inode: int) -> Node:
        if inode not in self.nodes:
            raise errors.NotFound()
        return self.nodes[inode]

    def dir(self, inode: int, *, live: bool = True) -> Node:
        n = self.nodes.get(inode)
        if n is None or (live and n.kind == stat.S_IFDIR and n.nlink == 0):
            raise errors.NotFound()
        if n.children is None:
            raise errors.NotADirectory()
        return n

    def parent_of(self, directory: int) -> int | None:
        for inode, n in self.nodes.items():
            if n.children and directory in n.children.values():
                return inode
        return None

    def in_subtree(self, node: int, directory: int) -> bool:
        cur: int | None = node
        while cur is not None:
            if cur == directory:
                return True
            cur = self.parent_of(cur)
        return False

    # -- operations, each returning what sqlfsn returns (Attrs as proj tuples) ----------

    def lookup(self, parent: int, name: bytes) -> tuple:
        check_name(name)
        p = self.dir(parent, live=False)
        if name not in p.children:  # type: ignore[operator]
            raise errors.NotFound()
        return self.proj(p.children[name])  # type: ignore[index]

    def make(self, parent: int, name: bytes, kind: int, perm: int, target: bytes | None) -> tuple:
        check_name(name)
        p = self.dir(parent)
        assert p.children is not None
        if name in p.children:
            raise errors.Exists()
        inode = self.next_id
        self.next_id += 1
        is_dir = kind == stat.S_IFDIR
        self.nodes[inode] = Node(
            kind,
            perm,
            2 if is_dir else 1,
            size=len(target or b""),
            target=target,
            children={} if is_dir else None,
        )
        p.children[name] = inode
        p.nlink += is_dir
        return self.proj(inode)

    def mknod(self, parent: int, name: bytes, kind: int, perm: int) -> tuple:
        kind = kind or stat.S_IFREG
        if kind in (stat.S_IFDIR, stat.S_IFLNK):
            raise errors.InvalidArgument()
        return self.make(parent, name, kind, perm, None)

    def link(self, inode: int, new_parent: int, new_name: bytes) -> tuple:
        check_name(new_name)
        n = self.node(inode)
        if n.kind == stat.S_IFDIR:
            raise errors.NotPermitted()
        if n.nlink == 0:
            raise errors.NotFound()
        p = self.dir(new_parent)
        assert p.children is not None
        if new_name in p.children:
            raise errors.Exists()
        p.children[new_name] = inode
        n.nlink += 1
        return self.proj(inode)

    def unlink(self, parent: int, name: bytes) -> tuple:
        check_name(name)
        p = self.dir(parent, live=False)
        assert p.children is not None
        if name not in p.children:
            raise errors.NotFound()
        inode = p.children[name]
        if self.nodes[inode].kind == stat.S_IFDIR:
            raise errors.IsADirectory()
        del p.children[name]
        self.nodes[inode].nlink -= 1
        return self.proj(inode)

    def rmdir(self, parent: int, name: bytes) -> tuple:
        check_name(name)
        p = self.dir(parent, live=False)
        assert p.children is not None
        if name not in p.children:
            raise errors.NotFound()
        inode = p.children[name]
        d = self.nodes[inode]
        if d.children is None:
            raise errors.NotADirectory()
        if d.children:
            raise errors.NotEmpty()
        del p.children[name]
        d.nlink = 0
        p.nlink -= 1
        return self.proj(inode)

    def rename(self, op: int, on: bytes, np: int, nn: bytes, flags: str) -> int | None:
        check_name(on)
        check_name(nn)
        noreplace, exchange = flags in ("noreplace", "both"), flags in ("exchange", "both")
        if noreplace and exchange:
            raise errors.InvalidArgument()
        old_dir = self.dir(op, live=False)
        new_dir = self.dir(np)
        assert old_dir.children is not None and new_dir.children is not None
        if on not in old_dir.children:
            raise errors.NotFound()
        src = old_dir.children[on]
        tgt = new_dir.children.get(nn)
        if tgt is None and exchange:
            raise errors.NotFound()
        if tgt is not None and noreplace:
            raise errors.Exists()
        if tgt == src:
            return None
        src_dir = self.nodes[src].kind == stat.S_IFDIR
        if src_dir and self.in_subtree(np, src):
            raise errors.InvalidMove()
        if exchange:
            assert tgt is not None
            tgt_dir = self.nodes[tgt].kind == stat.S_IFDIR
            if tgt_dir and self.in_subtree(op, tgt):
                raise errors.InvalidMove()
            old_dir.children[on], new_dir.children[nn] = tgt, src
            if op != np:
                old_dir.nlink += tgt_dir - src_dir
                new_dir.nlink += src_dir - tgt_dir
            return None
        if tgt is not None:
            t = self.nodes[tgt]
            tgt_dir = t.kind == stat.S_IFDIR
            if src_dir and not tgt_dir:
                raise errors.NotADirectory()
            if tgt_dir and not src_dir:
                raise errors.IsADirectory()
            if t.children:
                raise errors.NotEmpty()
            t.nlink = 0 if tgt_dir else t.nlink - 1
            new_dir.nlink -= tgt_dir
        del old_dir.children[on]
        new_dir.children[nn] = src
        if src_dir:
            old_dir.nlink -= 1
            new_dir.nlink += 1
        return tgt

    def truncate(self, inode: int, size: int) -> tuple:
        n = self.node(inode)
        if n.kind != stat.S_IFREG:
            raise errors.IsADirectory() if n.kind == stat.S_IFDIR else errors.InvalidArgument()
        if size < n.size:
            out, pos = [], 0
            for p in n.pieces:
                if pos >= size:
                    break
                out.append(Piece(p.hash, p.obj_offset, min(p.length, size - pos)))
                pos += p.length
            n.pieces = out
        elif size > n.size:
            last = n.pieces[-1] if n.pieces else None
            if last is not None and last.hash is None:
                n.pieces[-1] = Piece(None, 0, last.length + size - n.size)
            else:
                n.pieces.append(Piece(None, 0, size - n.size))
        if size != n.size:
            n.size, n.version = size, n.version + 1
        return self.proj(inode)

    def chmod(self, inode: int, perm: int) -> tuple:
        self.node(inode).perm = perm
        return self.proj(inode)

    def set_content(self, inode: int, pieces: list[Piece], size: int, expect: int | None) -> tuple:
        pieces = [p for p in pieces if p.length]
        if sum(p.length for p in pieces) != size:
            raise errors.InvalidArgument()
        n = self.node(inode)
        if n.kind != stat.S_IFREG:
            raise errors.IsADirectory() if n.kind == stat.S_IFDIR else errors.InvalidArgument()
        if expect is not None and expect != n.version:
            raise errors.Conflict()
        for p in pieces:
            if p.hash is None:
                continue
            content_size, state = self.contents.get(p.hash, (0, "absent"))
            if state != "live" or p.obj_offset + p.length > content_size:
                raise errors.InvalidArgument()
        n.pieces, n.size, n.version = pieces, size, n.version + 1
        return self.proj(inode)

    def drop_if_orphan(self, inode: int) -> bool:
        if inode == R or inode not in self.nodes or self.nodes[inode].nlink:
            return False
        del self.nodes[inode]
        self.dropped.append(inode)
        return True

    def purge_orphans(self) -> int:
        return sum(self.drop_if_orphan(inode) for inode in list(self.nodes))

    def claim(self, h: str, size: int) -> Claim:
        old_size, state = self.contents.get(h, (size, "absent"))
        if state == "deleting":
            return Claim(False, -1)  # the time is not modelled
        if state == "live" and old_size != size:
            raise errors.InvalidArgument()
        self.contents[h] = (size, "live")
        return Claim(True, None)

    def condemn(self, h: str) -> bool:
        """With a threshold after every claim: kept only if some file (or orphan) uses it."""
        if any(p.hash == h for n in self.nodes.values() for p in n.pieces):
            return False
        self.contents[h] = (self.contents.get(h, (0, ""))[0], "deleting")
        return True

    def content_deleted(self, h: str) -> bool:
        if self.contents.get(h, (0, ""))[1] != "deleting":
            return False
        del self.contents[h]
        return True


# -- the harness ------------------------------------------------------------------------


def proj(attr: Attr) -> tuple[int, int, int, int, int]:
    return (attr.inode, attr.mode, attr.nlink, attr.size, attr.version)


def outcome(call: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", call())
    except errors.NamespaceError as exc:
        return ("error", type(exc).__name__)


class Harness:
    """Applies operations to sqlfsn (alternating between its connections) and the model."""

    def __init__(self, namespaces: list[Namespace]) -> None:
        self.namespaces = namespaces
        self.model = Model()
        self.turn = 0
        self.steps = 0

    @property
    def ns(self) -> Namespace:
        self.turn += 1
        return self.namespaces[self.turn % len(self.namespaces)]

    def same(self, real: Callable[[Namespace], Any], model: Callable[[], Any]) -> None:
        ns = self.ns
        got = outcome(lambda: real(ns))
        want = outcome(model)
        assert got == want, f"sqlfsn {got} != model {want}"
        self.steps += 1

    # -- choosing arguments -----------------------------------------------------------

    def pick_inode(self, sel: int, *, dirs: bool = False) -> int:
        """An inode: mostly existing ones (directories if ``dirs``), sometimes gone ones."""
        nodes = self.model.nodes
        pool = sorted(nodes)
        if dirs:
            pool = [i for i in pool if nodes[i].children is not None] * 4 + pool
        pool += self.model.dropped[-2:] + [MISSING]
        return pool[sel % len(pool)]

    def pick_entry(self, sel: int) -> tuple[int, bytes]:
        """An existing (directory, name), so removals and renames often succeed."""
        entries = sorted(
            (inode, name) for inode, n in self.model.nodes.items() for name in (n.children or {})
        )
        return entries[sel % len(entries)] if entries else (R, NAMES[0])

    # -- operations -------------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> None:
        self.same(lambda ns: proj(ns.lookup(parent, name)), lambda: self.model.lookup(parent, name))

    def make(self, what: str, parent: int, name: bytes, perm: int, kind: int = 0) -> None:
        m = self.model
        target = b"t/" + name.replace(b"\0", b"0")  # a valid target whatever the name
        calls: dict[str, tuple[Callable[[Namespace], Attr], Callable[[], tuple]]] = {
            "mkdir": (
                lambda ns: ns.mkdir(parent, name, perm, 1, 2),
                lambda: m.make(parent, name, stat.S_IFDIR, perm, None),
            ),
            "create": (
                lambda ns: ns.create(parent, name, perm, 1, 2),
                lambda: m.make(parent, name, stat.S_IFREG, perm, None),
            ),
            "mknod": (
                lambda ns: ns.mknod(parent, name, kind | perm, 0x0101, 1, 2),
                lambda: m.mknod(parent, name, kind, perm),
            ),
            "symlink": (
                lambda ns: ns.symlink(parent, name, target, 1, 2),
                lambda: m.make(parent, name, stat.S_IFLNK, 0o777, target),
            ),
        }
        real, model = calls[what]
        self.same(lambda ns: proj(real(ns)), model)

    def link(self, inode: int, parent: int, name: bytes) -> None:
        self.same(
            lambda ns: proj(ns.link(inode, parent, name)),
            lambda: self.model.link(inode, parent, name),
        )

    def unlink(self, parent: int, name: bytes) -> None:
        self.same(lambda ns: proj(ns.unlink(parent, name)), lambda: self.model.unlink(parent, name))

    def rmdir(self, parent: int, name: bytes) -> None:
        self.same(lambda ns: proj(ns.rmdir(parent, name)), lambda: self.model.rmdir(parent, name))

    def rename(self, op: int, on: bytes, np: int, nn: bytes, flags: str) -> None:
        noreplace, exchange = flags in ("noreplace", "both"), flags in ("exchange", "both")
        self.same(
            lambda ns: ns.rename(op, on, np, nn, noreplace=noreplace, exchange=exchange),
            lambda: self.model.rename(op, on, np, nn, flags),
        )

    def truncate(self, inode: int, size: int) -> None:
        self.same(
            lambda ns: proj(ns.setattr(inode, size=size)),
            lambda: self.model.truncate(inode, size),
        )

    def chmod(self, inode: int, perm: int) -> None:
        self.same(
            lambda ns: proj(ns.setattr(inode, mode=perm)), lambda: self.model.chmod(inode, perm)
        )

    def set_content(self, inode: int, pieces: list[Piece], extra: int, expect_sel: int) -> None:
        size = sum(p.length for p in pieces) + extra
        node = self.model.nodes.get(inode)
        version = node.version if node else 0
        expect = [None, version, version + 1][expect_sel % 3]
        self.same(
            lambda ns: proj(ns.set_content(inode, pieces, size, expect_version=expect)),
            lambda: self.model.set_content(inode, pieces, size, expect),
        )

    def drop_if_orphan(self, inode: int) -> None:
        self.same(lambda ns: ns.drop_if_orphan(inode), lambda: self.model.drop_if_orphan(inode))

    def purge_orphans(self) -> None:
        self.same(lambda ns: ns.purge_orphans(), self.model.purge_orphans)

    def claim(self, h: str, size: int) -> None:
        def real(ns: Namespace) -> Claim:
            claim = ns.claim_content(h, size)
            return claim if claim.ok else Claim(False, -1)

        self.same(real, lambda: self.model.claim(h, size))

    def condemn(self, h: str) -> None:
        self.same(lambda ns: ns.condemn(h, claimed_before_ns=2**62), lambda: self.model.condemn(h))

    def content_deleted(self, h: str) -> None:
        self.same(lambda ns: ns.content_deleted(h), lambda: self.model.content_deleted(h))

    # -- the whole-state comparison ---------------------------------------------------

    def verify(self) -> None:
        ns, m = self.ns, self.model
        orphans = sorted(i for i, n in m.nodes.items() if n.nlink == 0)
        # check() == [] and the orphans are exactly the model's, in one pass:
        assert ns.check(include_orphans=True) == [f"inode {i}: orphan (nlink 0)" for i in orphans]
        for inode, n in m.nodes.items():
            assert proj(ns.getattr(inode)) == m.proj(inode)
            if n.children is not None:
                listing = {e.name: proj(e.attr) for e in ns.readdir(inode)}
                assert listing == {name: m.proj(i) for name, i in n.children.items()}
            elif n.kind == stat.S_IFREG:
                assert ns.pieces(inode) == n.pieces
            elif n.kind == stat.S_IFLNK:
                assert ns.readlink(inode) == n.target
        for inode in m.dropped[-3:]:
            assert outcome(lambda i=inode: ns.getattr(i)) == ("error", "NotFound")
        regular = sum(n.size for n in m.nodes.values() if n.kind == stat.S_IFREG)
        assert ns.statfs() == (len(m.nodes), regular)
        assert {c.hash: (c.size, c.state) for c in ns.contents()} == m.contents


def fast_tmpdir() -> str:
    """A new temporary directory, in RAM if possible: these tests commit thousands of times,
    and synchronous=FULL would make them wait for the disk, testing nothing more."""
    shm = "/dev/shm"
    return tempfile.mkdtemp(prefix="sqlfsn-model-", dir=shm if os.access(shm, os.W_OK) else None)


# -- driver 1: hypothesis ----------------------------------------------------------------

names = st.sampled_from(NAMES * 8 + BAD_NAMES)
sels = st.integers(0, 255)
piece_st = st.builds(
    lambda h, off, length: Piece(h, off if h else 0, length),
    st.sampled_from([None, *HASHES]),
    st.integers(0, 8),
    st.integers(0, 9),
)


class NamespaceMachine(RuleBasedStateMachine):
    """Random operation sequences on one namespace (subclasses choose where it lives)."""

    path: str = ":memory:"
    #: The cluster of the "postgresql" machine: a fresh database per example.
    postgres: DevPostgres | None = None
    examples = 0

    def __init__(self) -> None:
        super().__init__()
        self.tmp: str | None = None
        self.database: str | None = None
        path = self.path
        if path == "postgresql":
            assert self.postgres is not None
            NamespaceMachine.examples += 1
            self.database = f"model_{os.getpid()}_{NamespaceMachine.examples}"
            path = devpostgres.create_database(self.postgres, self.database, socket=True)
        elif path != ":memory:":
            self.tmp = fast_tmpdir()
            path = str(Path(self.tmp) / "ns.db")
        self.h = Harness([Namespace.open(path, create=True)])

    def teardown(self) -> None:
        for ns in self.h.namespaces:
            ns.close()
        if self.tmp:
            shutil.rmtree(self.tmp)
        if self.database:
            assert self.postgres is not None
            devpostgres.drop_database(self.postgres, self.database)

    def parent(self, sel: int) -> int:
        return self.h.pick_inode(sel, dirs=True)

    @rule(sel=sels, name=names)
    def lookup(self, sel: int, name: bytes) -> None:
        self.h.lookup(self.parent(sel), name)

    @rule(
        what=st.sampled_from(["mkdir", "mkdir", "create", "symlink"]),
        sel=sels,
        name=names,
        perm=st.sampled_from(PERMS),
    )
    def make(self, what: str, sel: int, name: bytes, perm: int) -> None:
        self.h.make(what, self.parent(sel), name, perm)

    @rule(sel=sels, name=names, kind=st.sampled_from(MKNOD_KINDS))
    def mknod(self, sel: int, name: bytes, kind: int) -> None:
        self.h.make("mknod", self.parent(sel), name, 0o640, kind)

    @rule(sel=sels, psel=sels, name=names)
    def link(self, sel: int, psel: int, name: bytes) -> None:
        self.h.link(self.h.pick_inode(sel), self.parent(psel), name)

    @rule(sel=sels, name=names)
    def unlink(self, sel: int, name: bytes) -> None:
        self.h.unlink(self.parent(sel), name)

    @rule(sel=sels, name=names)
    def rmdir(self, sel: int, name: bytes) -> None:
        self.h.rmdir(self.parent(sel), name)

    @rule(sel=sels, what=st.sampled_from(["unlink", "rmdir"]))
    def remove_entry(self, sel: int, what: str) -> None:
        getattr(self.h, what)(*self.h.pick_entry(sel))

    @rule(sel=sels, nsel=sels, nn=names, flags=st.sampled_from(RENAME_FLAGS[:3]))
    def rename_entry(self, sel: int, nsel: int, nn: bytes, flags: str) -> None:
        self.h.rename(*self.h.pick_entry(sel), self.parent(nsel), nn, flags)

    @rule(
        osel=sels,
        on=names,
        nsel=sels,
        nn=names,
        flags=st.sampled_from(RENAME_FLAGS[:3] * 3 + RENAME_FLAGS[3:]),
    )
    def rename(self, osel: int, on: bytes, nsel: int, nn: bytes, flags: str) -> None:
        self.h.rename(self.parent(osel), on, self.parent(nsel), nn, flags)

    @rule(sel=sels, size=st.integers(0, 40))
    def truncate(self, sel: int, size: int) -> None:
        self.h.truncate(self.h.pick_inode(sel), size)

    @rule(sel=sels, perm=st.sampled_from(PERMS))
    def chmod(self, sel: int, perm: int) -> None:
        self.h.chmod(self.h.pick_inode(sel), perm)

    @rule(
        sel=sels,
        pieces=st.lists(piece_st, max_size=3),
        extra=st.sampled_from([0, 0, 0, 1]),
        expect=st.integers(0, 2),
    )
    def set_content(self, sel: int, pieces: list[Piece], extra: int, expect: int) -> None:
        self.h.set_content(self.h.pick_inode(sel), pieces, extra, expect)

    @rule(h=st.sampled_from(HASHES), wrong=st.sampled_from([0, 0, 0, 0, 1]))
    def claim(self, h: str, wrong: int) -> None:
        self.h.claim(h, SIZES[h] + wrong)

    @rule(h=st.sampled_from(HASHES))
    def condemn(self, h: str) -> None:
        self.h.condemn(h)

    @rule(h=st.sampled_from(HASHES))
    def content_deleted(self, h: str) -> None:
        self.h.content_deleted(h)

    @rule(sel=sels)
    def drop_if_orphan(self, sel: int) -> None:
        self.h.drop_if_orphan(self.h.pick_inode(sel))

    @precondition(lambda self: self.h.steps % 10 == 9)
    @rule()
    def purge_orphans(self) -> None:
        self.h.purge_orphans()

    @invariant()
    def same_state(self) -> None:
        self.h.verify()


class FileNamespaceMachine(NamespaceMachine):
    path = "file"


class PostgresNamespaceMachine(NamespaceMachine):
    path = "postgresql"


_BASE = settings(
    deadline=None,
    database=None,
    stateful_step_count=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestNamespaceModel = NamespaceMachine.TestCase
TestNamespaceModel.settings = settings(_BASE, max_examples=100)
TestFileNamespaceModel = FileNamespaceMachine.TestCase
TestFileNamespaceModel.settings = settings(_BASE, max_examples=25)


def test_namespace_model_on_postgres(dev_postgres: DevPostgres) -> None:
    """The state machine on PostgreSQL, a fresh database per example (as many examples as
    on a file; fewer than in memory: every statement is a round trip to the server)."""
    PostgresNamespaceMachine.postgres = dev_postgres
    try:
        run_state_machine_as_test(PostgresNamespaceMachine,
                                  settings=settings(_BASE, max_examples=25))
    finally:
        PostgresNamespaceMachine.postgres = None


# -- driver 2: a seeded random loop on a file opened twice --------------------------------


def random_step(h: Harness, rng: random.Random) -> None:
    def name() -> bytes:
        return rng.choice(BAD_NAMES) if rng.random() < 0.05 else rng.choice(NAMES)

    def inode(dirs: bool = False) -> int:
        return h.pick_inode(rng.randrange(256), dirs=dirs)

    def entry() -> tuple[int, bytes]:
        if rng.random() < 0.5:
            return h.pick_entry(rng.randrange(1024))
        return inode(True), name()

    crowded = len(h.model.nodes) > MAX_NODES  # then shrink: removals win over creations
    op = rng.choices(
        [
            "make",
            "link",
            "unlink",
            "rmdir",
            "rename",
            "truncate",
            "set_content",
            "claim",
            "gc",
            "drop",
            "lookup",
        ],
        weights=[
            5 if crowded else 30,
            6,
            30 if crowded else 10,
            20 if crowded else 6,
            20,
            6,
            8,
            4,
            3,
            10 if crowded else 4,
            3,
        ],
    )[0]
    if op == "make":
        what = rng.choice(["mkdir", "mkdir", "create", "create", "symlink", "mknod"])
        h.make(what, inode(True), name(), rng.choice(PERMS), rng.choice(MKNOD_KINDS))
    elif op == "link":
        h.link(inode(), inode(True), name())
    elif op == "unlink":
        h.unlink(*entry())
    elif op == "rmdir":
        h.rmdir(*entry())
    elif op == "rename":
        flags = rng.choices(RENAME_FLAGS, weights=[10, 3, 3, 1])[0]
        h.rename(*entry(), *entry(), flags)
    elif op == "truncate":
        h.truncate(inode(), rng.randrange(40))
    elif op == "set_content":
        pieces = []
        for _ in range(rng.randrange(4)):
            hsh = rng.choice([None, *HASHES])
            pieces.append(Piece(hsh, rng.randrange(8) if hsh else 0, rng.randrange(9)))
        h.set_content(inode(), pieces, rng.choice([0, 0, 0, 1]), rng.randrange(3))
    elif op == "claim":
        hsh = rng.choice(HASHES)
        h.claim(hsh, SIZES[hsh])
    elif op == "gc":
        hsh = rng.choice(HASHES)
        h.condemn(hsh)
        if rng.random() < 0.7:
            h.content_deleted(hsh)
    elif op == "drop":
        if rng.random() < 0.1:
            h.purge_orphans()
        else:
            h.drop_if_orphan(inode())
    else:
        h.lookup(inode(True), name())


@pytest.mark.parametrize("backend", ["file", "postgresql"])
def test_seeded_random_operations_on_shared_database(
    backend: str, request: pytest.FixtureRequest
) -> None:
    tmp = fast_tmpdir()
    spec = str(Path(tmp) / "ns.db") if backend == "file" else request.getfixturevalue("pg_url")
    first = Namespace.open(spec, create=True)
    second = Namespace.open(spec)
    h = Harness([first, second])
    rng = random.Random(20240611)
    for _ in range(SEEDED_OPS[backend]):
        random_step(h, rng)
        h.verify()
    assert h.steps >= SEEDED_OPS[backend]
    assert len(h.model.nodes) > 10  # the tree did grow
    for ns in (first, second):
        assert ns.check() == []
        ns.close()
    shutil.rmtree(tmp)
