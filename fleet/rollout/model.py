"""The rollout's data: the rollout itself, its per-device assignments, and the state-machine table.

These are plain dataclasses shared by the pure planner, the engine (which loads and saves them) and the CLI views.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import RolloutStateError
from .policy import Policy

# --- rollout states: a transition table (state, event) -> state -------------------------------------------------------


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"


class RolloutEvent(enum.StrEnum):
    """State-machine events, and the audit log's names for them."""

    ADVANCE = "advance"                  # stage passed; the next stage starts
    AWAIT_APPROVAL = "await_approval"
    COMPLETE = "complete"
    FAIL_PAUSE = "fail_pause"
    FAIL_ABORT = "fail_abort"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    APPROVE = "approve"
    SUPERSEDE = "supersede"
    # audit-only: not transitions
    CREATE = "create"
    REVERT = "revert"
    DEVICE_COMMITTED = "device_committed"


class RolloutKind(enum.StrEnum):
    ROLLOUT = "rollout"
    ROLLBACK = "rollback"


R, V = RolloutState, RolloutEvent
RUNNING, AWAITING_APPROVAL, PAUSED, COMPLETED, ABORTED, SUPERSEDED = (
    R.RUNNING, R.AWAITING_APPROVAL, R.PAUSED, R.COMPLETED, R.ABORTED, R.SUPERSEDED)
ACTIVE_STATES = (RUNNING, AWAITING_APPROVAL, PAUSED)
TERMINAL_STATES = (COMPLETED, ABORTED, SUPERSEDED)

TRANSITIONS: dict[tuple[RolloutState, RolloutEvent], RolloutState] = {
    (R.RUNNING, V.ADVANCE): R.RUNNING,              # stage passed; the next stage starts
    (R.RUNNING, V.AWAIT_APPROVAL): R.AWAITING_APPROVAL,
    (R.RUNNING, V.COMPLETE): R.COMPLETED,
    (R.RUNNING, V.FAIL_PAUSE): R.PAUSED,
    (R.RUNNING, V.FAIL_ABORT): R.ABORTED,
    (R.RUNNING, V.PAUSE): R.PAUSED,
    (R.RUNNING, V.ABORT): R.ABORTED,
    (R.RUNNING, V.SUPERSEDE): R.SUPERSEDED,
    (R.AWAITING_APPROVAL, V.APPROVE): R.RUNNING,    # the next stage starts
    (R.AWAITING_APPROVAL, V.PAUSE): R.PAUSED,
    (R.AWAITING_APPROVAL, V.ABORT): R.ABORTED,
    (R.AWAITING_APPROVAL, V.SUPERSEDE): R.SUPERSEDED,
    (R.PAUSED, V.RESUME): R.RUNNING,
    (R.PAUSED, V.ABORT): R.ABORTED,
    (R.PAUSED, V.SUPERSEDE): R.SUPERSEDED,
}
# events that move the rollout to its next stage
STAGE_EVENTS = (V.ADVANCE, V.APPROVE)
# events an operator may send (the others come from the planner or the engine)
OPERATOR_EVENTS = (V.PAUSE, V.RESUME, V.ABORT, V.APPROVE)


def transition(state: str, event: str, rollout_id: str = "") -> RolloutState:
    """The next state, or RolloutStateError for a pair the table does not allow."""
    nxt = TRANSITIONS.get((state, event))  # type: ignore[call-overload]  # a str hashes as its enum
    if nxt is None:
        allowed = sorted(e for (s, e) in TRANSITIONS if s == state and e in OPERATOR_EVENTS)
        what = f"rollout {rollout_id} is {state}" if rollout_id else f"a {state} rollout"
        raise RolloutStateError(f"cannot {event.replace('_', ' ')}: {what}",
                                hint=(f"allowed now: {', '.join(allowed)}" if allowed else
                                      "it is finished; create a new rollout instead"))
    return nxt


# --- device assignment statuses ---------------------------------------------------------------------------------------



class AssignmentStatus(enum.StrEnum):
    PENDING = "pending"
    COMMITTED = "committed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REVERTED = "reverted"
    REPLACED = "replaced"  # a later rollout took the device over before it reported an outcome for this one


A = AssignmentStatus
PENDING, COMMITTED, FAILED, TIMED_OUT, REVERTED, REPLACED = (A.PENDING, A.COMMITTED, A.FAILED, A.TIMED_OUT, A.REVERTED,
                                                             A.REPLACED)
FINAL_STATUSES = (REVERTED, REPLACED)
FAILURE_STATUSES = (FAILED, TIMED_OUT)


@dataclass(frozen=True)
class BundleRef:
    """The model a rollout installs, as it goes into the ``desired`` message."""

    name: str
    version: str
    sha256: str
    url: str
    size: int = 0
    payloads: tuple[str, ...] = ()   # multi-payload bundles (manifest schema 2): the targets it carries
    schema: int = 1

    def desired_model(self) -> dict[str, Any]:
        model: dict[str, Any] = {"name": self.name, "version": self.version, "sha256": self.sha256, "url": self.url,
                                 "size": self.size}
        if self.schema != 1:  # lets a device refuse, before downloading, a bundle with no payload it can run
            model.update(payloads=list(self.payloads), schema=self.schema)
        return model


@dataclass
class Assignment:
    device_id: str
    stage: int
    assigned_at: float
    previous: dict[str, Any] | None = None  # the desired model to republish on abort (None: clear desired)
    status: str = PENDING
    status_at: float | None = None
    reason: str | None = None

    @property
    def previous_version(self) -> str | None:
        return (self.previous or {}).get("version")


@dataclass
class Rollout:
    id: str
    bundle: BundleRef
    policy: Policy
    target: str
    devices: tuple[str, ...]                 # the target, resolved when the rollout was created
    created_at: float
    state: str = RUNNING
    stage: int = 0                           # index into policy.stages
    stage_started_at: float | None = None
    soak_started_at: float | None = None
    acknowledged_at: float | None = None     # failures up to this time were accepted by 'resume'
    reverted: bool = False                   # abort has republished the previous desired states
    kind: str = RolloutKind.ROLLOUT          # "rollout" or "rollback"
    assignments: dict[str, Assignment] = field(default_factory=dict)


# --- what the planner reads about devices -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A device's latest update outcome event (``committed``, ``rolled_back`` or ``failed``)."""

    event: str
    at: float
    sha256: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DeviceState:
    device_id: str
    online: bool
    online_since: float | None = None
    model: Mapping[str, Any] | None = None     # what the device runs now: name, version, sha256
    desired: Mapping[str, Any] | None = None   # what the fleet last asked it to run (None: nothing yet; the store
    #                                            reads it only for devices the rollout has not assigned yet)
    update_state: str | None = None
    outcome: Outcome | None = None

    @property
    def model_sha(self) -> str | None:
        return (self.model or {}).get("sha256")


@dataclass(frozen=True)
class ModelStats:
    """Inference telemetry of one model version on one device over the rollout's window."""

    count: int = 0
    errors: int = 0
    p95_ms: float | None = None
