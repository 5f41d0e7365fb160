"""The actions of the update states, one module per stretch of the flow: ``fetch`` (DOWNLOADING, VERIFYING,
STAGED), ``check`` (SELF_TEST), ``serve`` (SWITCHING, PROBATION, COMMITTED) and ``rollback`` (ROLLING_BACK, FAILED).

Each action takes a :class:`~.context.StepContext`, does its state's work idempotently and ends in one transition
(or raises :class:`~..errors.UpdateFailed` / :class:`~..errors.Superseded`, which the updater turns into FAIL).
"""

from __future__ import annotations

from typing import Callable

from ..machine import State
from . import check, fetch, rollback, serve
from .context import StepContext, Stopped

ACTIONS: dict[State, Callable[[StepContext], None]] = {
    State.DOWNLOADING: fetch.download, State.VERIFYING: fetch.verify, State.STAGED: fetch.staged,
    State.SELF_TEST: check.self_test,
    State.SWITCHING: serve.switch, State.PROBATION: serve.probation, State.COMMITTED: serve.committed,
    State.ROLLING_BACK: rollback.rolling_back, State.FAILED: rollback.failed,
}

__all__ = ["ACTIONS", "StepContext", "Stopped"]
