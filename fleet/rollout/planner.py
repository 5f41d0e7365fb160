"""The rollout planner: a pure function ``plan(rollout, device_states, telemetry, now) -> actions``.

It reads nothing and writes nothing. Given where a rollout stands, what each device reports and a telemetry summary
(inference count, errors and p95 per device and model version), it returns what should happen next:

1. update each assigned device's status from its outcome events (committed / failed / timed out);
2. while running, assign the current stage's cohort: online devices first, offline ones only when the stage needs
   more devices than are online (their retained ``desired`` makes them converge when they reconnect);
3. evaluate the cohort against the policy: success and failure thresholds, self-test failures, the error rate of the
   new model, and the p95 latency of the new model against the previous one *on the same devices*;
4. decide: hold, start the soak, advance, wait for approval, complete, or fail (pause or abort per the policy);
5. after an abort, revert every device the rollout touched to its previous desired state.

Every decision carries the numbers behind it (``Decide.numbers``), which the engine writes to the audit log.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from edgekit.protocol import SELF_TEST_REASONS, EventName, UpdateState

from .model import (ABORTED, COMMITTED, FAILED, FAILURE_STATUSES, FINAL_STATUSES, PENDING, REPLACED, REVERTED,
                    RUNNING, TIMED_OUT, Assignment, DeviceState, ModelStats, Rollout, RolloutEvent, transition)
from .policy import format_pct, stage_sizes

#: An update outcome that failed the assignment.
FAILURE_EVENTS = (EventName.FAILED, EventName.ROLLED_BACK)
#: Update states in which a device that already runs the rollout's model counts as committed (None: never updated).
SETTLED_STATES = (None, UpdateState.IDLE, UpdateState.COMMITTED)

# --- actions ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignDevice:
    """Publish the rollout's bundle as the device's desired state."""

    device_id: str
    stage: int
    previous: Mapping[str, Any] | None
    online: bool


@dataclass(frozen=True)
class SetDeviceStatus:
    device_id: str
    status: str
    at: float
    reason: str | None = None


@dataclass(frozen=True)
class StartSoak:
    stage: int
    numbers: Mapping[str, Any]


@dataclass(frozen=True)
class Decide:
    """A state-machine event with the numbers behind it (``advance``, ``complete``, ``fail_abort``, ...)."""

    event: str
    from_state: str
    to_state: str
    stage: int
    next_stage: int
    reason: str
    numbers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RevertDevice:
    """Republish the device's previous desired state (None: clear the retained desired)."""

    device_id: str
    previous: Mapping[str, Any] | None


@dataclass(frozen=True)
class FinishRevert:
    devices: int


Action = AssignDevice | SetDeviceStatus | StartSoak | Decide | RevertDevice | FinishRevert

def is_self_test_failure(reason: str | None) -> bool:
    """Whether an assignment's reason (``"<event>: <reason code>"``, see :func:`outcome_reason`) is a self-test
    refusal: the agent's reason code is one of :data:`edgekit.protocol.SELF_TEST_REASONS`."""
    event, _, code = (reason or "").partition(": ")
    return event in (EventName.FAILED, EventName.ROLLED_BACK) and code in SELF_TEST_REASONS


def outcome_reason(event: str, code: str | None) -> str:
    """The assignment reason recorded for a failure outcome event (read back by :func:`is_self_test_failure`)."""
    return f"{event}: {code or 'no reason given'}"


# --- step 1: device statuses -----------------------------------------------------------------------------------------


def device_status(a: Assignment, dev: DeviceState | None, sha256: str, timeout: float,
                  now: float) -> tuple[str, float | None, str | None]:
    """(status, status_at, reason) of one assignment given what the device reports now."""
    status, at, reason = a.status, a.status_at, a.reason
    if status in FINAL_STATUSES or dev is None:
        return status, at, reason
    out = dev.outcome
    fresh = out is not None and out.at >= a.assigned_at and out.sha256 in (sha256, None)
    if fresh and out.event == EventName.COMMITTED and (status != COMMITTED):
        return COMMITTED, out.at, None
    if fresh and out.event in FAILURE_EVENTS and status != FAILED and (at is None or out.at > at
                                                                       or status == PENDING):
        return FAILED, out.at, outcome_reason(out.event, out.reason)
    if status == PENDING and dev.model_sha == sha256 and dev.update_state in SETTLED_STATES:
        return COMMITTED, now, "already running this model"
    if status == PENDING and dev.online:
        since = max(a.assigned_at, dev.online_since or a.assigned_at)
        if now - since > timeout:
            return TIMED_OUT, now, f"no outcome {now - since:.0f}s after assignment (timeout {timeout:.0f}s)"
    return status, at, reason


