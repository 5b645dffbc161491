"""One mount of a filesystem whose namespace is in PostgreSQL (several mounts:
test_multi_mount.py): mkfs, mount, the tree and a file's bytes, a remount, and check() clean
at the end."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from conftest import MountSession

from sqlfsn import Namespace

pytestmark = pytest.mark.mount


def test_files_and_directories_on_postgres(pg_mount: MountSession, pg_url: str) -> None:
    mnt: Path = pg_mount.path
    (mnt / "d").mkdir()
    data = os.urandom(200_000)
    (mnt / "d" / "f").write_bytes(data)
    os.rename(mnt / "d" / "f", mnt / "g")
    (mnt / "d" / "h").write_bytes(b"small")
    os.unlink(mnt / "d" / "h")
    assert sorted(os.listdir(mnt)) == ["d", "g"]
    pg_mount.remount()
    assert (mnt / "g").read_bytes() == data
    assert os.listdir(mnt / "d") == []
    assert pg_mount.stop() == 0
    with Namespace.open(pg_url) as ns:
        assert ns.check(include_orphans=True) == []


def test_cp_reflink_and_read_only_snapshot_on_postgres(pg_mount: MountSession,
                                                       pg_url: str) -> None:
    """`cloudfs cp --reflink` and `cloudfs snapshot --read-only` on a PostgreSQL namespace:
    the copy keeps what cp -a keeps, and the snapshot answers EROFS, also after a remount."""
    from test_clone import cloudfs, kept, make_tree

    mnt: Path = pg_mount.path
    data = make_tree(mnt / "src")
    cloudfs("cp", "--reflink", str(mnt / "src"), str(mnt / "copy"))
    assert kept(mnt / "copy") == kept(mnt / "src")
    cloudfs("snapshot", "--read-only", str(mnt / "src"), str(mnt / "snap"))
    pg_mount.remount()
    assert (mnt / "snap" / "big").read_bytes() == data["big"]
    with pytest.raises(OSError) as exc:
        os.unlink(mnt / "snap" / "small")
    assert exc.value.errno == errno.EROFS
    assert pg_mount.stop() == 0
    with Namespace.open(pg_url) as ns:
        assert ns.check(include_orphans=True) == []
