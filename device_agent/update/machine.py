"""The update state machine: pure data and decisions, no I/O.

One table, ``TRANSITIONS[(state, event)] -> state``, holds the whole flow (an unknown pair is a bug and raises
:class:`InvalidTransition`). ``RESUME`` says what a restarted agent does with each persisted state; ``plan_resume``
adds the loop guard; ``reconcile`` decides what a ``desired`` message asks for. The updater (``updater.py``) carries
the decisions out and persists the record before every side effect.

::

    IDLE → DOWNLOADING → VERIFYING → STAGED → SELF_TEST → SWITCHING → PROBATION → COMMITTED → IDLE
     failure before the switch ───────────────────────▶ FAILED(reason) → IDLE
     failure after the switch (or manual) ─▶ ROLLING_BACK → FAILED(reason) → IDLE
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

from edgekit.protocol import EventName, Reason, UpdateState

from .errors import UpdateStateError

__all__ = ["State", "Event", "Reason", "TRANSITIONS", "PRE_SWITCH", "POST_SWITCH", "InvalidTransition", "next_state",
           "event_name"]


#: The states and reason codes are wire vocabulary: they live in :mod:`edgekit.protocol`.
State = UpdateState


class Event(str, enum.Enum):
    START = "start"                      # a desired model differs from the running one
    DOWNLOADED = "downloaded"            # the artifact is complete on disk (or was already in the store)
    VERIFIED = "verified"                # sha256 + Ed25519 + structure checked, installed into the store
    BEGIN_TEST = "begin_test"            # staged model handed to the self-test
    TEST_PASSED = "test_passed"          # golden vectors within tolerance, latency within policy
    SWITCHED = "switched"                # store pointer moved and the serving slot swapped
    PROBATION_PASSED = "probation_passed"
    DONE = "done"                        # bookkeeping finished (GC, history), back to IDLE
    FAIL = "fail"                        # anything went wrong; carries a reason code
    ROLLBACK = "rollback"                # a manual rollback request
    ROLLED_BACK = "rolled_back"          # previous model is current and serving again

    def __str__(self) -> str:
        return self.value


S, E = State, Event

#: The whole flow. Failures before the switch go straight to FAILED (nothing to undo); after it, through ROLLING_BACK.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.IDLE, E.START): S.DOWNLOADING,
    (S.IDLE, E.ROLLBACK): S.ROLLING_BACK,
    (S.DOWNLOADING, E.DOWNLOADED): S.VERIFYING,
    (S.DOWNLOADING, E.FAIL): S.FAILED,
    (S.VERIFYING, E.VERIFIED): S.STAGED,
    (S.VERIFYING, E.FAIL): S.FAILED,
    (S.STAGED, E.BEGIN_TEST): S.SELF_TEST,
    (S.STAGED, E.FAIL): S.FAILED,
    (S.SELF_TEST, E.TEST_PASSED): S.SWITCHING,
    (S.SELF_TEST, E.FAIL): S.FAILED,
    (S.SWITCHING, E.SWITCHED): S.PROBATION,
    (S.SWITCHING, E.FAIL): S.ROLLING_BACK,
    (S.PROBATION, E.PROBATION_PASSED): S.COMMITTED,
    (S.PROBATION, E.FAIL): S.ROLLING_BACK,
    (S.PROBATION, E.ROLLBACK): S.ROLLING_BACK,
    (S.COMMITTED, E.DONE): S.IDLE,
    (S.ROLLING_BACK, E.ROLLED_BACK): S.FAILED,
    (S.ROLLING_BACK, E.FAIL): S.FAILED,
    (S.FAILED, E.DONE): S.IDLE,
}

#: States reached before anything the device serves has changed: a failure there leaves the old model untouched.
PRE_SWITCH = frozenset({S.DOWNLOADING, S.VERIFYING, S.STAGED, S.SELF_TEST})
#: States in which the new model may be current: leaving them unfinished means rolling back.
POST_SWITCH = frozenset({S.SWITCHING, S.PROBATION})


class InvalidTransition(UpdateStateError):
    """(state, event) is not in the table: a bug in the caller, never a user error."""


def next_state(state: State | str, event: Event | str) -> State:
    """The table lookup; raises InvalidTransition for a pair the flow does not have."""
    try:
        key = (State(state), Event(event))
    except ValueError:
        raise InvalidTransition(f"unknown state or event: {state!r}, {event!r}") from None
    try:
        return TRANSITIONS[key]
    except KeyError:
        raise InvalidTransition(f"no transition from {key[0].value} on {key[1].value}") from None


def event_name(src: State, event: Event, dst: State) -> EventName:
    """The name published on the ``events`` topic for one transition."""
    N = EventName
    if dst is S.FAILED:
        return N.ROLLED_BACK if src is S.ROLLING_BACK and event is E.ROLLED_BACK else N.FAILED
    if dst is S.ROLLING_BACK:
        return N.ROLLBACK_REQUESTED if event is E.ROLLBACK else N.ROLLING_BACK
    return {
        S.DOWNLOADING: N.DOWNLOADING, S.VERIFYING: N.DOWNLOADED, S.STAGED: N.VERIFIED, S.SELF_TEST: N.SELF_TEST,
        S.SWITCHING: N.SELF_TEST_PASSED, S.PROBATION: N.SWITCHED, S.COMMITTED: N.COMMITTED, S.IDLE: N.IDLE,
    }[dst]


# --- restart -------------------------------------------------------------------------------------------------------


class Resume(str, enum.Enum):
    NOTHING = "nothing"      # nothing was in flight
    CONTINUE = "continue"    # re-run the state's action (each is idempotent)
    ROLLBACK = "rollback"    # cannot know what the crash left half-done: go back to the previous model


#: What a restarted agent does with each persisted state.
RESUME: dict[State, Resume] = {
    S.IDLE: Resume.NOTHING,
    S.DOWNLOADING: Resume.CONTINUE,    # Range-resume from the partial file
    S.VERIFYING: Resume.CONTINUE,      # verification is read-only; install into the store is idempotent
    S.STAGED: Resume.CONTINUE,
    S.SELF_TEST: Resume.CONTINUE,      # the self-test runs in its own process and has no side effects
    S.SWITCHING: Resume.ROLLBACK,      # the pointer may or may not have moved; the switch itself may have crashed us
    S.PROBATION: Resume.ROLLBACK,      # a crash in probation is a failed probation
    S.COMMITTED: Resume.CONTINUE,      # finish GC and go IDLE
    S.ROLLING_BACK: Resume.CONTINUE,   # restoring the previous model is idempotent
    S.FAILED: Resume.CONTINUE,         # finish bookkeeping and go IDLE
}
if set(RESUME) != set(State):  # a table invariant, checked at import
    raise ImportError("RESUME must name every State")


@dataclass(frozen=True)
class ResumePlan:
    """What to do after a restart found ``state`` persisted: ``event``/``reason`` to apply first (or None), and
    whether to run the (resulting) state's action afterwards. ``crashes`` is the updated per-update crash count."""

    event: Event | None
    reason: Reason | None
    crashes: int
    run: bool
    clean: bool = False


