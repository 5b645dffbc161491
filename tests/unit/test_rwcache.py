"""The write cache's pure logic: byte ranges, slicing pieces, and a RandomSession over a fake
base and a fake upload, against a bytearray model (its local cache file and the local-space
budget are real)."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudfs.errors import FsError
from cloudfs.rwcache import RandomSession, Ranges
from seqwrite.space import LocalSpace
from sqlfsn import Piece
from wiring.pieces import slice_pieces

H1, H2 = "1" * 64, "2" * 64

ops = st.lists(st.tuples(st.sampled_from(["add", "cut"]), st.integers(0, 200),
                         st.integers(0, 60)), max_size=40)


@given(ops)
@settings(max_examples=300, deadline=None)
def test_ranges_match_a_set_of_offsets(steps: list[tuple[str, int, int]]) -> None:
    ranges, model = Ranges(), set()
    for op, start, length in steps:
        if op == "add":
            ranges.add(start, start + length)
            model |= set(range(start, start + length))
        else:
            ranges.remove_from(start)
            model = {x for x in model if x < start}
        spans = list(ranges)
        assert all(a < b for a, b in spans)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False)), \
            "disjoint, sorted, not adjacent"
        assert {x for a, b in spans for x in range(a, b)} == model
        assert ranges.total() == len(model)
        covered = [(a, b) for a, b, inside in ranges.split(0, 300) if inside]
        assert covered == [(a, min(b, 300)) for a, b in spans if a < 300]


def test_slice_pieces() -> None:
    pieces = [Piece(H1, 10, 100), Piece(None, 0, 50), Piece(H2, 0, 30)]
    assert slice_pieces(pieces, 0, 180) == pieces
    assert slice_pieces(pieces, 90, 160) == [Piece(H1, 100, 10), Piece(None, 0, 50),
                                             Piece(H2, 0, 10)]
    assert slice_pieces(pieces, 100, 100) == []


class Model:
    """The base version's bytes (served by `read_base`) and what uploads stored."""

    def __init__(self, base: bytes) -> None:
        self.base = base
        self.stored: dict[str, bytes] = {H1: base}

    async def read_base(self, start: int, length: int) -> bytes:
        return self.base[start:start + length]

    async def upload(self, chunks: AsyncIterator[bytes]) -> tuple[str, int]:
        data = b"".join([c async for c in chunks])
        name = f"{len(self.stored):064x}"
        self.stored[name] = data
        return name, len(data)

    def read(self, pieces: list[Piece]) -> bytes:
        return b"".join(bytes(p.length) if p.hash is None
                        else self.stored[p.hash][p.obj_offset:p.obj_offset + p.length]
                        for p in pieces)


@pytest.fixture
def space(tmp_path: Path) -> LocalSpace:
    return LocalSpace(str(tmp_path), 16 << 20, reserve=0, headroom=1 << 20)


async def test_session_reads_writes_truncates_and_commits(tmp_path: Path,
                                                          space: LocalSpace) -> None:
    base = os.urandom(5000)
    model = Model(base)
    rs = RandomSession(7, [Piece(H1, 0, 5000)], 5000, str(tmp_path), space)
    expected = bytearray(base)
    for off, data in ((100, b"a" * 300), (4900, b"b" * 400), (7000, b"c" * 10)):
        rs.write(off, data)
        end = off + len(data)
        expected[len(expected):end] = bytes(max(0, end - len(expected)))
        expected[off:end] = data
    assert await rs.read(0, 8000, model.read_base) == bytes(expected)
    rs.truncate(4950)
    rs.write(6000, b"d")  # past the truncated end: zeros between, not the old base
    expected = expected[:4950] + bytes(1050) + b"d"
    assert await rs.read(0, 8000, model.read_base) == bytes(expected)
    pieces = await rs.commit(model.upload, model.read_base)
    assert model.read(pieces) == bytes(expected)
    assert sum(p.length for p in pieces) == rs.size == len(expected)
    assert space.used > 0
    rs.close()
    assert space.used == 0


async def test_untouched_base_is_reused_not_uploaded(tmp_path: Path, space: LocalSpace) -> None:
    base = os.urandom(10 << 20)
    model = Model(base)
    rs = RandomSession(7, [Piece(H1, 0, len(base))], len(base), str(tmp_path), space)
    rs.write(5 << 20, b"x" * 10)
    pieces = await rs.commit(model.upload, model.read_base)
    uploaded = sum(len(v) for k, v in model.stored.items() if k != H1)
    assert uploaded == 10, "only the written range is uploaded"
    assert pieces[0] == Piece(H1, 0, 5 << 20)
    rs.close()


def test_full_budget_refuses_with_enospc_and_changes_nothing(tmp_path: Path) -> None:
    space = LocalSpace(str(tmp_path), (1 << 20) + 1000, reserve=0, headroom=1 << 20)
    rs = RandomSession(7, [], 0, str(tmp_path), space)
    rs.write(0, b"a" * 1000)
    with pytest.raises(FsError) as exc:
        rs.write(5000, b"b")
    assert exc.value.errno == errno.ENOSPC
    assert rs.size == 1000 and space.used == 1000
    rs.write(10, b"z" * 10)  # overwriting cached bytes takes no new space
    rs.close()
    assert space.used == 0
