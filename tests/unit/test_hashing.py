"""ChunkHasher: a writer's blake3 updates in a helper thread, in order, bounded."""

from __future__ import annotations

import os
import threading

import blake3
import pytest
import trio

from seqwrite import hashing
from seqwrite.hashing import ChunkHasher


def chunks(n: int, size: int) -> list[list[memoryview]]:
    return [[memoryview(os.urandom(size)), memoryview(os.urandom(size // 3))] for _ in range(n)]


async def test_updates_in_order_match_a_sequential_hash() -> None:
    parts = chunks(40, 1 << 16)
    whole, tail, hasher = blake3.blake3(), blake3.blake3(), ChunkHasher()
    for i, chunk in enumerate(parts):  # the second hasher joins halfway, as a segment's does
        await hasher.update(chunk, (whole,) if i < 20 else (whole, tail))
    await hasher.drained()
    hasher.close()
    data = b"".join(bytes(v) for chunk in parts for v in chunk)
    half = b"".join(bytes(v) for chunk in parts[20:] for v in chunk)
    assert whole.hexdigest() == blake3.blake3(data).hexdigest()
    assert tail.hexdigest() == blake3.blake3(half).hexdigest()


async def test_at_most_max_pending_chunks_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real = hashing._hash

    def slow(chunk, hashers):  # type: ignore[no-untyped-def]
        gate.wait(10)
        real(chunk, hashers)

    monkeypatch.setattr(hashing, "_hash", slow)
    target, hasher = blake3.blake3(), ChunkHasher()
    for chunk in chunks(hashing.MAX_PENDING, 100):
        await hasher.update(chunk, (target,))
    with trio.move_on_after(0.3) as scope:  # the thread is stuck: the next update must wait
        await hasher.update(chunks(1, 100)[0], (target,))
    assert scope.cancelled_caught
    gate.set()
    await hasher.drained()
    hasher.close()


async def test_a_cancelled_wait_loses_no_update(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real = hashing._hash

    def slow(chunk, hashers):  # type: ignore[no-untyped-def]
        gate.wait(10)
        real(chunk, hashers)

    monkeypatch.setattr(hashing, "_hash", slow)
    parts = chunks(3, 1000)
    target, hasher = blake3.blake3(), ChunkHasher()
    with trio.move_on_after(0.2):
        for chunk in parts:
            await hasher.update(chunk, (target,))
    # The first MAX_PENDING were queued (and are hashed); the third waited, was cancelled, and
    # was never queued.
    gate.set()
    await hasher.drained()
    hasher.close()
    queued = parts[:hashing.MAX_PENDING]
    assert target.hexdigest() == blake3.blake3(
        b"".join(bytes(v) for chunk in queued for v in chunk)).hexdigest()