def plan_resume(state: State | str, crashes: int, limit: int, clean: bool = False) -> ResumePlan:
    """Decide how to resume after a restart. Every restart that finds an update in flight counts as a crash of that
    update, unless the agent stopped cleanly (``clean``: it recorded the stop, so nothing was left half-done and the
    state's action simply runs again); once an update has crashed the agent ``limit`` times it is aborted (the loop
    guard)."""
    state = State(state)
    mode = RESUME[state]
    if mode is Resume.NOTHING:
        return ResumePlan(None, None, crashes, run=False)
    if clean:
        return ResumePlan(None, None, crashes, run=True, clean=True)
    crashes += 1
    looping = crashes >= limit
    if mode is Resume.ROLLBACK:
        return ResumePlan(E.FAIL, Reason.CRASH_LOOP if looping else Reason.CRASH, crashes, run=True)
    if looping and state in PRE_SWITCH:
        return ResumePlan(E.FAIL, Reason.CRASH_LOOP, crashes, run=True)
    if looping and state is S.ROLLING_BACK:
        # restoring the previous model keeps crashing us: stop trying, keep whatever the store says is current
        return ResumePlan(E.FAIL, Reason.CRASH_LOOP, crashes, run=True)
    return ResumePlan(None, None, crashes, run=True)


# --- reconciliation ------------------------------------------------------------------------------------------------


class Action(str, enum.Enum):
    NONE = "none"            # converged, or already working on it
    START = "start"          # begin an update to the desired model
    SUPERSEDE = "supersede"  # abort the update in flight (pre-switch), then start the new one
    DEFER = "defer"          # an update past the switch is finishing; look again when it is done
    REJECTED = "rejected"    # this exact desired model already failed here; wait for a new desired


def reconcile(desired: Mapping[str, Any] | None, current_sha: str | None, state: State | str,
              target_sha: str | None, rejected: set[tuple[str, str | None]],
              rollout_id: str | None = None) -> Action:
    """What a ``desired`` model (``{name, version, sha256, url, size}``) asks of a device in ``state`` that serves
    ``current_sha`` and works on ``target_sha``. ``rejected`` holds (sha256, rollout_id) pairs that failed here;
    rollout id ``*`` (a manual rollback) rejects the model whatever the rollout."""
    if not desired:
        return Action.NONE
    state = State(state)
    want = desired["sha256"]
    if state is not S.IDLE:
        if want == target_sha:
            return Action.NONE
        if state in PRE_SWITCH:
            return Action.SUPERSEDE
        return Action.DEFER
    if want == current_sha:
        return Action.NONE
    if (want, rollout_id) in rejected or (want, "*") in rejected:
        return Action.REJECTED
    return Action.START
