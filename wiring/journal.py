"""The write-back journal: closed file versions kept durably on the local disk until they are
in Swift and committed in the namespace.

One file per record in `<cache_dir>/journal-<fs_uuid>/` (one journal per filesystem; a mount
holds its lock, so two mounts never share one). A record is the bytes a write session wrote
(from its start offset: 0 for a new or rewritten file, the old size for an append) followed by
a trailer, written at close and fsync'd before close returns:

    <data> <trailer JSON> <trailer length: 8 bytes, little-endian> <MAGIC: 8 bytes>

The trailer says what to do with the data (Record) and carries a MAC of it, keyed with the
journal's own secret (`key`, 0600): the data is whatever an application wrote, so a trailer
forged inside it (then found in an unsealed file after a crash) is never taken for a record.
More trailers may follow (an amendment: `utimens` after close changes the time to commit);
the last valid one wins (a torn amendment leaves the one before). A file without a valid
trailer is not a record (a session that never closed, or a crash before the fsync: close
never returned) and is reused.

Files are taken from a pool of empty files created ahead (and their directory fsync'd) in
batches, so a close costs one fsync (of its file) and no directory update: a file's name is
never what makes a record durable, its trailer is. A committed record's file is emptied
durably (`retire`) before reuse. Replay (`Journal.open`) reads every file's last trailer,
checks the data against the blake3 it names, and returns the records in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import blake3
import trio

log = logging.getLogger(__name__)

MAGIC = b"CLFSJRN1"
_TAIL = struct.Struct("<Q8s")  # trailer length, magic
POOL_LOW = 8  # refill the pool of empty files below this
POOL_BATCH = 32  # files created at once (one directory fsync)
READ_CHUNK = 4 << 20
_SCAN = 1 << 16  # how far back from a file's end trailers are looked for


class JournalBusy(Exception):
    """Another process holds the journal (another mount of the same filesystem here)."""


@dataclass(frozen=True, slots=True)
class Record:
    """A closed version waiting for Swift: its data is content `hash` (`size` bytes), written
    at file offset `start` over the version `base_version` of `inode`; committed, the file is
    that version with these bytes from `start` (and nothing past them if `replace_all`), its
    mtime `mtime_ns`."""

    seq: int
    inode: int
    base_version: int
    replace_all: bool
    start: int
    hash: str
    size: int
    mtime_ns: int
    path: str  # for messages only


@dataclass(eq=False, slots=True)
class JournalFile:
    """One file of the journal, open, with the record it holds (None while being written)."""

    path: Path
    fd: int
    record: Record | None = None
    written: int = 0  # data bytes written so far
    sealed: float = 0.0  # when its record was sealed (unix time), 0 if not
    readers: int = 0  # reads in progress from worker threads: the file is not reused meanwhile
    retiring: bool = False  # retired while read: emptied when the last reader is done


class Journal:
    """The journal directory: a pool of empty files, the records, replay."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._free: list[JournalFile] = []
        self._next_name = 0
        self._next_seq = 1
        self._lock: int | None = None
        self._key = b""

    # -- replay ------------------------------------------------------------------------------

    def open(self) -> list[JournalFile]:
        """Read the directory: the files holding a whole record (in the order the records were
        closed), and every other file emptied into the pool."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._take_lock()
        self._key = _secret(self.directory / "key")
        records: list[JournalFile] = []
        for path in sorted(self.directory.iterdir()):
            if not path.name.startswith("j-"):
                continue
            self._next_name = max(self._next_name, _number(path.name) + 1)
            fd = os.open(path, os.O_RDWR)
            jf = JournalFile(path, fd)
            record = _read_record(fd, path, self._key)
            if record is None:
                os.ftruncate(fd, 0)
                self._free.append(jf)
                continue
            jf.record = record
            jf.written = record.size
            jf.sealed = os.fstat(fd).st_mtime
            records.append(jf)
            self._next_seq = max(self._next_seq, record.seq + 1)
        records.sort(key=lambda jf: jf.record.seq if jf.record else 0)
        if records:
            log.info("journal: %d closed files still to upload (%s bytes)", len(records),
                     sum(jf.written for jf in records))
        return records

    def _take_lock(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalBusy(f"the write-back journal {self.directory} is in use by another "
                              "process (a mount of this filesystem on this host, or `ccd "
                              "replay`)") from None
        self._lock = fd

    # -- the pool ----------------------------------------------------------------------------

    async def take(self) -> JournalFile:
        """An empty file for a new session's bytes."""
        if len(self._free) < POOL_LOW:
            await trio.to_thread.run_sync(self._refill)
        return self._free.pop()

    def _refill(self) -> None:
        """Create a batch of empty files and make their names durable (one fsync)."""
        made = []
        for _ in range(POOL_BATCH):
            path = self.directory / f"j-{self._next_name:08d}"
            self._next_name += 1
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            made.append(JournalFile(path, fd))
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._free.extend(made)

    async def retire(self, jf: JournalFile) -> None:
        """The file's record is committed: empty the file durably (a record that reappeared
        after a crash would be replayed again), then give it back."""
        if jf.readers:
            jf.retiring = True  # `unread` empties it
            return
        await trio.to_thread.run_sync(_empty, jf.fd)
        self.give_back(jf)

    def read_from(self, jf: JournalFile) -> None:
        """A reader (of a worker thread) starts reading `jf`: it is not emptied until `unread`."""
        jf.readers += 1

    def unread(self, jf: JournalFile) -> None:
        """A reader of `jf` is done. If the file was retired meanwhile it is emptied now, not
        synced (on the trio thread): if the emptying is lost in a crash, replay finds the
        record committed already."""
        jf.readers -= 1
        if not jf.readers and jf.retiring:
            jf.retiring = False
            self.give_back(jf)

    def retire_now(self, jf: JournalFile) -> None:
        """`retire`, blocking (at replay, before the mount serves)."""
        _empty(jf.fd)
        self.give_back(jf)

    def give_back(self, jf: JournalFile) -> None:
        """An unsealed file (its session aborted or moved on) or an emptied one: empty it for
        reuse."""
        os.ftruncate(jf.fd, 0)
        jf.record, jf.written, jf.sealed = None, 0, 0.0
        if len(self._free) < 2 * POOL_BATCH:
            self._free.append(jf)
        else:
            os.close(jf.fd)
            jf.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the pool's files and release the lock (files holding records stay)."""
        for jf in self._free:
            os.close(jf.fd)
        self._free.clear()
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
            self._lock = None

    # -- writing -----------------------------------------------------------------------------

    @staticmethod
    def write(jf: JournalFile, data: bytes | memoryview) -> None:
        """Append data (to the page cache: made durable by `seal`)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(jf.fd, view, jf.written)
            jf.written += n
            view = view[n:]

    def next_seq(self) -> int:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return seq

    async def seal(self, jf: JournalFile, record: Record) -> None:
        """Append the trailer and fsync: from then on the record survives a crash."""
        jf.record = record
        jf.sealed = jf.sealed or time.time()
        trailer = _trailer(record, self._key)
        tail = trailer + _TAIL.pack(len(trailer), MAGIC)
        end = os.fstat(jf.fd).st_size
        os.pwrite(jf.fd, tail, max(end, jf.written))
        await trio.to_thread.run_sync(os.fsync, jf.fd)

    async def amend(self, jf: JournalFile, **changes: object) -> Record:
        """Append a trailer with `changes` (e.g. mtime_ns) to a sealed record and fsync."""
        assert jf.record is not None
        record = replace(jf.record, **changes)  # type: ignore[arg-type]
        await self.seal(jf, record)
        return record

    @staticmethod
    def chunks(jf: JournalFile, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The record's data [start, end), in chunks (blocking reads)."""
        stop = jf.written if end is None else end
        pos = start
        while pos < stop:
            data = os.pread(jf.fd, min(READ_CHUNK, stop - pos), pos)
            if not data:
                raise OSError(f"journal file {jf.path} is shorter than its record")
            pos += len(data)
            yield data


