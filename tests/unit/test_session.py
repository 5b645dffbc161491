"""Write session states: the allowed transitions and the stop policy cover every state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudfs.session import (
    ON_STOP,
    Cached,
    Committing,
    Failed,
    Journaling,
    StopAction,
    Streaming,
    WriteSession,
)
from wiring.journal import JournalFile

STATES: list[type[Any]] = [Journaling, Streaming, Cached, Committing, Failed]


def make(state_type: type[Any]) -> Any:
    return {Journaling: Journaling(JournalFile(Path("j"), -1), start=0),
            Streaming: Streaming(writer=None, start=0),  # type: ignore[arg-type]
            Cached: Cached(cache=None),  # type: ignore[arg-type]
            Committing: Committing(of=Streaming(writer=None, start=0)),  # type: ignore[arg-type]
            Failed: Failed("x")}[state_type]


def test_stop_policy_names_every_state() -> None:
    assert set(ON_STOP) == set(STATES)
    assert ON_STOP[Journaling] is ON_STOP[Streaming] is ON_STOP[Cached] is StopAction.ABORT
    assert ON_STOP[Committing] is StopAction.FINISH


@pytest.mark.parametrize("before", STATES)
@pytest.mark.parametrize("after", STATES)
def test_transitions(before: type[Any], after: type[Any]) -> None:
    allowed = {(Journaling, Streaming), (Journaling, Committing), (Journaling, Failed),
               (Streaming, Cached), (Streaming, Committing), (Streaming, Failed),
               (Cached, Committing), (Cached, Failed), (Committing, Failed)}
    session = WriteSession(1, 1, 0, False, make(before))
    if (before, after) in allowed:
        previous = session.become(make(after))
        assert isinstance(previous, before) and isinstance(session.state, after)
    else:
        with pytest.raises(AssertionError):
            session.become(make(after))
