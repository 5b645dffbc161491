"""A write session: the one write in progress on a file, as explicit states.

A session starts at the first write through a handle and ends when the new version is
committed (close or fsync), fails, or is aborted. Its state is one of:

    Journaling  write-back mode: bytes flow in order into a journal file (wiring/journal.py),
                from file offset `start`; at close the file is sealed and uploaded later
    Streaming   bytes flow in order to a seqwrite Writer, from file offset `start` (0: new
                content; the current end: an append)
    Cached      writes land in the local write cache (rwcache) over the base version: any
                other offset, a read back through the writing descriptor, a truncate
    Committing  the application closed or fsynced: the content is being published and the
                namespace committed; the session leaves the table when that ends
    Failed      a write or the commit failed, or the mount stopped before the application
                closed the file: nothing of this session is ever published

Transitions (`WriteSession.become`, the only place the state changes):

    Journaling -> Streaming  (past write_back_max, no local space, or on the way to Cached)
    Streaming -> Cached      (non-sequential write, read-back, truncate)
    Journaling | Streaming | Cached -> Committing -> (done)
    any -> Failed            (one failure path: Files._fail)

`ON_STOP` says, one line per state, what stopping the mount (SIGTERM, SIGINT, systemd stop)
does to a session.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import blake3
import trio

from cloudfs.rwcache import RandomSession
from seqwrite import Writer
from wiring.journal import JournalFile

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Journaling:
    """Bytes flow in order into the journal file `file`, hashed as they pass; its first byte
    is file offset `start`. `reserved`: bytes of the local space they hold."""

    file: JournalFile
    start: int
    hasher: Any = field(default_factory=blake3.blake3)
    reserved: int = 0

    @property
    def end(self) -> int:
        """Where the next sequential write goes."""
        return self.start + self.file.written


@dataclass(slots=True)
class Streaming:
    """Bytes flow in order to `writer`; its first byte is file offset `start`."""

    writer: Writer
    start: int

    @property
    def end(self) -> int:
        """Where the next sequential write goes."""
        return self.start + self.writer.size


@dataclass(slots=True)
class Cached:
    """Writes land in the local write cache `cache`, over the base version."""

    cache: RandomSession


@dataclass(slots=True)
class Committing:
    """The application closed or fsynced: `of` (what was written) is being committed."""

    of: Journaling | Streaming | Cached


@dataclass(slots=True)
class Failed:
    """Nothing of this session is published; `reason` says why."""

    reason: str


State = Journaling | Streaming | Cached | Committing | Failed


class StopAction(enum.Enum):
    ABORT = "abort"  # drop what was written: the path keeps its previous content
    FINISH = "finish"  # let the commit in progress complete
    NOTHING = "nothing"


#: What stopping the mount does to a session, by state. The application has not closed what
#: is still streaming or cached: a stop is not a close, so it is never published on its behalf.
#: What it closed or fsynced is being committed, and completes before the mount exits.
ON_STOP: dict[type, StopAction] = {
    Journaling: StopAction.ABORT,
    Streaming: StopAction.ABORT,
    Cached: StopAction.ABORT,
    Committing: StopAction.FINISH,
    Failed: StopAction.NOTHING,
}

# The transitions `become` allows.
_ALLOWED: dict[type, tuple[type, ...]] = {
    Journaling: (Streaming, Committing, Failed),
    Streaming: (Cached, Committing, Failed),
    Cached: (Committing, Failed),
    Committing: (Failed,),
    Failed: (),
}


@dataclass(eq=False, slots=True)
class WriteSession:
    """The one write in progress on an inode.

    Attributes:
        inode: the file.
        owner: the file handle that started it (other handles get EBUSY).
        base_version: the version the write started from (compare-and-swap at commit).
        replace_all: O_TRUNC or a new file: the bytes past what is written are dropped.
        state: see the module docstring.
        leases: upload leases taken by its writers (ended when the session ends).
        mtime_ns: a modification time set after the last write (utimens on the open file, as
            `cp -a` and `tar x` do): the commit keeps it instead of stamping "now".
        started: when the first write came (unix time).
        lock: serializes writes, reads back and commits: the kernel does not order FLUSH
            against WRITE or FSYNC (dup'd descriptors, threads).
    """

    inode: int
    owner: int
    base_version: int
    replace_all: bool
    state: State
    leases: list[str] = field(default_factory=list)
    mtime_ns: int | None = None
    started: float = field(default_factory=time.time)
    lock: trio.Lock = field(default_factory=trio.Lock)

    def become(self, state: State) -> State:
        """Move to `state` (a transition the module docstring allows); the previous state."""
        previous = self.state
        if not isinstance(state, _ALLOWED[type(previous)]):
            raise AssertionError(f"inode {self.inode}: no transition "
                                 f"{type(previous).__name__} -> {type(state).__name__}")
        self.state = state
        return previous

    @property
    def written(self) -> int:
        """Bytes this session holds that are not committed (streamed or cached)."""
        state = self.state.of if isinstance(self.state, Committing) else self.state
        if isinstance(state, Journaling):
            return state.file.written
        if isinstance(state, Streaming):
            return state.writer.size
        if isinstance(state, Cached):
            return state.cache.written.total()
        return 0

    @property
    def size(self) -> int | None:
        """The size the writer sees while writing (getattr shows it), if known here."""
        state = self.state
        if isinstance(state, Committing):
            state = state.of
        if isinstance(state, Cached):
            return state.cache.size
        if isinstance(state, Streaming | Journaling):
            return state.end
        return None
