"""The batched releases of holds and drops of orphans of a shared mount (cloudfs/holds.py):
what is sent, when, and that a file opened again keeps its hold."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudfs.holds import BATCH, Holds


@dataclass
class Ns:
    """What Holds uses of a Namespace (a shared one unless told)."""

    shared: bool = True
    sent: list[tuple[int | None, list[int], list[int]]] = field(default_factory=list)
    dropped_at_once: list[int] = field(default_factory=list)

    def release_holds(self, mount_id: int | None, release: list[int],
                      drop: list[int]) -> list[int]:
        self.sent.append((mount_id, release, drop))
        return drop

    def drop_if_orphan(self, inode: int) -> bool:
        self.dropped_at_once.append(inode)
        return True


def holds(ns: Ns) -> Holds:
    h = Holds(ns)  # type: ignore[arg-type]
    h.mount_id = 7
    return h


def test_releases_and_drops_go_together_in_one_batch() -> None:
    ns = Ns()
    h = holds(ns)
    h.release(3)
    h.release(1)
    h.drop(3)
    assert ns.sent == []  # queued
    h.flush()
    assert ns.sent == [(7, [1, 3], [3])]
    h.flush()  # nothing queued: nothing sent
    assert len(ns.sent) == 1


def test_a_file_opened_again_keeps_its_hold() -> None:
    ns = Ns()
    h = holds(ns)
    h.release(3)
    assert h.reopened(3)  # the queued release is cancelled: the hold stands
    assert not h.reopened(4)  # no release queued: the caller takes a hold
    h.flush()
    assert ns.sent == []


def test_drops_the_kernel_still_needs_wait() -> None:
    ns = Ns()
    h = holds(ns)
    h.droppable = lambda inode: inode != 5
    h.drop(5)
    h.drop(6)
    h.flush()
    assert ns.sent == [(7, [], [6])]


def test_a_full_batch_is_sent_at_once() -> None:
    ns = Ns()
    h = holds(ns)
    for inode in range(BATCH):
        h.release(inode + 2)
    assert len(ns.sent) == 1 and len(ns.sent[0][1]) == BATCH


def test_a_new_registration_forgets_the_old_rows_releases() -> None:
    ns = Ns()
    h = holds(ns)
    h.release(3)
    h.forget_releases()
    h.flush()
    assert ns.sent == []


def test_sqlite_records_no_holds_and_drops_at_once() -> None:
    ns = Ns(shared=False)
    h = holds(ns)
    h.release(3)
    h.drop(4)
    h.flush()
    assert ns.sent == [] and ns.dropped_at_once == [4]
