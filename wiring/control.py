"""A daemon's control channel: a Unix socket answering one JSON request per line.

`cloudfs status`, `cloudfs stats` (and later commands) talk to a running mount through it,
never through a file inside the mount (which any user of the mount could read). The socket
lives in the runtime directory of the daemon's user and is named by the mount's device
number, so the command line finds it from the mount point alone, without a request to the
mount (a hung mount must not hang `cloudfs status`): /proc/self/mountinfo gives the device.

Who asks is known from the socket (SO_PEERCRED): operations marked `owner_only` answer only
the daemon's user and root; the others get EACCES.

    request:  {"op": "status", ...}\\n
    answer:   {"ok": true, "result": {...}}\\n  or  {"ok": false, "errno": 13, "error": "..."}\\n
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20
PEER_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a request."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Operation:
    """One thing the channel answers."""

    run: Callable[[dict[str, Any], Peer], Awaitable[Any]]
    owner_only: bool = True


class ControlError(Exception):
    """A request refused with an errno (sent to the client as such)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def runtime_dirs() -> list[Path]:
    """Where control sockets may live, the system's first: /run/cloudfs (root's daemons),
    then this user's runtime directory."""
    dirs = [Path("/run/cloudfs")]
    if os.geteuid() != 0:
        base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/cloudfs-{os.geteuid()}"
        dirs.append(Path(base) / "cloudfs")
    return dirs


def own_runtime_dir() -> Path:
    """This process's directory for its sockets (created 0755: the sockets are 0666, each
    request is authorised by its peer's uid)."""
    path = runtime_dirs()[-1] if os.geteuid() != 0 else runtime_dirs()[0]
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    return path


def mount_device(mountpoint: str | os.PathLike[str]) -> str | None:
    """"major:minor" of the FUSE mount at `mountpoint` (from /proc/self/mountinfo: no request
    to the mount), or None if nothing of cloudfs is mounted there."""
    # The kernel names mounts by their real path; the parent is resolved, never the mount
    # point itself (that would be a request to the mount, which may hang).
    absolute = os.path.abspath(mountpoint)
    target = os.path.join(os.path.realpath(os.path.dirname(absolute)),
                          os.path.basename(absolute))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if (_unescape(fields[4]) == target
                    and fields[sep + 1] in ("fuse.cloudfs", "fuseblk.cloudfs")):
                found: str = fields[2]
                return found
    return None


def mount_of(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(mount point, "major:minor") of the cloudfs mount holding the absolute, resolved
    ``path``: the innermost mount containing it (from /proc/self/mountinfo), if it is a cloudfs
    one; None if the path lies on another filesystem."""
    target = os.fspath(path)
    best: tuple[str, str, bool] | None = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = _unescape(fields[4])
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) >= len(best[0])):
                fstype = fields[fields.index("-") + 1]
                best = (point, fields[2], fstype in ("fuse.cloudfs", "fuseblk.cloudfs"))
    if best is None or not best[2]:
        return None
    return best[0], best[1]


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return path.encode().decode("unicode_escape").encode("latin-1").decode()


def _same_file(path: Path, st: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def socket_name(device: str) -> str:
    return f"mount-{device.replace(':', '-')}.sock"


class ControlServer:
    """Serves `operations` on a Unix socket until cancelled; the socket file goes with it."""

    def __init__(self, operations: Mapping[str, Operation]) -> None:
        self.operations = dict(operations)
        self.owner = os.geteuid()
        self.path: Path | None = None

    async def serve(self, path: Path, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a daemon that died: we own this device number now
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound: os.stat_result | None = None
        try:
            await sock.bind(str(path))
            bound = os.stat(path)
            os.chmod(path, 0o666)
            sock.listen(16)
            self.path = path
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(self._serve_one, conn)
        finally:
            sock.close()
            # Only our own socket: device numbers are reused, and a mount that got ours after
            # we unmounted may have bound its socket at this path already.
            if bound is not None and _same_file(path, bound):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    async def _serve_one(self, conn: trio.socket.SocketType) -> None:
        pid, uid, gid = PEER_CRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CRED.size))
        stream = trio.SocketStream(conn)
        async with stream:
            try:
                with trio.fail_after(30):
                    request = await _read_line(stream)
                answer = await self._answer(request, Peer(pid, uid, gid))
                await stream.send_all(json.dumps(answer).encode() + b"\n")
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                    ValueError) as exc:
                log.debug("control request from pid %d dropped: %s", pid, exc)

    async def _answer(self, raw: bytes, peer: Peer) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            name = request.get("op") if isinstance(request, dict) else None
            op = self.operations.get(name) if isinstance(name, str) else None
            if op is None:
                raise ControlError(errno.EINVAL, f"unknown request {raw[:80]!r}")
            if op.owner_only and peer.uid not in (0, self.owner):
                raise ControlError(errno.EACCES, "only the mount's owner and root may ask this")
            return {"ok": True, "result": await op.run(request, peer)}
        except ControlError as exc:
            return {"ok": False, "errno": exc.errno, "error": str(exc)}
        except json.JSONDecodeError:
            return {"ok": False, "errno": errno.EINVAL, "error": "not a JSON request"}


async def _read_line(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while b"\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
    return bytes(data.split(b"\n", 1)[0])


def request(mountpoint: str | os.PathLike[str], op: str, timeout: float = 60.0,
            **args: Any) -> Any:
    """Ask the daemon of the mount at `mountpoint` (blocking; for the command line). Raises
    ControlError with the daemon's errno, or ENOENT/ECONNREFUSED when no daemon answers."""
    device = mount_device(mountpoint)
    if device is None:
        raise ControlError(errno.ENOENT, f"{mountpoint} is not a cloudfs mount point")
    last: OSError | None = None
    for directory in runtime_dirs():
        path = directory / socket_name(device)
        if not path.exists():
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(path))
                sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
                data = bytearray()
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as exc:
            last = exc
            continue
        answer = json.loads(data)
        if not answer.get("ok"):
            raise ControlError(int(answer.get("errno", errno.EIO)), str(answer.get("error")))
        return answer["result"]
    reason = f" ({last.strerror})" if last is not None else ""
    raise ControlError(errno.ECONNREFUSED,
                       f"the daemon of {mountpoint} does not answer{reason}")
