"""Errors of the updater, rooted at :class:`device_agent.errors.AgentError`.

:class:`UpdateFailed` carries the machine's reason code; the updater turns it into a FAIL transition.
"""

from __future__ import annotations

from ..errors import AgentError


class UpdateError(AgentError):
    """Base for every problem of the update subsystem."""


class UpdateStateError(UpdateError):
    """The persisted update state is unreadable or a transition is not in the table."""

    default_hint = "look at 'edgekit agent history'; removing update/state.json resets the updater to IDLE"


class UpdateFailed(UpdateError):
    """One step of an update failed; ``reason`` is a :class:`~device_agent.update.machine.Reason` value."""

    def __init__(self, reason: str, message: str, *, hint: str | None = None, retryable: bool = False,
                 detail: dict | None = None):
        super().__init__(message, hint=hint, code=str(reason), retryable=retryable)
        self.reason = str(reason)
        self.detail = detail or {}


class Superseded(UpdateError):
    """A newer desired model arrived while this update was still before its switch."""


class RollbackError(UpdateError):
    """A rollback was asked for but cannot be done (no previous model, agent busy, timeout)."""

    default_hint = "see 'edgekit agent history' for what the device runs and ran before"