def _number(name: str) -> int:
    try:
        return int(name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _empty(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.fdatasync(fd)


def _secret(path: Path) -> bytes:
    """The journal's MAC key: read, or made (32 random bytes, 0600, durable) the first time."""
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    tmp = path.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return key


def _mac(body: bytes, key: bytes) -> str:
    return blake3.blake3(body, key=key).hexdigest()


def _trailer(record: Record, key: bytes) -> bytes:
    body = json.dumps(asdict(record), sort_keys=True)
    return json.dumps({"record": body, "mac": _mac(body.encode(), key)}).encode()


def _read_record(fd: int, path: Path, key: bytes) -> Record | None:
    """The record of a journal file: its last whole trailer whose data checks (a torn
    amendment at the end leaves the trailer before it), or None."""
    size = os.fstat(fd).st_size
    if size < _TAIL.size:
        return None
    window = max(0, size - _SCAN)
    tail = os.pread(fd, size - window, window)
    end = len(tail)
    while (at := tail.rfind(MAGIC, 0, end)) >= 0:
        end = at + len(MAGIC) - 1
        record = _record_ending_at(fd, tail, at, window, key)
        if record is not None:
            return record
    if size > _TAIL.size:
        log.warning("journal file %s holds no valid record; reused", path)
    return None


def _record_ending_at(fd: int, tail: bytes, at: int, window: int, key: bytes
                      ) -> Record | None:
    """The record whose trailer's magic is at `tail[at]`, if its trailer parses, its MAC is
    this journal's and its data hashes to what it names."""
    if at < 8:
        return None
    (length,) = struct.unpack("<Q", tail[at - 8:at])
    start = at - 8 - length
    if start < 0:
        return None
    try:
        trailer = json.loads(tail[start:at - 8])
        body = trailer["record"]
        if not hmac.compare_digest(trailer["mac"], _mac(body.encode(), key)):
            return None
        record = Record(**json.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if record.size > window + start:
        return None  # the data ends before its trailers
    hasher = blake3.blake3()
    pos = 0
    while pos < record.size:
        data = os.pread(fd, min(READ_CHUNK, record.size - pos), pos)
        if not data:
            return None
        hasher.update(data)
        pos += len(data)
    return record if hasher.hexdigest() == record.hash else None
