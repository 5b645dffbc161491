"""The dev Swift launcher: start/stop/status, busy ports, limits, the CLI, cleanup on failure,
and the proxy's memcached (its own, started and stopped with the servers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from swiftraw import SwiftRaw

from devtools import ports
from devtools import swift as devswift
from devtools.errors import UsageError
from devtools.swift import DevSwift, DevSwiftError

MiB = 1024 * 1024


def processes_mentioning(dir: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names dir: none may outlive a stop."""
    needle = str(dir).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "cmdline").read_bytes():
                continue
            if (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
        except OSError:
            continue
        pids.append(int(proc.name))
    return pids


def wait_no_processes(dir: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def swift_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for a test's own dev Swift, stopped whatever happens."""
    dir = tmp_path / "swift"
    try:
        yield dir
    finally:
        devswift.stop(dir)
        assert wait_no_processes(dir) == []


def server_pids(dir: Path) -> list[int]:
    return [s["pid"] for s in devswift.status(dir)["servers"].values()]


def memcached_pids(dir: Path) -> list[int]:
    """Live memcached processes of dir's instance."""
    return [p for p in processes_mentioning(dir) if memcached_comm(p)]


def memcached_comm(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "memcached"
    except OSError:
        return False


def memcached_stats(port: int) -> dict[str, str]:
    """memcached's `stats` (get_hits, curr_items, ...)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    lines = [line.split() for line in data.decode().splitlines() if line.startswith("STAT ")]
    return {fields[1]: fields[2] for fields in lines}


def log_lines(dir: Path, server: str) -> int:
    return len((dir / "log" / f"{server}.log").read_text(errors="replace").splitlines())


# ------------------------------------------------------------------------------ own instances


@pytest.mark.slow
@pytest.mark.swift
def test_start_stop_twice_keeps_data_and_leaves_no_process(swift_dir: Path) -> None:
    port = devswift.find_free_port_range()
    swift = devswift.start(swift_dir, port, die_with_parent=True)
    assert swift.auth_url == f"http://127.0.0.1:{port}/auth/v1.0"
    assert (swift.user, swift.port, swift.dir) == ("test:tester", port, swift_dir)
    st = devswift.status(swift_dir)
    assert st["running"] and st["port"] == port
    assert [s["port"] for s in st["servers"].values()] == [port + i for i in range(5)]
    assert list(st["servers"]) == ["proxy", "account", "container", "object", "memcached"]
    first_pids = server_pids(swift_dir)
    assert memcached_pids(swift_dir) == [st["servers"]["memcached"]["pid"]]
    assert ports.port_in_use(port + 4)
    raw = SwiftRaw(swift.auth_url, swift.user, swift.key)
    assert raw.put_container("keep") == 201
    assert raw.put_object("keep", "o", b"survives restarts")[0] == 201

    devswift.stop(swift_dir)
    assert not any(Path(f"/proc/{pid}").exists() for pid in first_pids)
    assert processes_mentioning(swift_dir) == [] and memcached_pids(swift_dir) == []
    assert not ports.port_in_use(port + 4)
    st = devswift.status(swift_dir)
    assert not st["running"] and not any(s["running"] for s in st["servers"].values())
    devswift.stop(swift_dir)  # idempotent

    # Another port: the rings are rebuilt, the data and the credentials (kept in DIR) stay.
    port = devswift.find_free_port_range()
    again = devswift.start(swift_dir, port, die_with_parent=True)
    assert (again.key, again.port) == (swift.key, port)
    raw = SwiftRaw(again.auth_url, again.user, again.key)
    assert raw.get_object("keep", "o")[::2] == (200, b"survives restarts")
    second_pids = server_pids(swift_dir)
    devswift.stop(swift_dir)
    assert not any(Path(f"/proc/{pid}").exists() for pid in first_pids + second_pids)
    assert not list((swift_dir / "run").glob("*.pid"))


@pytest.mark.slow
@pytest.mark.swift
def test_cli_prints_evaluable_lines_and_reports_status(swift_dir: Path) -> None:
    port = devswift.find_free_port_range()
    cli = f"{sys.executable} -m cloudfs dev-swift"
    # If a server kept the $(...) pipe open, this would hang: the timeout catches that.
    out = subprocess.run(
        [
            "bash",
            "-c",
            f'eval "$({cli} start {swift_dir} --port {port})" && echo "$ST_AUTH|$ST_USER|$ST_KEY"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    auth, user, key = out.split("|")
    assert (auth, user) == (f"http://127.0.0.1:{port}/auth/v1.0", "test:tester")
    SwiftRaw(auth, user, key).auth()

    status = subprocess.run(
        [*cli.split(), "status", str(swift_dir)], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stdout
    for name, pid in zip(devswift.PROCESSES, server_pids(swift_dir), strict=True):
        assert f"running, pid {pid}" in status.stdout and name in status.stdout

    # Already running: same lines again (exit 0); other settings: refused (exit 2).
    again = subprocess.run([*cli.split(), "start", str(swift_dir)], capture_output=True, text=True)
    assert again.returncode == 0 and f"export ST_KEY={key}" in again.stdout
    other = subprocess.run(
        [*cli.split(), "start", str(swift_dir), "--max-file-size", "1000"],
        capture_output=True,
        text=True,
    )
    assert other.returncode == 2 and "already runs" in other.stderr

    assert subprocess.run([*cli.split(), "stop", str(swift_dir)]).returncode == 0
    assert processes_mentioning(swift_dir) == []
    stopped = subprocess.run(
        [*cli.split(), "status", str(swift_dir)], capture_output=True, text=True
    )
    assert stopped.returncode == 3 and "not running" in stopped.stdout
    assert subprocess.run([*cli.split(), "stop", str(swift_dir)]).returncode == 0


@pytest.mark.slow
@pytest.mark.swift
def test_failed_start_shows_logs_and_stops_everything(
    swift_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_configs = devswift._write_configs

    def broken_proxy_conf(dir: Path, *args: object, **kwargs: object) -> None:
        write_configs(dir, *args, **kwargs)  # type: ignore[arg-type]
        with open(dir / "etc" / "proxy-server.conf", "a") as fh:
            fh.write("active_fernet_key_id = 7\n")  # duplicate option: the proxy can't load

    monkeypatch.setattr(devswift, "_write_configs", broken_proxy_conf)
    with pytest.raises(DevSwiftError) as err:
        devswift.start(swift_dir, devswift.find_free_port_range(), die_with_parent=True)
    message = str(err.value)
    assert "proxy server" in message and "exited" in message
    assert "proxy.log (last lines)" in message and "active_fernet_key_id" in message
    assert wait_no_processes(swift_dir, timeout=1) == []
    assert not list((swift_dir / "run").glob("*.pid"))


@pytest.mark.slow
@pytest.mark.swift
def test_servers_die_with_a_killed_parent(swift_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from devtools import swift as devswift
        devswift.start(Path(sys.argv[1]), int(sys.argv[2]), die_with_parent=True)
        print("started", flush=True)
        time.sleep(600)
        """
    )
    port = devswift.find_free_port_range()
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(swift_dir), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "started\n"
        assert len(set(processes_mentioning(swift_dir)) - {parent.pid}) == 5
        assert len(memcached_pids(swift_dir)) == 1
    finally:
        parent.kill()
        parent.wait()
    assert wait_no_processes(swift_dir) == []
    assert not devswift.status(swift_dir)["running"]


# ------------------------------------------------------------------------------ no Swift needed


def test_busy_port_is_refused_and_nothing_starts(tmp_path: Path) -> None:
    port = devswift.find_free_port_range()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port + 2))
        busy.listen()
        with pytest.raises(UsageError, match=f"port {port + 2} .*container.*in use"):
            devswift.start(tmp_path, port)
    assert processes_mentioning(tmp_path) == []
    assert not list((tmp_path / "run").glob("*.pid"))


