"""Operations in process: each handler's answers and errnos, the write session's states, the
stop policy and times, on a real namespace and a real Swift (see conftest.py)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable

import blake3
import pyfuse3
import pytest
import trio
from ops.conftest import Fields, Fs, KiB

from cloudfs.session import Cached, Streaming
from sqlfsn import ROOT_INODE

pytestmark = pytest.mark.swift

OLD_NS = 981_173_106_000_000_123


async def create(fs: Fs, name: bytes, flags: int = os.O_WRONLY) -> tuple[int, int]:
    """(inode, fh) of a new file opened with `flags`."""
    info, entry = await fs.ops.create(ROOT_INODE, name, stat.S_IFREG | 0o644, flags, fs.ctx)
    return entry.st_ino, info.fh


async def write_file(fs: Fs, name: bytes, data: bytes) -> int:
    inode, fh = await create(fs, name)
    for off in range(0, len(data), 32 * KiB):
        await fs.ops.write(fh, off, data[off:off + 32 * KiB])
    await fs.ops.flush(fh)
    await fs.ops.release(fh)
    return inode


async def read_all(fs: Fs, inode: int) -> bytes:
    fh = (await fs.ops.open(inode, os.O_RDONLY, fs.ctx)).fh
    size = (await fs.ops.getattr(inode, fs.ctx)).st_size
    out = bytes(await fs.ops.read(fh, 0, size + 1))
    await fs.ops.release(fh)
    return out


async def errno_of(call: Awaitable[object]) -> int:
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await call
    return exc.value.errno


async def test_write_read_and_the_content_address(fs: Fs) -> None:
    """A streamed file of several segments reads back and is stored under its blake3."""
    data = os.urandom(200 * KiB + 5)
    inode = await write_file(fs, b"f", data)
    assert await read_all(fs, inode) == data
    digest = blake3.blake3(data).hexdigest()
    assert fs.ns.pieces(inode)[0].hash == digest
    assert await fs.store.head(*fs.layout.cas_path(digest)) is not None


async def test_namespace_errnos(fs: Fs) -> None:
    """The errno table at the boundary: ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, ENAMETOOLONG."""
    ctx = fs.ctx
    assert await errno_of(fs.ops.lookup(ROOT_INODE, b"missing", ctx)) == errno.ENOENT
    d = await fs.ops.mkdir(ROOT_INODE, b"d", 0o755, ctx)
    assert await errno_of(fs.ops.mkdir(ROOT_INODE, b"d", 0o755, ctx)) == errno.EEXIST
    await write_file(fs, b"d-file", b"x")
    await fs.ops.create(d.st_ino, b"inner", 0o644, os.O_WRONLY, ctx)
    assert await errno_of(fs.ops.rmdir(ROOT_INODE, b"d", ctx)) == errno.ENOTEMPTY
    assert await errno_of(fs.ops.rmdir(ROOT_INODE, b"d-file", ctx)) == errno.ENOTDIR
    assert await errno_of(fs.ops.lookup(ROOT_INODE, b"n" * 256, ctx)) == errno.ENAMETOOLONG


async def test_second_writer_gets_ebusy_and_its_close_eio(fs: Fs) -> None:
    """One writer per file: the second descriptor's write is EBUSY, its flush EIO; the first
    descriptor's bytes are committed."""
    inode, first = await create(fs, b"f")
    second = (await fs.ops.open(inode, os.O_WRONLY, fs.ctx)).fh
    await fs.ops.write(first, 0, b"mine")
    assert await errno_of(fs.ops.write(second, 0, b"yours")) == errno.EBUSY
    await fs.ops.flush(first)
    assert await errno_of(fs.ops.flush(second)) == errno.EIO
    for fh in (first, second):
        await fs.ops.release(fh)
    assert await read_all(fs, inode) == b"mine"


async def test_states_streaming_then_cached(fs: Fs) -> None:
    """A write at another offset moves a streaming session to the write cache; reads through
    the writing descriptor see the writes; the commit keeps every byte."""
    inode, fh = await create(fs, b"f", os.O_RDWR)
    data = bytearray(os.urandom(100 * KiB))
    await fs.ops.write(fh, 0, bytes(data))
    assert isinstance(fs.files._sessions[inode].state, Streaming)
    await fs.ops.write(fh, 10, b"PATCH")
    data[10:15] = b"PATCH"
    assert isinstance(fs.files._sessions[inode].state, Cached)
    assert bytes(await fs.ops.read(fh, 0, 20)) == bytes(data[:20])
    await fs.ops.flush(fh)
    await fs.ops.release(fh)
    assert await read_all(fs, inode) == bytes(data)


