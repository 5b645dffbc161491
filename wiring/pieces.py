"""A file version as pieces (sqlfsn `Piece`: a byte range of a CAS object, or a hole): the
pure functions the mount and ccd's replay of a write-back journal both use to build a new
version from an old one."""

from __future__ import annotations

from seqwrite import StoredContent
from sqlfsn import Piece


def slice_pieces(pieces: list[Piece], start: int, end: int) -> list[Piece]:
    """The pieces covering bytes [start, end) of a file made of `pieces`."""
    out: list[Piece] = []
    pos = 0
    for p in pieces:
        lo, hi = max(start, pos), min(end, pos + p.length)
        if lo < hi:
            offset = 0 if p.hash is None else p.obj_offset + lo - pos
            out.append(Piece(p.hash, offset, hi - lo))
        pos += p.length
        if pos >= end:
            break
    return out


def compose(start: int, content: StoredContent, base: list[Piece], base_size: int
            ) -> tuple[list[Piece], int]:
    """The version after a streamed write of `content` at file offset `start` over a base of
    `base_size` bytes: the base before `start`, the new content, and the base past its end."""
    new = [] if content.kind == "empty" else [Piece(content.hash, 0, content.size)]
    end = start + content.size
    pieces = slice_pieces(base, 0, start) + new
    if base_size > end:
        pieces += slice_pieces(base, end, base_size)
    return pieces, max(end, base_size)