def test_busy_memcached_port_is_refused_and_nothing_starts(tmp_path: Path) -> None:
    port = devswift.find_free_port_range()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port + 4))
        busy.listen()
        with pytest.raises(UsageError, match=f"port {port + 4} .*memcached.*in use") as err:
            devswift.start(tmp_path, port)
    assert f"ports {port}-{port + 4} must be free" in str(err.value)
    assert processes_mentioning(tmp_path) == []
    assert not list((tmp_path / "run").glob("*.pid"))


def test_missing_memcached_is_one_clear_line(tmp_path: Path) -> None:
    """Without memcached on PATH, the CLI says what to do in one line: no traceback."""
    port = devswift.find_free_port_range()
    (tmp_path / "bin").mkdir()
    env = dict(os.environ, PATH=str(tmp_path / "bin"))
    cli = [sys.executable, "-m", "cloudfs", "dev-swift"]
    out = subprocess.run(
        [*cli, "start", str(tmp_path / "s"), "--port", str(port)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert "memcached is not installed" in out.stderr and "scripts/install" in out.stderr
    assert processes_mentioning(tmp_path) == []


def test_status_and_stop_of_a_directory_without_swift(tmp_path: Path) -> None:
    st = devswift.status(tmp_path / "nothing")
    assert st["running"] is False and st["port"] is None
    assert all(s == {"pid": None, "port": None, "running": False} for s in st["servers"].values())
    devswift.stop(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_free_port_range_is_free() -> None:
    base = devswift.find_free_port_range()  # the proxy, three servers and memcached
    assert 20000 <= base < 40000
    assert not any(ports.port_in_use(base + i) for i in range(5))


# ------------------------------------------------------------------------------ session Swift


def test_port_of_a_running_swift_is_refused(dev_swift: DevSwift, tmp_path: Path) -> None:
    """Swift binds with SO_REUSEPORT: without the check a second one would start silently."""
    with pytest.raises(UsageError, match=f"port {dev_swift.port} .*proxy.*in use"):
        devswift.start(tmp_path, dev_swift.port)
    with pytest.raises(UsageError, match=f"port {dev_swift.port + 3} .*proxy.*in use"):
        devswift.start(tmp_path, dev_swift.port + 3)  # the running one's object server
    assert processes_mentioning(tmp_path) == []


def test_proxy_caches_account_and_container_info_in_memcached(
    dev_swift: DevSwift, raw_swift: SwiftRaw, swift_container: str
) -> None:
    """As in a real cluster: once an object was read, reading it again costs the account and
    container servers nothing (without memcache, every GET HEADs both)."""
    assert raw_swift.put_object(swift_container, "o", b"x" * 1000)[0] == 201
    assert raw_swift.get_object(swift_container, "o")[0] == 200  # fills the cache
    time.sleep(0.3)  # the servers log a request after answering it
    before = {s: log_lines(dev_swift.dir, s) for s in ("account", "container", "object")}
    hits = int(memcached_stats(dev_swift.port + 4)["get_hits"])
    for i in range(5):
        status, _, body = raw_swift.get_object(swift_container, "o", range=f"bytes={i}-{i}")
        assert (status, body) == (206, b"x")
    time.sleep(0.5)
    after = {s: log_lines(dev_swift.dir, s) for s in ("account", "container", "object")}
    assert after["object"] >= before["object"] + 5  # the log does show requests
    assert (after["account"], after["container"]) == (before["account"], before["container"])
    assert int(memcached_stats(dev_swift.port + 4)["get_hits"]) >= hits + 5


def test_start_of_a_running_swift(dev_swift: DevSwift) -> None:
    limit = devswift.status(dev_swift.dir)
    assert limit["running"] and limit["port"] == dev_swift.port
    same = devswift.start(dev_swift.dir, dev_swift.port, max_file_size=4 * MiB)
    assert same == dev_swift
    assert devswift.running(dev_swift.dir) == dev_swift
    with pytest.raises(UsageError, match="already runs with other settings"):
        devswift.start(dev_swift.dir, dev_swift.port, max_file_size=5 * MiB)


def test_max_file_size_is_really_lowered(raw_swift: SwiftRaw, swift_container: str) -> None:
    info = raw_swift.get_info()
    assert info["swift"]["max_file_size"] == 4 * MiB
    assert info["slo"]["max_manifest_segments"] == 1000
    body = b"x" * (4 * MiB)
    assert raw_swift.put_object(swift_container, "at-limit", body)[0] == 201
    assert raw_swift.put_object(swift_container, "above", body + b"x")[0] == 413
    chunked = raw_swift.put_object(swift_container, "above-chunked", iter([body, b"x"]))
    assert chunked[0] == 413
    assert raw_swift.head_object(swift_container, "above")[0] == 404
    names = [o["name"] for o in raw_swift.list_container(swift_container)]
    assert names == ["at-limit"]


def test_swift_container_fixture_gives_a_fresh_container(
    raw_swift: SwiftRaw, swift_container: str
) -> None:
    assert swift_container.startswith("test_swift_container_fixture_gives_a_fresh_container-")
    assert raw_swift.head_container(swift_container)[0] == 204
    assert raw_swift.list_container(swift_container) == []
    assert raw_swift.put_object(swift_container, "a/b", b"1")[0] == 201
    assert raw_swift.put_object(swift_container, "a/c", b"22")[0] == 201
    assert raw_swift.put_object(swift_container, "d", b"")[0] == 201
    listing = raw_swift.list_container(swift_container, prefix="a/")
    assert [(o["name"], o["bytes"]) for o in listing] == [("a/b", 1), ("a/c", 2)]
    status, headers, body = raw_swift.get_object(swift_container, "a/c", range="bytes=1-1")
    assert (status, body, headers["content-range"]) == (206, b"2", "bytes 1-1/2")
    assert raw_swift.post_object(swift_container, "d", {"X-Object-Meta-Color": "blue"}) == 202
    assert raw_swift.head_object(swift_container, "d")[1]["x-object-meta-color"] == "blue"
    assert raw_swift.delete_object(swift_container, "d") == 204
    assert raw_swift.head_object(swift_container, "d")[0] == 404
