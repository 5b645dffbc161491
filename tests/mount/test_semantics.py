"""Every claim of docs/SEMANTICS.md, tested on a real mount. Each docstring quotes the claim."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20


def test_new_content_visible_only_after_close(cloudfs_mount):
    """A file's new content becomes visible to other readers only when the writer closes it
    (or calls fsync); until then they read the previous version."""
    path = cloudfs_mount.path / "doc"
    old = b"old version\n" * 1000
    path.write_bytes(old)
    new = os.urandom(2 * MiB + 5)
    with open(path, "wb") as w:
        w.write(new[:MiB])
        w.flush()
        with open(path, "rb") as r:
            assert r.read() == old
        w.write(new[MiB:])
        with open(path, "rb") as r:
            assert r.read() == old
    assert path.read_bytes() == new


def test_append_adds_without_rewriting(cloudfs_mount, fault_proxy):
    """Appending (O_APPEND, or writing at the current end of the file) adds the new bytes as a
    new piece: the existing content is neither re-uploaded nor read back."""
    path = cloudfs_mount.path / "log"
    base = os.urandom(2 * MiB)
    path.write_bytes(base)
    fault_proxy.clear_requests()
    with open(path, "ab") as f:
        f.write(b"line 1\n")
    with open(path, "ab") as f:
        f.write(b"line 2\n")
    sent = [(m, p) for m, p in fault_proxy.requests if m in ("GET", "PUT")]
    assert all(m == "PUT" for m, _ in sent), f"append read from Swift: {sent}"
    assert len(sent) == 2, "one small PUT per append, no re-upload"
    assert path.read_bytes() == base + b"line 1\nline 2\n"
    subprocess.run(["sh", "-c", f"echo shell >> '{path}'"], check=True)
    assert path.read_bytes().endswith(b"line 2\nshell\n")


def test_fsync_commits_and_the_write_continues(cloudfs_mount):
    """fsync during a write publishes and commits every byte written so far; the write then
    continues, and later bytes are committed at the next fsync or close."""
    path = cloudfs_mount.path / "journal"
    part1, part2 = os.urandom(MiB + 3), os.urandom(100_000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, part1)
        os.fsync(fd)
        assert path.read_bytes() == part1
        os.write(fd, part2)
    finally:
        os.close(fd)
    assert path.read_bytes() == part1 + part2


def test_fsync_survives_a_daemon_crash(cloudfs_mount, tmp_path):
    """When fsync returns 0 the synced bytes survive a crash of the daemon."""
    cloudfs_mount.expect_errors = True
    path = cloudfs_mount.path / "synced"
    data = os.urandom(MiB + 17)
    (tmp_path / "data").write_bytes(data)
    code = (
        "import os,sys,time\n"
        f"fd=os.open({str(path)!r}, os.O_WRONLY|os.O_CREAT|os.O_TRUNC)\n"
        f"os.write(fd, open({str(tmp_path / 'data')!r}, 'rb').read()); os.fsync(fd)\n"
        "print('synced', flush=True)\n"
        "os.write(fd, b'unsynced tail'); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"synced"
    time.sleep(0.3)
    cloudfs_mount.kill()
    writer.kill()
    writer.wait()
    cloudfs_mount.start()
    assert path.read_bytes() == data


def test_crash_mid_write_keeps_previous_content(cloudfs_mount, tmp_path):
    """If the daemon dies in the middle of a write, the path keeps its previous content (or
    does not exist): never a partial file."""
    cloudfs_mount.expect_errors = True
    old = b"previous\n"
    (cloudfs_mount.path / "f").write_bytes(old)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(40 * MiB))
    cp1 = subprocess.Popen(["cp", str(src), str(cloudfs_mount.path / "f")])
    cp2 = subprocess.Popen(["cp", str(src), str(cloudfs_mount.path / "new")])
    time.sleep(0.8)
    cloudfs_mount.kill()
    cp1.wait()
    cp2.wait()
    cloudfs_mount.start()
    assert (cloudfs_mount.path / "f").read_bytes() == old
    new = cloudfs_mount.path / "new"
    assert not new.exists() or new.stat().st_size in (0, src.stat().st_size)
    if new.exists() and new.stat().st_size:
        assert new.read_bytes() == src.read_bytes()


def test_unlinked_open_file_stays_readable(cloudfs_mount):
    """Unlinking a file that is open keeps its content readable through the open descriptor
    until it is closed (pyfuse3's unlink-while-open check)."""
    path = cloudfs_mount.path / "tmpfile"
    data = os.urandom(300_000)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        assert not path.exists()
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    assert not path.exists()


def test_special_files_are_namespace_entries(cloudfs_mount):
    """Symlinks, hard links, FIFOs, sockets and device nodes are stored as namespace
    entries (so `rsync -a` of any tree works); they have no content in Swift."""
    m = cloudfs_mount.path
    os.mkfifo(m / "fifo")
    os.mknod(m / "chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(m / "sock", 0o600 | stat.S_IFSOCK)
    os.symlink("fifo", m / "sym")
    (m / "file").write_bytes(b"linked")
    os.link(m / "file", m / "hard")
    assert stat.S_ISFIFO(os.lstat(m / "fifo").st_mode)
    st = os.lstat(m / "chr")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_ISSOCK(os.lstat(m / "sock").st_mode)
    assert os.readlink(m / "sym") == "fifo"
    assert (m / "hard").read_bytes() == b"linked" and os.stat(m / "hard").st_nlink == 2


def test_extended_attributes(cloudfs_mount):
    """Extended attributes are stored in the namespace: set, get, list and remove; reading a
    missing attribute gives ENODATA."""
    path = cloudfs_mount.path / "x"
    path.write_bytes(b"")
    os.setxattr(path, "user.colour", b"blue")
    os.setxattr(path, "user.empty", b"")
    assert os.getxattr(path, "user.colour") == b"blue"
    assert sorted(os.listxattr(path)) == ["user.colour", "user.empty"]
    os.removexattr(path, "user.colour")
    with pytest.raises(OSError) as e:
        os.getxattr(path, "user.colour")
    assert e.value.errno == errno.ENODATA


def test_acl_and_security_xattrs_unsupported(cloudfs_mount, tmp_path):
    """POSIX ACLs, SELinux labels and file capabilities are not supported: any xattr in the
    `system.*` or `security.*` namespace gives EOPNOTSUPP, so `ls -l` asks once per filesystem
    instead of twice per file."""
    d = cloudfs_mount.path / "many"
    d.mkdir()
    for i in range(50):
        (d / f"f{i}").write_bytes(b"")
    calls = [lambda name=name: os.getxattr(d / "f0", name)
             for name in ("system.posix_acl_access", "security.selinux", "security.capability")]
    # (setting an ACL needs a well-formed value, or the kernel says EINVAL itself)
    calls.append(lambda: os.setxattr(d / "f0", "security.selinux", b"x"))
    for call in calls:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EOPNOTSUPP
    trace = tmp_path / "ls.strace"
    syscalls = "trace=getxattr,lgetxattr,fgetxattr,listxattr,llistxattr"
    subprocess.run(["strace", "-f", "-c", "-o", str(trace), "-e", syscalls, "ls", "-l", str(d)],
                   check=True, stdout=subprocess.DEVNULL)
    calls = {line.split()[-1]: int(line.split()[3]) for line in trace.read_text().splitlines()
             if line.split() and line.split()[-1].endswith("xattr")}
    assert 1 <= sum(calls.values()) <= 4, calls  # not 2 x 50


def test_truncate_is_metadata_only(cloudfs_mount, fault_proxy):
    """truncate to a smaller size keeps a prefix of the stored content without moving data;
    to a larger size it adds zeros (a hole); neither sends data to Swift."""
    path = cloudfs_mount.path / "t"
    data = os.urandom(2 * MiB)
    path.write_bytes(data)
    fault_proxy.clear_requests()
    os.truncate(path, 1000)
    os.truncate(path, 5000)
    assert not [r for r in fault_proxy.requests if r[0] in ("PUT", "POST", "DELETE")]
    assert path.read_bytes() == data[:1000] + bytes(4000)


def test_one_writer_per_file(cloudfs_mount):
    """A file has at most one writer at a time: a second open with O_TRUNC while another
    descriptor is writing it fails with EBUSY."""
    path = cloudfs_mount.path / "busy"
    with open(path, "wb") as w:
        w.write(b"x" * 100)
        w.flush()
        with pytest.raises(OSError) as e:
            open(path, "wb")  # noqa: SIM115
        assert e.value.errno == errno.EBUSY
    assert path.read_bytes() == b"x" * 100


def test_pending_truncation_never_wipes_a_newer_version(cloudfs_mount):
    """An O_TRUNC takes effect at that descriptor's close, and only if no other writer
    committed a newer version in between: closed data is never wiped by an older open."""
    path = cloudfs_mount.path / "shared"
    path.write_bytes(b"v1\n")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with open(path, "ab") as other:
        other.write(b"appended\n")
    os.close(fd)
    assert path.read_bytes() == b"v1\nappended\n"
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert path.read_bytes() == b""


def test_racing_appenders_lose_nothing(cloudfs_mount):
    """Two processes appending at once never lose each other's bytes: while one appends, the
    other's write fails with EBUSY; every append that closed successfully is in the file
    exactly once."""
    import threading

    path = cloudfs_mount.path / "log"
    path.write_bytes(b"base\n")
    done: list[bytes] = []
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def appender(tag: str) -> None:
        for i in range(15):
            record = f"{tag}-{i:02d}|".encode() * 50
            try:
                with open(path, "ab") as f:
                    f.write(record)
            except OSError as e:
                # EBUSY from the write; EIO if the close reported it (the sticky error)
                if e.errno not in (errno.EBUSY, errno.EIO):
                    unexpected.append(e)
                continue
            except BaseException as e:
                unexpected.append(e)
                continue
            with lock:
                done.append(record)

    threads = [threading.Thread(target=appender, args=(t,)) for t in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not unexpected, unexpected
    content = path.read_bytes()
    assert content.startswith(b"base\n")
    assert len(content) == 5 + sum(map(len, done))
    for record in done:
        assert content.count(record) == 1


def test_losing_appender_gets_an_error_at_fsync_and_close(cloudfs_mount):
    """The writer that lost the race gets the error where it must look: its write fails with
    EBUSY, and its fsync and close fail with EIO; the winner's bytes are intact."""
    path = cloudfs_mount.path / "log"
    path.write_bytes(b"base\n")
    winner = os.open(path, os.O_WRONLY | os.O_APPEND)
    loser = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(winner, b"winner\n")
    with pytest.raises(OSError) as e:
        os.write(loser, b"loser\n")
    assert e.value.errno == errno.EBUSY
    os.write(winner, b"more\n")
    for call in (lambda: os.fsync(loser), lambda: os.close(loser)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EIO
    os.close(winner)
    assert path.read_bytes() == b"base\nwinner\nmore\n"


@pytest.mark.slow
def test_thousand_appends_read_back_as_the_concatenation(cloudfs_mount, fault_proxy):
    """A program appending 1000 times: the file reads back as the concatenation, and every
    append costs the same (one PUT of its own bytes, whatever the file's size)."""
    path = cloudfs_mount.path / "journal"
    records = [f"record {i:04d} ".encode() * (1 + i % 7) + b"\n" for i in range(1000)]
    fault_proxy.clear_requests()
    for record in records:
        with open(path, "ab") as f:
            f.write(record)
    puts = [p for m, p in fault_proxy.requests if m == "PUT"]
    assert len(puts) == 1000
    assert not [p for m, p in fault_proxy.requests if m == "GET"], "appends read nothing"
    assert path.read_bytes() == b"".join(records)
