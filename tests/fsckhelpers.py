"""A filesystem for the fsck tests (a namespace, its Swift containers, a config file), files
written into it the way the mount writes them (seqwrite Writer: lease, claim, publish, then
set_content), without a mount; the tampering behind cloudfs's back that fsck must find; and
runs of fsck, as a function or as the real command."""

from __future__ import annotations

import glob
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from swiftraw import SwiftRaw

from cloudfs.fsck.checks import Fsck, Settings
from cloudfs.fsck.findings import Result
from cloudfs.fsck.repair import Repairer
from seqwrite import Layout, PublishMode, RetryPolicy, StoredContent, SwiftAuth, SwiftStore, Writer
from sqlfsn import ROOT_INODE, Namespace, Piece, errors

KiB = 1024
SEG = 256 * KiB
SMALL_THRESHOLD = KiB


def make_store(auth_url: str, user: str, key: str, *, deadline: float = 20.0) -> SwiftStore:
    return SwiftStore(SwiftAuth(auth_url, user, key), timeout=5.0,
                      policy=RetryPolicy(deadline=deadline, first_backoff=0.05, max_backoff=1.0))


def write_config(path: Path, *, auth_url: str, user: str, key: str, container: str,
                 database: str, cache: Path, **extra: object) -> None:
    lines = ["[swift]", f"auth_url = {auth_url}", f"user = {user}", f"key = {key}",
             f"container = {container}", "retry_deadline = 10", "timeout = 5", "[cloudfs]",
             f"database = {database}", f"cache_dir = {cache}", "shard_digits = 1",
             *(f"{k} = {v}" for k, v in extra.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


@dataclass
class Tree:
    """A filesystem under test. `config` names it for the `cloudfs` command."""

    ns: Namespace
    store: SwiftStore
    layout: Layout
    raw: SwiftRaw
    config: Path

    # -- writing, as the mount does ---------------------------------------------------------

    async def _claim(self, digest: str, size: int, segments: object) -> PublishMode:
        claim = self.ns.claim_content(digest, size, segments)  # type: ignore[arg-type]
        assert claim.ok, f"claim of {digest} refused"
        return PublishMode.CONDITIONAL

    async def publish(self, data: bytes, *, segment_size: int = SEG) -> tuple[StoredContent, str]:
        """Store `data` as a content (lease taken, claim, publish); the lease is left taken."""
        async with trio.open_nursery() as nursery:
            w = Writer(self.store, self.layout, nursery, segment_size=segment_size,
                       small_threshold=SMALL_THRESHOLD, claim=self._claim)
            self.ns.upload_begin(w.upload_id)
            for off in range(0, len(data), SEG):
                await w.write(data[off:off + SEG])
            content = await w.finish()
        return content, w.upload_id

    def directory(self, path: bytes) -> int:
        """The inode of directory `path` (made if missing)."""
        inode = ROOT_INODE
        for name in filter(None, path.split(b"/")):
            try:
                inode = self.ns.lookup(inode, name).inode
            except errors.NotFound:
                inode = self.ns.mkdir(inode, name, 0o755, 0, 0).inode
        return inode

    async def write(self, path: bytes, data: bytes, *,
                    segment_size: int = SEG) -> tuple[int, StoredContent]:
        """Create file `path` holding `data` (committed with its upload lease ended)."""
        parent, _, name = path.rpartition(b"/")
        inode = self.ns.create(self.directory(parent), name, 0o644, 0, 0).inode
        if not data:
            return inode, StoredContent("", 0, "empty")
        content, upload_id = await self.publish(data, segment_size=segment_size)
        self.ns.set_content(inode, [Piece(content.hash, 0, content.size)], content.size,
                            upload_id=upload_id)
        return inode, content

    def link(self, path: bytes, pieces: Sequence[Piece]) -> int:
        """Create file `path` made of `pieces` of contents already stored."""
        parent, _, name = path.rpartition(b"/")
        inode = self.ns.create(self.directory(parent), name, 0o644, 0, 0).inode
        self.ns.set_content(inode, list(pieces), sum(p.length for p in pieces))
        return inode

    # -- tampering behind cloudfs's back ----------------------------------------------------

    def cas(self, digest: str) -> tuple[str, str]:
        return self.layout.cas_path(digest)

    def delete(self, container: str, name: str) -> None:
        assert self.raw.delete_object(container, name) == 204, f"DELETE {container}/{name}"

    def manifest(self, digest: str) -> list[dict[str, Any]]:
        status, _, body = self.raw.get_object(*self.cas(digest), query="multipart-manifest=get")
        assert status == 200
        return list(json.loads(body))

    def put_manifest(self, digest: str, entries: list[dict[str, Any]]) -> None:
        """Replace the manifest at CAS name `digest` by one of these (stored-form) entries."""
        body = json.dumps([{"path": e["name"], "etag": e["hash"], "size_bytes": e["bytes"]}
                           for e in entries]).encode()
        status, _ = self.raw.put_object(*self.cas(digest), body,
                                        query="multipart-manifest=put")
        assert status == 201, status

    def listing(self) -> dict[str, list[tuple[str, str, int]]]:
        """Every object of every container: (name, etag, bytes), for before/after oracles."""
        return {c: [(o["name"], o["hash"], o["bytes"]) for o in self.raw.list_container(c)]
                for c in self.layout.all_containers()}

    # -- fsck -------------------------------------------------------------------------------

    async def fsck(self, *, repair: bool = False, **settings: Any) -> Result:
        checker = Fsck(self.ns, self.store, self.layout, Settings(**settings))
        result = await checker.run()
        if repair:
            result.repair = True
            Repairer(self.ns, checker).repair(result)
        return result


def run_fsck(config: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 300) -> tuple[int, str, str]:
    """`cloudfs fsck --config CONFIG ARGS` as a user runs it: (exit status, stdout, stderr);
    `env` adds to the environment."""
    proc = subprocess.run([sys.executable, "-m", "cloudfs", "fsck", "--config", str(config),
                           *args], capture_output=True, text=True, timeout=timeout,
                          errors="surrogateescape",
                          env={**{k: v for k, v in os.environ.items()
                                  if not k.startswith(("OS_", "ST_"))}, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


def corrupt_on_disk(swift_dir: Path, account_path: str) -> Path:
    """Overwrite the first bytes of the object whose Swift name ends with `account_path`
    (`/container/object`) in the dev Swift's own files, as a failing disk would (its
    metadata, size and ETag unchanged). Returns the file."""
    for path in glob.glob(str(swift_dir / "srv" / "*" / "objects" / "*" / "*" / "*" / "*.data")):
        raw = b""
        for i in range(10):
            try:
                raw += os.getxattr(path, "user.swift.metadata" + (str(i) if i else ""))
            except OSError:
                break
        meta = pickle.loads(raw, encoding="bytes")  # the dev Swift's own files: trusted
        name = meta.get("name") or meta.get(b"name")
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name.endswith(account_path):
            with open(path, "r+b") as f:
                f.write(b"#" * 16)
            return Path(path)
    raise AssertionError(f"no object file for {account_path}")