# --- step 3: evaluating a cohort -------------------------------------------------------------------------------------


def evaluate(rollout: Rollout, assignments: Mapping[str, Assignment], devices: Mapping[str, DeviceState],
             telemetry: Mapping[tuple[str, str], ModelStats], size: int) -> dict[str, Any]:
    """The numbers a decision rests on, for the cumulative cohort of the current stage."""
    p = rollout.policy
    ack = rollout.acknowledged_at
    counted = {}
    for d, a in assignments.items():
        if ack is not None and a.status in FAILURE_STATUSES and (a.status_at or 0) <= ack:
            continue  # a failure the operator accepted with 'resume'
        counted[d] = a
    committed = [d for d, a in counted.items() if a.status == COMMITTED]
    failed = [d for d, a in counted.items() if a.status == FAILED]
    timed_out = [d for d, a in counted.items() if a.status == TIMED_OUT]
    pending = [d for d, a in counted.items() if a.status == PENDING]
    pending_online = [d for d in pending if devices.get(d) is not None and devices[d].online]
    evaluable = len(committed) + len(failed) + len(timed_out) + len(pending_online)
    self_test = [d for d in failed if is_self_test_failure(counted[d].reason)]
    success_rate = len(committed) / evaluable if evaluable else None
    failure_rate = (len(failed) + len(timed_out)) / evaluable if evaluable else None

    version = rollout.bundle.version
    inferences = errors = 0
    regressions: list[float] = []
    increases: list[float] = []
    new_p95: list[float] = []
    old_p95: list[float] = []
    for d in committed:
        new = telemetry.get((d, version))
        if new is None:
            continue
        inferences += new.count
        errors += new.errors
        prev_version = counted[d].previous_version
        old = telemetry.get((d, prev_version)) if prev_version and prev_version != version else None
        if new.p95_ms is not None and old is not None and old.p95_ms:
            new_p95.append(new.p95_ms)
            old_p95.append(old.p95_ms)
            regressions.append(new.p95_ms / old.p95_ms - 1.0)
            increases.append(new.p95_ms - old.p95_ms)
    return {
        "stage": rollout.stage, "stage_label": p.stages[rollout.stage].label(), "stage_size": size,
        "target_devices": len(rollout.devices), "assigned": len(assignments), "evaluable": evaluable,
        "committed": len(committed), "failed": len(failed), "self_test_failed": len(self_test),
        "timed_out": len(timed_out), "pending": len(pending), "pending_offline": len(pending) - len(pending_online),
        "accepted_failures": len(assignments) - len(counted),
        "success_rate": success_rate, "failure_rate": failure_rate,
        "success_threshold": p.success_threshold, "failure_threshold": p.failure_threshold,
        "inferences": inferences, "errors": errors,
        "error_rate": errors / inferences if inferences else None, "max_error_rate": p.max_error_rate,
        "latency_devices": len(regressions),
        "p95_new_ms": statistics.median(new_p95) if new_p95 else None,
        "p95_previous_ms": statistics.median(old_p95) if old_p95 else None,
        "p95_regression": statistics.median(regressions) if regressions else None,
        "p95_regression_worst": max(regressions) if regressions else None,
        "p95_increase_ms": statistics.median(increases) if increases else None,
        "max_p95_regression": p.max_p95_regression, "p95_slack_ms": p.p95_slack_ms,
        "min_inferences": p.min_inferences,
        "failed_devices": sorted(failed + timed_out),
    }


