"""Retrying Swift operations in trio: classification, jittered backoff, a deadline.

swiftclient's own retries sleep in `time.sleep` (not cancellable) with no jitter and no
deadline, so every Connection runs with `retries=0` and this module decides instead: transient
failures (5xx but 501/505, 408, 429/498, dropped connections, timeouts) are retried with
jittered exponential backoff until a per-operation deadline; anything else is raised at once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from seqwrite.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how often to retry one operation."""

    deadline: float = 300.0  # seconds from the first failure until we give up
    first_backoff: float = 0.2
    max_backoff: float = 20.0

    def backoff(self, attempt: int) -> float:
        """Sleep before retry number `attempt` (1-based): exponential, jittered in [0.5x, 1.5x]."""
        base: float = min(self.max_backoff, self.first_backoff * (2 ** (attempt - 1)))
        return base * random.uniform(0.5, 1.5)


async def retrying(
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    describe: Callable[[BaseException], str] = str,
    progressed: Callable[[], bool] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run `op` until it succeeds, a non-transient error occurs, or the deadline passes.

    A non-transient exception propagates unchanged. Exhausting the deadline raises
    StoreUnavailable naming the operation and the last error. The deadline counts from the
    first failure since the last progress: when `progressed()` says the failed attempt got
    further than the one before (a long upload that fails again hours later), it starts over.
    `on_retry` is called before each retry (statistics).
    """
    attempt = 0
    give_up_at: float | None = None
    while True:
        try:
            return await op()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = trio.current_time()
            if progressed is not None and progressed():
                give_up_at, attempt = None, 0
            if give_up_at is None:
                give_up_at = now + policy.deadline
            attempt += 1
            delay = policy.backoff(attempt)
            if now + delay >= give_up_at:
                raise StoreUnavailable(
                    f"{what}: Swift still failing after {attempt} attempts: {describe(exc)}"
                ) from exc
            level = (logging.DEBUG if attempt < 3
                     else logging.INFO if attempt < 6 else logging.WARNING)
            log.log(level, "%s: transient failure (%s), retry %d in %.1fs",
                    what, describe(exc), attempt, delay)
            if on_retry is not None:
                on_retry()
            await trio.sleep(delay)
