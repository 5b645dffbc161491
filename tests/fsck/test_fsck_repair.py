"""`cloudfs fsck --repair`: files whose content is gone go to /lost+found with their content map
intact, stale leases end, nothing in Swift changes; and the command's refusals and exit
statuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import trio
from fsckhelpers import SEG, KiB, Tree, run_fsck, write_config
from test_fsck_store import build

from cloudfs.fsck.repair import XATTR, lost_found_name
from sqlfsn import ROOT_INODE


async def test_repair_moves_damaged_files_and_never_deletes_data(tree: Tree) -> None:
    built = await build(tree)
    tree.delete(*tree.cas(built.small.hash))
    tree.delete(tree.layout.tmp_container, built.big.segments[1].tmp_name)
    _, stale = await tree.publish(os.urandom(500))  # a writer died: a stale lease
    pieces = {name: tree.ns.pieces(inode) for name, inode in built.inodes.items()}
    swift = tree.listing()

    result = await tree.fsck(repair=True, lease_timeout=0.0)

    assert result.exit_status() == 1, result.problems  # all repaired
    assert {p.kind for p in result.problems} == {"missing", "damaged", "stale_lease"}
    assert all(p.repaired for p in result.problems)
    lost_found = tree.ns.lookup(ROOT_INODE, b"lost+found")
    assert lost_found.mode & 0o777 == 0o700
    names = sorted(e.name for e in tree.ns.readdir(lost_found.inode))
    assert names == [b"docs%2Fbig.bin", b"docs%2Fsmall.txt", b"part"]
    note = tree.ns.getxattr(built.inodes["small"], XATTR).decode()
    assert "moved from /docs/small.txt" in note and "/".join(tree.cas(built.small.hash)) in note
    # never a byte of data: the same objects in Swift, the same content maps in the namespace
    assert tree.listing() == swift
    assert {name: tree.ns.pieces(inode) for name, inode in built.inodes.items()} == pieces
    assert tree.ns.uploads() == [] and stale
    assert tree.ns.check() == []

    again = await tree.fsck(lease_timeout=0.0)
    assert again.problems == [] and again.exit_status() == 0
    assert again.notes["damaged_in_lost_found"] == 3


async def test_a_file_back_in_swift_reads_again_from_lost_found(tree: Tree) -> None:
    """The move keeps the references: put the object back and the file is whole."""
    built = await build(tree)
    container, name = tree.cas(built.small.hash)
    tree.delete(container, name)
    await tree.fsck(repair=True)
    assert tree.raw.put_object(container, name, b"hello")[0] == 201
    result = await tree.fsck()
    assert result.problems == [] and "damaged_in_lost_found" not in result.notes


async def test_repair_leaves_what_it_cannot_fix(tree: Tree) -> None:
    built = await build(tree)
    tree.ns._db.execute("UPDATE inode SET nlink = 3 WHERE id = ?", (built.inodes["one"],))
    result = await tree.fsck(repair=True)
    [p] = result.problems
    assert p.kind == "namespace" and p.repaired is None and result.exit_status() == 4


def test_lost_found_names() -> None:
    assert lost_found_name(b"/a/b%c/d", 7) == b"a%2Fb%25c%2Fd"
    assert lost_found_name(b"/a", 7, taken=True) == b"a~7"
    long = lost_found_name(b"/" + b"x" * 300, 12)
    assert len(long) == 255 and long.endswith(b"~12")


async def test_the_command(tree: Tree) -> None:
    """The real `cloudfs fsck`: human and JSON reports, exit statuses 0, 4, 1, 0."""
    built = await build(tree)
    code, out, err = run_fsck(tree.config)
    assert code == 0, out + err
    assert "result: clean, exit status 0" in out and "checked 8 files" in out
    tree.delete(*tree.cas(built.dup.hash))
    code, out, _ = run_fsck(tree.config)
    assert code == 4
    assert f"MISSING      /dup-a, /dup-b, /sub/dup-c: {'/'.join(tree.cas(built.dup.hash))}" in out
    assert "would move the damaged files to /lost+found" in out
    code, out, _ = run_fsck(tree.config, "--json")
    doc = json.loads(out)
    assert code == 4 and doc["result"] == "problems" and doc["exit_status"] == 4
    [p] = doc["problems"]
    assert [f["paths"] for f in p["files"]] == [["/dup-a"], ["/dup-b"], ["/sub/dup-c"]]
    assert set(doc["checked"]["requests"]) <= {"GET", "HEAD"}
    code, out, err = run_fsck(tree.config, "--repair")
    assert code == 1, out + err
    assert "repaired: in /lost+found: /lost+found/dup-a" in out
    code, out, _ = run_fsck(tree.config)
    assert code == 0 and "damaged files already in /lost+found: 3" in out


async def test_repair_is_refused_on_postgresql(any_tree: Tree) -> None:
    await any_tree.write(b"/f", os.urandom(2 * KiB))
    code, out, err = run_fsck(any_tree.config, "--repair")
    if any_tree.ns.database.startswith("postgresql"):
        assert code == 2 and out == ""
        assert err.startswith("cloudfs fsck: --repair is refused on a PostgreSQL namespace")
        assert len(err.splitlines()) == 1
    else:
        assert code == 0, out + err
    code, out, _ = run_fsck(any_tree.config)  # without --repair: fine on both
    assert code == 0 and "result: clean" in out


async def test_a_segment_size_that_is_not_one(tree: Tree) -> None:
    """Segments of different sizes (a file written with another segment_size) check too."""
    await tree.write(b"/odd", os.urandom(SEG + 7), segment_size=SEG // 2)
    assert (await tree.fsck()).problems == []


async def test_a_name_that_is_not_utf8(tree: Tree) -> None:
    """Reported on one line, escaped, even where stdout's encoding is strict (a UTF-8 locale
    other than C.UTF-8); moved to /lost+found under its own bytes."""
    _, content = await tree.write(b"/caf\xe9\n.txt", os.urandom(2 * KiB))
    tree.delete(*tree.cas(content.hash))
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    code, out, err = run_fsck(tree.config, env=strict)
    assert code == 4, out + err
    assert f"MISSING      /caf\\xe9\\u000a.txt: {'/'.join(tree.cas(content.hash))}" in out
    code, out, err = run_fsck(tree.config, "--json", env=strict)
    assert code == 4 and json.loads(out)["problems"][0]["files"][0]["paths"] == [
        os.fsdecode(b"/caf\xe9\n.txt")]
    code, out, err = run_fsck(tree.config, "--repair", env=strict)
    assert code == 1, out + err
    lost_found = tree.ns.lookup(1, b"lost+found").inode
    assert [e.name for e in tree.ns.readdir(lost_found)] == [b"caf\xe9\n.txt"]


async def test_ctrl_c_is_one_line_and_exit_32(tree: Tree, dev_swift, fault_proxy,
                                              tmp_path) -> None:
    """SIGINT in the middle of the checks (a HEAD held by the proxy): one line, no
    traceback, exit status 32 (fsck(8)'s "canceled by user request")."""
    await tree.write(b"/f", os.urandom(2 * KiB))
    config = tmp_path / "proxied.conf"
    write_config(config, auth_url=fault_proxy.url, user=dev_swift.user, key=dev_swift.key,
                 container=tree.layout.base, database=tree.ns.database,
                 cache=tmp_path / "cache")
    fault_proxy.add_rule("HEAD", r"^/v1/[^/]+/[^/]+/.", "stall", seconds=60, times=-1)
    fault_proxy.add_rule("GET", r"^/v1/[^/]+/[^/]+/.", "stall", seconds=60, times=-1)
    proc = subprocess.Popen([sys.executable, "-m", "cloudfs", "fsck", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not fault_proxy.seen(None, r"^/v1/[^/]+/[^/]+/."):
            assert time.monotonic() < deadline and proc.poll() is None
            await trio.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 32, out + err
    assert out == "" and err == "cloudfs fsck: interrupted: nothing was changed\n"