def failure_reasons(n: Mapping[str, Any]) -> list[str]:
    """Why the cohort fails the policy (empty: it does not)."""
    reasons = []
    if n["failure_rate"] is not None and n["failure_rate"] > n["failure_threshold"]:
        reasons.append(f"failure rate {format_pct(n['failure_rate'])} > {format_pct(n['failure_threshold'])} "
                       f"({n['failed']} failed, {n['self_test_failed']} of them self-test, "
                       f"{n['timed_out']} timed out, of {n['evaluable']})")
    if n["error_rate"] is not None and n["inferences"] >= max(1, n["min_inferences"]) \
            and n["error_rate"] > n["max_error_rate"]:
        reasons.append(f"error rate {format_pct(n['error_rate'])} > {format_pct(n['max_error_rate'])} "
                       f"({n['errors']} of {n['inferences']} inferences)")
    if n["p95_regression"] is not None and n["inferences"] >= n["min_inferences"] \
            and n["p95_regression"] > n["max_p95_regression"] and n["p95_increase_ms"] > n["p95_slack_ms"]:
        reasons.append(f"p95 regression {format_pct(n['p95_regression'])} > {format_pct(n['max_p95_regression'])} "
                       f"({n['p95_new_ms']:.3g} ms vs {n['p95_previous_ms']:.3g} ms on {n['latency_devices']} "
                       f"devices, +{n['p95_increase_ms']:.3g} ms > {n['p95_slack_ms']:g} ms)")
    return reasons


# --- the planner -----------------------------------------------------------------------------------------------------


def _decide(rollout: Rollout, event: str, reason: str, numbers: Mapping[str, Any]) -> Decide:
    nxt = transition(rollout.state, event, rollout.id)
    next_stage = rollout.stage + 1 if event == RolloutEvent.ADVANCE else rollout.stage
    return Decide(event, rollout.state, nxt, rollout.stage, next_stage, reason, dict(numbers))


def _pick(candidates: Sequence[str], devices: Mapping[str, DeviceState], n: int) -> list[str]:
    """``n`` devices, online first, each group in id order (deterministic)."""
    online = [d for d in candidates if devices.get(d) is not None and devices[d].online]
    taken = set(online)
    offline = [d for d in candidates if d not in taken]
    return (sorted(online) + sorted(offline))[:max(0, n)]


#: The most devices one tick assigns (``plan(max_assign=...)``). A larger stage is assigned over several ticks, so
#: that one tick's transaction and its desired states stay small (assigning 10,000 devices at once took a 27 s tick).
ASSIGN_CHUNK = 500


