"""Crash injection: a pass told to crash after a named step stops dead there, as if the
process died (tests, and CCD_CRASH_AFTER for the CLI). Shared by the consolidation and the
settle passes, which each name their own steps."""

from __future__ import annotations

import logging

import trio

log = logging.getLogger(__name__)


class CrashInjected(BaseException):
    """The pass was told to crash at this point and stopped dead there (tests only)."""


class CrashPoints:
    """Mixin of a pass runner: `crash_after` names a step; `run_pass` runs inside `_scope`
    and raises CrashInjected if `_crashed` is set when the scope ends."""

    crash_after: str | None = None
    _scope: trio.CancelScope | None = None
    _crashed: str | None = None

    def _crash_after(self, point: str | None, points: tuple[str, ...]) -> None:
        """Set `crash_after`, one of this pass's `points` (or None)."""
        if point not in (None, *points):
            raise ValueError(f"crash_after must be one of {points}, not {point!r}")
        self.crash_after = point

    async def _crash(self, point: str) -> None:
        """If told to crash here: cancel the whole pass at once, as if the process died."""
        if self.crash_after != point or self._scope is None:
            return
        log.warning("crash injected after step %r", point)
        self._crashed = point
        self._scope.cancel()
        await trio.lowlevel.checkpoint()  # raises Cancelled: nothing after this point runs