async def test_times_set_before_close_stick(fs: Fs) -> None:
    """utimens on the open file (cp -a) is kept by the commit; a write after it is not."""
    inode, fh = await create(fs, b"f")
    await fs.ops.write(fh, 0, b"x" * 100)
    attr = pyfuse3.EntryAttributes()
    attr.st_mtime_ns = attr.st_atime_ns = OLD_NS
    await fs.ops.setattr(inode, attr, Fields(update_mtime=True, update_atime=True), fh, fs.ctx)
    await fs.ops.flush(fh)
    await fs.ops.release(fh)
    assert fs.ns.getattr(inode).mtime_ns == OLD_NS
    assert fs.ns.getattr(inode).atime_ns == OLD_NS


async def test_stop_aborts_unclosed_writes_and_refuses_new_ones(fs: Fs) -> None:
    """ON_STOP: an unclosed session is aborted (the file keeps its previous content, the
    handle's next flush is EIO) and new opens for writing get EROFS."""
    inode = await write_file(fs, b"f", b"previous")
    fh = (await fs.ops.open(inode, os.O_WRONLY | os.O_TRUNC, fs.ctx)).fh
    await fs.ops.write(fh, 0, os.urandom(50 * KiB))
    with trio.move_on_after(0.1):
        await fs.files.wait_writers_closed(0.1)
    fs.files.abort_unclosed()
    assert await errno_of(fs.ops.flush(fh)) == errno.EIO
    await fs.ops.release(fh)
    assert await read_all(fs, inode) == b"previous"
    assert await errno_of(fs.ops.open(inode, os.O_WRONLY, fs.ctx)) == errno.EROFS
    assert await errno_of(fs.ops.create(ROOT_INODE, b"new", 0o644, os.O_WRONLY,
                                        fs.ctx)) == errno.EROFS
    assert await read_all(fs, inode) == b"previous"  # reads go on


async def test_unlinked_open_file_is_dropped_at_forget(fs: Fs) -> None:
    """pyfuse3's unlink-while-open check: the content stays readable through the open handle;
    the inode goes when the handle is released and the kernel forgets it."""
    inode = await write_file(fs, b"f", b"still here")
    await fs.ops.lookup(ROOT_INODE, b"f", fs.ctx)
    fh = (await fs.ops.open(inode, os.O_RDONLY, fs.ctx)).fh
    await fs.ops.unlink(ROOT_INODE, b"f", fs.ctx)
    assert bytes(await fs.ops.read(fh, 0, 100)) == b"still here"
    await fs.ops.release(fh)
    assert fs.ns.getattr(inode).nlink == 0  # the kernel still knows it
    await fs.ops.forget([(inode, fs.ops.lookups[inode])])
    assert await errno_of(fs.ops.getattr(inode, fs.ctx)) == errno.ENOENT


async def test_write_cache_full_is_enospc_and_keeps_the_session(fs: Fs) -> None:
    """ENOSPC from the local disk budget fails that write only: the file keeps every write
    that succeeded."""
    fs.space.limit = fs.space.headroom + 64 * KiB
    inode, fh = await create(fs, b"f", os.O_RDWR)
    await fs.ops.write(fh, 100, b"a" * (32 * KiB))  # at an offset: the write cache
    assert await errno_of(fs.ops.write(fh, 1_000_000, b"b" * (64 * KiB))) == errno.ENOSPC
    await fs.ops.flush(fh)
    await fs.ops.release(fh)
    data = await read_all(fs, inode)
    assert data == bytes(100) + b"a" * (32 * KiB)


async def test_rename_replaces_and_keeps_content(fs: Fs) -> None:
    a = await write_file(fs, b"a", b"AAA")
    await write_file(fs, b"b", b"BBB")
    await fs.ops.lookup(ROOT_INODE, b"b", fs.ctx)
    await fs.ops.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", 0, fs.ctx)
    assert (await fs.ops.lookup(ROOT_INODE, b"b", fs.ctx)).st_ino == a
    assert await read_all(fs, a) == b"AAA"
