"""The pure planner assigning large stages in chunks (``plan(..., max_assign=N)``): never more than a chunk per call,
never beyond the stage's size, success only once the whole stage is assigned, and a failing partial cohort stops the
rollout before the next chunk."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgekit.protocol import EventName, Reason, UpdateState
from fleet.rollout.model import COMMITTED, FAILED, PENDING, RUNNING, Assignment, BundleRef, DeviceState, Outcome, \
    Rollout
from fleet.rollout.planner import AssignDevice, Decide, SetDeviceStatus, StartSoak, plan
from fleet.rollout.policy import build_policy, stage_sizes

NEW = BundleRef("digits", "2.0.0", "b" * 64, "http://a/b.ekb", 100)
OLD = {"name": "digits", "version": "1.0.0", "sha256": "a" * 64, "url": "http://a/a.ekb"}
T0 = 1000.0


def fleet(n: int, stages: str) -> tuple[Rollout, dict[str, DeviceState]]:
    ids = [f"d{i:03d}" for i in range(n)]
    r = Rollout("r1", NEW, build_policy(stages=stages, soak="0", device_timeout="600s"), "all", tuple(ids), T0,
                state=RUNNING, stage=0, stage_started_at=T0)
    devs = {d: DeviceState(d, True, T0 - 100, dict(OLD), dict(OLD), UpdateState.IDLE, None) for d in ids}
    return r, devs


def drive(r: Rollout, devs: dict[str, DeviceState], chunk: int, faulty: set[str] = frozenset(), ticks: int = 200):
    """Iterate plan() as the engine does; each online device reports its outcome one tick after it was assigned
    (faulty ones fail their self-test). Returns (per-tick actions, decisions)."""
    now, per_tick, decisions = T0, [], []
    for _ in range(ticks):
        now += 1
        acts = plan(r, devs, {}, now, max_assign=chunk)
        per_tick.append((r.stage, acts))
        for act in acts:
            if isinstance(act, AssignDevice):
                assert act.device_id not in r.assignments, f"{act.device_id} assigned twice"
                r.assignments[act.device_id] = Assignment(act.device_id, act.stage, now, dict(act.previous))
                if not devs[act.device_id].online:
                    continue  # an offline device hears of it when it reconnects
                if act.device_id in faulty:
                    out = Outcome(EventName.FAILED, now + 0.5, NEW.sha256, Reason.GOLDEN_MISMATCH)
                    devs[act.device_id] = replace(devs[act.device_id], outcome=out)
                else:
                    devs[act.device_id] = replace(devs[act.device_id], model=NEW.desired_model(),
                                                  outcome=Outcome(EventName.COMMITTED, now + 0.5, NEW.sha256))
            elif isinstance(act, SetDeviceStatus):
                a = r.assignments[act.device_id]
                a.status, a.status_at, a.reason = act.status, act.at, act.reason
            elif isinstance(act, StartSoak):
                r.soak_started_at = now
            elif isinstance(act, Decide):
                decisions.append(act)
                r.state, r.stage = act.to_state, act.next_stage
                r.soak_started_at = None
        if r.state != RUNNING:
            break
    return per_tick, decisions


def test_a_large_stage_is_assigned_a_chunk_per_tick_and_never_beyond_its_size():
    r, devs = fleet(180, "10%,50%,100%")
    sizes = stage_sizes(r.policy.stages, 180)
    assert sizes == [18, 90, 180]
    per_tick, decisions = drive(r, devs, chunk=25)
    assert r.state == "completed" and len(r.assignments) == 180
    assert all(a.status == COMMITTED for a in r.assignments.values())
    assigned = 0
    for stage, acts in per_tick:
        new = [a for a in acts if isinstance(a, AssignDevice)]
        assert len(new) <= 25
        assigned += len(new)
        assert assigned <= sizes[stage], f"stage {stage + 1} assigned {assigned} > its size {sizes[stage]}"
        assert all(a.stage == stage for a in new)
        if any(isinstance(a, Decide) for a in acts):  # a stage is decided only once all of it is assigned
            assert assigned == sizes[stage]
    # 18 in one tick; then 72 more in 3 chunks; then 90 more in 4 chunks
    counts = [n for n in (sum(isinstance(a, AssignDevice) for a in acts) for _, acts in per_tick) if n]
    assert counts == [18, 25, 25, 22, 25, 25, 25, 15]
    assert [d.event for d in decisions] == ["advance", "advance", "complete"]
    assert [d.numbers["stage_size"] for d in decisions] == [18, 90, 180]


def test_no_chunk_limit_assigns_the_whole_stage_at_once():
    r, devs = fleet(60, "100%")
    acts = plan(r, devs, {}, T0 + 1, max_assign=None)
    assert sum(isinstance(a, AssignDevice) for a in acts) == 60


def test_a_failing_first_chunk_stops_the_rollout_before_the_next_chunk():
    r, devs = fleet(150, "50%,100%")  # stage 1: 75 devices, in chunks of 20
    first = sorted(devs)[:20]
    faulty = set(first[::3])  # 7 of the first chunk fail their self-test: 35% > the 5% failure threshold
    per_tick, decisions = drive(r, devs, chunk=20, faulty=faulty)
    assert r.state == "paused" and r.stage == 0
    assert sorted(r.assignments) == first  # nobody beyond the first chunk was ever assigned
    assert [d.event for d in decisions] == ["fail_pause"]
    stop = decisions[0]
    assert stop.numbers["self_test_failed"] == len(faulty) and stop.numbers["assigned"] == 20
    assert stop.numbers["stage_size"] == 75
    last = per_tick[-1][1]
    assert not any(isinstance(a, AssignDevice) for a in last)  # the deciding tick assigned nothing more
    assert {d for d, a in r.assignments.items() if a.status == FAILED} == faulty


@pytest.mark.parametrize("chunk", [1, 7, 75, 500])
def test_chunk_size_does_not_change_who_is_assigned(chunk):
    r, devs = fleet(100, "10%,100%")
    for d in ("d003", "d050"):  # offline devices come last in every stage
        devs[d] = replace(devs[d], online=False)
    drive(r, devs, chunk=chunk, ticks=400)
    r1, devs1 = fleet(100, "10%,100%")
    for d in ("d003", "d050"):
        devs1[d] = replace(devs1[d], online=False)
    drive(r1, devs1, chunk=None, ticks=400)
    assert {d: a.stage for d, a in r.assignments.items()} == {d: a.stage for d, a in r1.assignments.items()}
    assert r.state == r1.state == "completed"
    assert r.assignments["d003"].status == r.assignments["d050"].status == PENDING  # offline: converge later
