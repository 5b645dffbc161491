# Methods of Files kept in their own module: `self` is the whole Files (mypy's "misc" check
# wants an explicit self type to be a supertype of the mixin, which Files is not).
# mypy: disable-error-code="misc"
"""Stopping the mount (a part of `cloudfs.files.Files`): no new writers, open writers get a
grace period to close, what is still open is aborted (never committed: `session.ON_STOP`),
commits in progress complete."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from cloudfs.session import (
    ON_STOP,
    Committing,
    Failed,
    StopAction,
)

if TYPE_CHECKING:
    from cloudfs.files import Files

log = logging.getLogger("cloudfs.files")


class Stopping:
    """Files' stop sequence (mixed into Files; methods take the whole Files as self)."""

    async def wait_writers_closed(self: Files, grace: float) -> None:
        """Stopping: until no file is open for writing, or `grace` seconds."""
        self.stopping = True
        if self.handles.writable:
            log.info("stopping: waiting up to %.0f s for %d files open for writing to close",
                     grace, self.handles.writable)
            with trio.move_on_after(grace):
                await self.handles.wait_no_writers()

    def abort_unclosed(self: Files) -> None:
        """Apply ON_STOP to every session: abort what the application has not closed."""
        for session in list(self._sessions.values()):
            if ON_STOP[type(session.state)] is not StopAction.ABORT:
                continue
            path = self.ns.path_of(session.inode)
            shown = path.decode(errors="replace") if path else f"inode {session.inode}"
            log.warning("%s: not closed when the mount stopped: its write was aborted and "
                        "the file keeps its previous content", shown)
            owner = self.handles.find(session.owner)
            if owner is not None and owner.error is None:
                owner.error = "the mount stopped before the file was closed"
            self._drop(session, session.become(Failed("the mount stopped")))

    async def wait_commits(self: Files) -> None:
        """Until no session is committing (the application closed them: they complete)."""
        while any(isinstance(s.state, Committing) for s in self._sessions.values()):
            await self._session_ended.wait()
