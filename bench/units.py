"""Sizes on the benchmarks' command lines: "1G", "256M", "64K" or a number of bytes."""

from __future__ import annotations

MiB = 1 << 20
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    return int(text[:-1]) * _UNITS[text[-1]] if text[-1] in _UNITS else int(text)