def plan(rollout: Rollout, device_states: Mapping[str, DeviceState],
         telemetry: Mapping[tuple[str, str], ModelStats], now: float,
         max_assign: int | None = ASSIGN_CHUNK) -> list[Action]:
    """What to do next for ``rollout``. Pure: the inputs are not modified.

    At most ``max_assign`` devices are assigned per call (None: the whole stage at once). While a stage is only
    partly assigned, its cohort so far is checked against the failure thresholds *before* the next chunk: a failing
    cohort stops the rollout there, and the remaining devices of the stage are never assigned. Success is decided
    only once the whole stage is assigned."""
    p = rollout.policy
    actions: list[Action] = []

    # 1. statuses (for every state: devices keep converging after completion, and outcomes are kept true)
    assignments: dict[str, Assignment] = {}
    for d, a in rollout.assignments.items():
        status, at, reason = device_status(a, device_states.get(d), rollout.bundle.sha256, p.device_timeout, now)
        if (status, at, reason) != (a.status, a.status_at, a.reason):
            actions.append(SetDeviceStatus(d, status, at if at is not None else now, reason))
        assignments[d] = Assignment(a.device_id, a.stage, a.assigned_at, a.previous, status, at, reason)

    if rollout.state == ABORTED and not rollout.reverted:
        touched = sorted(d for d, a in assignments.items() if a.status not in FINAL_STATUSES)
        for d in touched:
            actions.append(RevertDevice(d, assignments[d].previous))
            actions.append(SetDeviceStatus(d, REVERTED, now, "rollout aborted"))
        actions.append(FinishRevert(len(touched)))
        return actions
    if rollout.state != RUNNING:
        return actions  # paused / awaiting approval / finished: only statuses change

    # 2. the cohort of the current stage (at most max_assign more devices per tick)
    sizes = stage_sizes(p.stages, len(rollout.devices))
    size = sizes[rollout.stage]
    missing = size - len(assignments)
    if missing > 0 and any(a.stage == rollout.stage for a in assignments.values()):
        # the stage is partly assigned (an earlier chunk): no further chunk for a cohort that already fails
        numbers = evaluate(rollout, assignments, device_states, telemetry, size)
        reasons = failure_reasons(numbers)
        if reasons:
            actions.append(_decide(rollout, p.failure_mode.event, "; ".join(reasons), numbers))
            return actions
    chunk = missing if max_assign is None else min(missing, max(1, max_assign))
    if chunk > 0:
        candidates = [d for d in rollout.devices if d not in assignments]
        for d in _pick(candidates, device_states, chunk):
            dev = device_states.get(d)
            previous = dict(dev.desired) if dev is not None and dev.desired else (
                dict(dev.model) if dev is not None and dev.model else None)
            actions.append(AssignDevice(d, rollout.stage, previous, bool(dev and dev.online)))
            assignments[d] = Assignment(d, rollout.stage, now, previous)

    # 3. evaluate
    numbers = evaluate(rollout, assignments, device_states, telemetry, size)
    if chunk < missing:
        # more chunks to come: only a failing cohort is decided on now, success waits for the whole stage
        reasons = failure_reasons(numbers)
        if reasons:
            actions.append(_decide(rollout, p.failure_mode.event, "; ".join(reasons), numbers))
        return actions
    numbers["soak"] = p.soak
    numbers["soak_elapsed"] = (now - rollout.soak_started_at) if rollout.soak_started_at is not None else None

    # 4. decide
    reasons = failure_reasons(numbers)
    if reasons:
        mode = p.failure_mode
        actions.append(_decide(rollout, mode.event, "; ".join(reasons), numbers))
        return actions
    success = numbers["success_rate"]
    if success is None:
        return actions  # nobody in the cohort is online yet: wait
    if success < p.success_threshold:
        if numbers["pending"] - numbers["pending_offline"] == 0:
            # every online device has an outcome and the stage still falls short: it cannot succeed any more
            actions.append(_decide(rollout, p.failure_mode.event,
                                   f"success rate {format_pct(success)} < {format_pct(p.success_threshold)} "
                                   f"with no device left to report", numbers))
        return actions
    if rollout.soak_started_at is None:
        actions.append(StartSoak(rollout.stage, numbers))
        if p.soak > 0:
            return actions
        numbers["soak_elapsed"] = 0.0
    elif now - rollout.soak_started_at < p.soak:
        return actions
    if numbers["inferences"] < p.min_inferences:
        return actions  # soaked, but the gates have not seen enough inferences of the new model yet
    passed = (f"stage {rollout.stage + 1} ({p.stages[rollout.stage].describe()}) passed: "
              f"{numbers['committed']}/{numbers['evaluable']} committed "
              f"({format_pct(success)} >= {format_pct(p.success_threshold)})")
    if numbers["p95_regression"] is not None:
        passed += f", p95 {format_pct(numbers['p95_regression'])} ({numbers['p95_increase_ms']:+.3g} ms) vs previous"
        if numbers["p95_regression"] > p.max_p95_regression:
            passed += f", within the {p.p95_slack_ms:g} ms slack"
    if rollout.stage + 1 >= len(p.stages):
        actions.append(_decide(rollout, RolloutEvent.COMPLETE, passed, numbers))
    elif p.require_approval:
        actions.append(_decide(rollout, RolloutEvent.AWAIT_APPROVAL, passed + "; waiting for approval", numbers))
    else:
        actions.append(_decide(rollout, RolloutEvent.ADVANCE, passed, numbers))
    return actions


def summarize(rollout: Rollout) -> dict[str, int]:
    """Counts of assignment statuses (for views)."""
    out = {PENDING: 0, COMMITTED: 0, FAILED: 0, TIMED_OUT: 0, REVERTED: 0, REPLACED: 0}
    for a in rollout.assignments.values():
        out[a.status] = out.get(a.status, 0) + 1
    out["unassigned"] = len(rollout.devices) - len(rollout.assignments)
    return out


__all__ = ["ASSIGN_CHUNK", "Action", "AssignDevice", "SetDeviceStatus", "StartSoak", "Decide", "RevertDevice",
           "FinishRevert", "plan", "evaluate", "failure_reasons", "device_status", "is_self_test_failure", "summarize"]
