"""The pure planner, driven by tables of scenarios: (rollout, devices, telemetry, now) -> expected actions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgekit.protocol import EventName, Reason, UpdateState
from fleet.rollout.errors import RolloutStateError
from fleet.rollout.model import (ABORTED, AWAITING_APPROVAL, COMMITTED, FAILED, PAUSED, PENDING, REVERTED, RUNNING,
                                 TIMED_OUT, Assignment, BundleRef, DeviceState, ModelStats, Outcome, Rollout,
                                 transition)
from fleet.rollout.planner import (AssignDevice, Decide, FinishRevert, RevertDevice, SetDeviceStatus, StartSoak,
                                   plan)
from fleet.rollout.policy import build_policy

NEW = BundleRef("digits", "2.0.0", "b" * 64, "http://a/b.ekb", 100)
OLD = {"name": "digits", "version": "1.0.0", "sha256": "a" * 64, "url": "http://a/a.ekb"}
IDS = [f"d{i:02d}" for i in range(10)]
T0 = 1000.0


def rollout(state=RUNNING, stage=0, soak_started=None, assigned=(), policy=None, ack=None, reverted=False):
    pol = policy or build_policy(stages="1,50%,100%", soak="10s", device_timeout="60s")
    r = Rollout("r1", NEW, pol, "all", tuple(IDS), T0, state=state, stage=stage, stage_started_at=T0,
                soak_started_at=soak_started, acknowledged_at=ack, reverted=reverted)
    for entry in assigned:
        d, status = entry[0], entry[1]
        at = entry[2] if len(entry) > 2 else T0 + 1
        r.assignments[d] = Assignment(d, 0, T0, dict(OLD), status, None if status == PENDING else at,
                                      entry[3] if len(entry) > 3 else None)
    return r


def devices(online=IDS, committed=(), failed=(), reason=Reason.GOLDEN_MISMATCH, update_state=UpdateState.IDLE,
            at=T0 + 5):
    out = {}
    for d in IDS:
        model, outcome = dict(OLD), None
        if d in committed:
            model, outcome = NEW.desired_model(), Outcome(EventName.COMMITTED, at, NEW.sha256)
        elif d in failed:
            outcome = Outcome(EventName.FAILED, at, NEW.sha256, reason)
        out[d] = DeviceState(d, d in online, T0 - 100, model, dict(OLD), update_state, outcome)
    return out


def stats(ids, p95_new=10.0, p95_old=10.0, count=100, errors=0):
    t = {}
    for d in ids:
        t[(d, "2.0.0")] = ModelStats(count, errors, p95_new)
        t[(d, "1.0.0")] = ModelStats(count, 0, p95_old)
    return t


def kinds(actions):
    return [type(a).__name__ + (f":{a.event}" if isinstance(a, Decide) else "") for a in actions]


# (name, rollout, devices, telemetry, now, expected action kinds, extra check)
SCENARIOS = [
    ("canary picks the first online device",
     rollout(), devices(online=IDS[3:]), {}, T0 + 1,
     ["AssignDevice"], lambda acts: acts[0].device_id == "d03" and acts[0].online),
    ("canary picks an offline device only when nobody is online",
     rollout(), devices(online=()), {}, T0 + 1,
     ["AssignDevice"], lambda acts: acts[0].device_id == "d00" and not acts[0].online),
    ("canary pending: hold",
     rollout(assigned=[("d00", PENDING)]), devices(), {}, T0 + 5,
     [], None),
    ("canary commits: status updated and soak starts",
     rollout(assigned=[("d00", PENDING)]), devices(committed=["d00"]), {}, T0 + 6,
     ["SetDeviceStatus", "StartSoak"], lambda acts: acts[0].status == COMMITTED),
    ("soak not over: hold",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)]), devices(committed=["d00"]), stats(["d00"]),
     T0 + 10, [], None),
    ("soak over and healthy: advance with numbers",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)]), devices(committed=["d00"]), stats(["d00"]),
     T0 + 17, ["Decide:advance"],
     lambda acts: acts[0].numbers["success_rate"] == 1.0 and acts[0].numbers["p95_regression"] == 0.0
     and acts[0].next_stage == 1 and acts[0].numbers["inferences"] == 100),
    ("canary fails its self-test: pause (default) with the self-test count",
     rollout(assigned=[("d00", PENDING)]), devices(failed=["d00"]), {}, T0 + 6,
     ["SetDeviceStatus", "Decide:fail_pause"],
     lambda acts: acts[1].numbers["self_test_failed"] == 1 and acts[1].to_state == PAUSED),
    ("canary fails, policy abort",
     rollout(assigned=[("d00", PENDING)], policy=build_policy(stages="1,100%", on_failure="abort")),
     devices(failed=["d00"]), {}, T0 + 6,
     ["SetDeviceStatus", "Decide:fail_abort"], lambda acts: acts[1].to_state == ABORTED),
    ("p95 3x slower on the canary: fail even though it committed",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)]), devices(committed=["d00"]),
     stats(["d00"], p95_new=30.0, p95_old=10.0), T0 + 8,
     ["Decide:fail_pause"], lambda acts: abs(acts[0].numbers["p95_regression"] - 2.0) < 1e-9
     and "p95 regression" in acts[0].reason),
    ("p95 15% slower is within a 20% budget",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)]), devices(committed=["d00"]),
     stats(["d00"], p95_new=11.5, p95_old=10.0), T0 + 17, ["Decide:advance"], None),
    ("60% slower but only +0.06 ms: within the 1 ms slack (timer noise on a tiny model)",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)]), devices(committed=["d00"]),
     stats(["d00"], p95_new=0.16, p95_old=0.10), T0 + 17, ["Decide:advance"],
     lambda acts: abs(acts[0].numbers["p95_increase_ms"] - 0.06) < 1e-9),
    ("3x slower on a tiny model fails once the slack is 0",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)],
             policy=build_policy(stages="1,50%,100%", soak="10s", p95_slack_ms="0")),
     devices(committed=["d00"]), stats(["d00"], p95_new=0.3, p95_old=0.1), T0 + 8, ["Decide:fail_pause"], None),
    ("error rate above the policy fails",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)]), devices(committed=["d00"]),
     stats(["d00"], errors=5), T0 + 8, ["Decide:fail_pause"], lambda acts: acts[0].numbers["error_rate"] == 0.05),
    ("online device times out",
     rollout(assigned=[("d00", PENDING)]), devices(), {}, T0 + 61,
     ["SetDeviceStatus", "Decide:fail_pause"], lambda acts: acts[0].status == TIMED_OUT),
    ("offline device never times out and is not evaluated",
     rollout(assigned=[("d00", PENDING)]), devices(online=IDS[1:]), {}, T0 + 1000, [], None),
    ("stage 2 assigns the rest of 50%, online first",
     rollout(stage=1, assigned=[("d00", COMMITTED)]), devices(online=["d00", "d07", "d08", "d09"],
                                                              committed=["d00"]), {}, T0 + 20,
     ["AssignDevice"] * 4, lambda acts: [a.device_id for a in acts] == ["d07", "d08", "d09", "d01"]),
    ("one of five failing is over a 5% failure threshold",
     rollout(stage=1, assigned=[(d, COMMITTED) for d in IDS[:4]] + [("d04", PENDING)]),
     devices(committed=IDS[:4], failed=["d04"], reason=Reason.ERROR_RATE), {}, T0 + 20,
     ["SetDeviceStatus", "Decide:fail_pause"],
     lambda acts: acts[1].numbers["failure_rate"] == 0.2 and acts[1].numbers["self_test_failed"] == 0),
    ("a failure accepted by resume no longer counts",
     rollout(stage=1, ack=T0 + 30, assigned=[(d, COMMITTED) for d in IDS[:4]] + [("d04", FAILED, T0 + 20, "x")]),
     devices(committed=IDS[:4], failed=["d04"], at=T0 + 20), {}, T0 + 31,
     ["StartSoak"], lambda acts: acts[0].numbers["accepted_failures"] == 1),
    ("last stage complete",
     rollout(stage=2, soak_started=T0 + 6, assigned=[(d, COMMITTED) for d in IDS]), devices(committed=IDS),
     stats(IDS), T0 + 20, ["Decide:complete"], lambda acts: acts[0].to_state == "completed"),
    ("last stage completes with an offline device still pending (it converges later)",
     rollout(stage=2, soak_started=T0 + 6, assigned=[(d, COMMITTED) for d in IDS[:9]] + [("d09", PENDING)],
             policy=build_policy(stages="1,50%,100%", soak="10s", success_threshold="90%",
                                 failure_threshold="10%")),
     devices(online=IDS[:9], committed=IDS[:9]), {}, T0 + 20, ["Decide:complete"],
     lambda acts: acts[0].numbers["pending_offline"] == 1),
    ("approval required: wait after the soak",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)],
             policy=build_policy(stages="1,100%", soak="10s", require_approval=True)),
     devices(committed=["d00"]), {}, T0 + 17, ["Decide:await_approval"],
     lambda acts: acts[0].to_state == AWAITING_APPROVAL),
    ("min inferences: hold after the soak until enough telemetry",
     rollout(soak_started=T0 + 6, assigned=[("d00", COMMITTED)],
             policy=build_policy(stages="1,100%", soak="10s", min_inferences=500)),
     devices(committed=["d00"]), stats(["d00"], count=100), T0 + 17, [], None),
    ("paused: statuses only",
     rollout(state=PAUSED, assigned=[("d00", PENDING)]), devices(committed=["d00"]), {}, T0 + 6,
     ["SetDeviceStatus"], None),
    ("abort reverts every touched device once",
     rollout(state=ABORTED, assigned=[("d00", COMMITTED), ("d01", FAILED, T0 + 2, "x")]),
     devices(committed=["d00"], failed=["d01"], at=T0 + 2), {}, T0 + 6,
     ["RevertDevice", "SetDeviceStatus", "RevertDevice", "SetDeviceStatus", "FinishRevert"],
     lambda acts: acts[0].previous == OLD and acts[-1].devices == 2),
    ("aborted and reverted: nothing more",
     rollout(state=ABORTED, reverted=True, assigned=[("d00", REVERTED)]), devices(), {}, T0 + 6, [], None),
    ("device already on the bundle counts as committed",
     rollout(assigned=[("d00", PENDING)]),
     {**devices(), "d00": DeviceState("d00", True, T0, NEW.desired_model(), None, UpdateState.IDLE, None)}, {}, T0 + 2,
     ["SetDeviceStatus", "StartSoak"], None),
    ("a stale outcome from before the assignment is ignored",
     rollout(assigned=[("d00", PENDING)]), devices(failed=["d00"], at=T0 - 50), {}, T0 + 2, [], None),
    ("zero soak advances in the same tick",
     rollout(assigned=[("d00", PENDING)], policy=build_policy(stages="1,100%", soak="0")),
     devices(committed=["d00"]), {}, T0 + 6, ["SetDeviceStatus", "StartSoak", "Decide:advance"], None),
]


@pytest.mark.parametrize("name,r,devs,tele,now,expected,check", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenarios(name, r, devs, tele, now, expected, check):
    before = repr(r)
    actions = plan(r, devs, tele, now)
    assert kinds(actions) == expected
    if check is not None:
        assert check(actions), actions
    assert repr(r) == before, "plan() must not modify its input"


def test_full_rollout_simulated_to_completion():
    """Iterate plan() with a tiny device model that commits one tick after assignment: ends completed, all on v2."""
    r = rollout(policy=build_policy(stages="1,10%,50%,100%", soak="5s", device_timeout="60s"))
    devs = devices()
    now, decisions = T0, []
    for _ in range(200):
        now += 1
        for act in plan(r, devs, stats([d for d in devs if devs[d].model_sha == NEW.sha256]), now):
            if isinstance(act, AssignDevice):
                r.assignments[act.device_id] = Assignment(act.device_id, act.stage, now, dict(act.previous))
                devs[act.device_id] = replace(devs[act.device_id], model=NEW.desired_model(),
                                              update_state=UpdateState.IDLE,
                                              outcome=Outcome("committed", now + 0.5, NEW.sha256))
            elif isinstance(act, SetDeviceStatus):
                a = r.assignments[act.device_id]
                a.status, a.status_at, a.reason = act.status, act.at, act.reason
            elif isinstance(act, StartSoak):
                r.soak_started_at = now
            elif isinstance(act, Decide):
                decisions.append(act)
                r.state, r.stage = act.to_state, act.next_stage
                r.soak_started_at = None
        if r.state == "completed":
            break
    assert [d.event for d in decisions] == ["advance", "advance", "advance", "complete"]
    assert [d.numbers["stage_size"] for d in decisions] == [1, 1, 5, 10]
    assert all(a.status == COMMITTED for a in r.assignments.values()) and len(r.assignments) == 10


def test_transition_table_rejects_unknown_pairs():
    assert transition(PAUSED, "resume") == RUNNING
    with pytest.raises(RolloutStateError, match="cannot resume"):
        transition("completed", "resume", "r1")
    with pytest.raises(RolloutStateError):
        transition(RUNNING, "approve")


def test_revert_of_device_without_previous_model_clears_desired():
    r = rollout(state=ABORTED)
    r.assignments["d00"] = Assignment("d00", 0, T0, None)
    acts = plan(r, devices(), {}, T0 + 1)
    assert isinstance(acts[0], RevertDevice) and acts[0].previous is None
    assert isinstance(acts[-1], FinishRevert)


@pytest.mark.parametrize("reason,self_test", [
    ("failed: golden_mismatch", True), ("failed: incompatible_model", True), ("rolled_back: golden_mismatch", True),
    ("failed: latency_regression", False), ("failed: error_rate", False),
    # the agent never sends these: a reason that merely mentions the self-test is not a self-test code
    ("failed: self_test_failed", False), ("failed: selftest golden", False), ("failed: GOLDEN_MISMATCH", False),
    (None, False), ("", False),
])
def test_self_test_failures_are_the_agents_reason_codes_not_substrings(reason, self_test):
    from fleet.rollout.planner import is_self_test_failure

    assert is_self_test_failure(reason) is self_test


@pytest.mark.parametrize("update_state,committed", [
    (UpdateState.IDLE, True), (UpdateState.COMMITTED, True), (None, True),
    ("idle", False), ("committed", False), (UpdateState.PROBATION, False),  # the agent reports IDLE, not idle
])
def test_already_running_counts_only_in_the_agents_settled_states(update_state, committed):
    r = rollout(assigned=[("d00", PENDING)])
    devs = {**devices(), "d00": DeviceState("d00", True, T0, NEW.desired_model(), None, update_state, None)}
    acts = [a for a in plan(r, devs, {}, T0 + 2) if isinstance(a, SetDeviceStatus)]
    assert bool(acts and acts[0].status == COMMITTED) is committed
