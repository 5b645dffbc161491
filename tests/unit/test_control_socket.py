"""The control channel's socket file: a daemon going away removes its own socket only."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import trio

from wiring.control import ControlServer


async def test_a_stopping_daemon_leaves_a_newer_socket_at_its_path(tmp_path: Path) -> None:
    """Device numbers are reused: a mount that got the old one's number binds the same path
    while the old daemon is still shutting down; the old one's exit must not unlink it."""
    path = tmp_path / "mount-0-99.sock"
    old, new = ControlServer({}), ControlServer({})
    async with trio.open_nursery() as outer:
        old_scope = trio.CancelScope()

        async def run_old(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
            with old_scope:
                await old.serve(path, task_status=task_status)

        await outer.start(run_old)
        await outer.start(new.serve, path)  # unlinks the old socket file, binds its own
        new_inode = os.stat(path).st_ino
        old_scope.cancel()
        await trio.sleep(0.05)
        assert path.exists() and os.stat(path).st_ino == new_inode
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # the new daemon still answers there
        probe.close()
        outer.cancel_scope.cancel()
    assert not path.exists()  # and its own exit does remove it
