"""fsx-style random operations on one file, checked against an in-memory copy after every step.

Run as a child process (so mmap page faults never wait on threads of the test process):
    python fsx_child.py PATH SEED OPS MAXSIZE
Prints "ok <ops>" or raises with the first mismatch.
"""

from __future__ import annotations

import mmap
import os
import random
import sys


def main() -> None:
    path, seed, ops, maxsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def check(where: str) -> None:
        if rng.random() < 0.3 or where == "final":
            got = os.pread(fd, len(model) + 10, 0)
            assert got == bytes(model), f"{where}: differs (size {len(got)} vs {len(model)})"
        assert os.fstat(fd).st_size == len(model), f"{where}: size differs"

    for i in range(ops):
        op = rng.choice(["write", "write", "read", "truncate", "mapwrite", "fsync"])
        if op == "write":
            off = rng.randrange(0, maxsize)
            data = rng.randbytes(rng.randrange(1, 70_000))
            os.pwrite(fd, data, off)
            if len(model) < off:
                model.extend(bytes(off - len(model)))
            model[off:off + len(data)] = data
        elif op == "read" and model:
            off = rng.randrange(0, len(model))
            n = rng.randrange(1, 100_000)
            assert os.pread(fd, n, off) == bytes(model[off:off + n]), f"op {i}: read at {off}"
        elif op == "truncate":
            size = rng.randrange(0, maxsize)
            os.ftruncate(fd, size)
            model[size:] = b""
            if len(model) < size:
                model.extend(bytes(size - len(model)))
        elif op == "mapwrite" and model:
            off = rng.randrange(0, len(model))
            data = rng.randbytes(min(rng.randrange(1, 20_000), len(model) - off))
            with mmap.mmap(fd, len(model), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
                m[off:off + len(data)] = data
                m.flush()
            model[off:off + len(data)] = data
        elif op == "fsync" and rng.random() < 0.2:
            os.fsync(fd)
        check(f"op {i} ({op})")
    check("final")
    os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == bytes(model), "content differs after close"
    print("ok", ops)


if __name__ == "__main__":
    main()
