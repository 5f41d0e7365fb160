"""The update state machine as tables: transitions, published names, restart plans, reconciliation."""

from __future__ import annotations

import itertools

import pytest

from device_agent.update.machine import (POST_SWITCH, PRE_SWITCH, RESUME, TRANSITIONS, Action, Event,
                                         InvalidTransition, Reason, Resume, State, event_name, next_state,
                                         plan_resume, reconcile)

S, E = State, Event

# (start, events, expected chain of states)
PATHS = [
    ("happy path", S.IDLE,
     [E.START, E.DOWNLOADED, E.VERIFIED, E.BEGIN_TEST, E.TEST_PASSED, E.SWITCHED, E.PROBATION_PASSED, E.DONE],
     [S.DOWNLOADING, S.VERIFYING, S.STAGED, S.SELF_TEST, S.SWITCHING, S.PROBATION, S.COMMITTED, S.IDLE]),
    ("download fails", S.IDLE, [E.START, E.FAIL, E.DONE], [S.DOWNLOADING, S.FAILED, S.IDLE]),
    ("bad signature", S.IDLE, [E.START, E.DOWNLOADED, E.FAIL, E.DONE], [S.DOWNLOADING, S.VERIFYING, S.FAILED, S.IDLE]),
    ("golden mismatch", S.IDLE, [E.START, E.DOWNLOADED, E.VERIFIED, E.BEGIN_TEST, E.FAIL],
     [S.DOWNLOADING, S.VERIFYING, S.STAGED, S.SELF_TEST, S.FAILED]),
    ("probation fails", S.SWITCHING, [E.SWITCHED, E.FAIL, E.ROLLED_BACK, E.DONE],
     [S.PROBATION, S.ROLLING_BACK, S.FAILED, S.IDLE]),
    ("switch fails", S.SWITCHING, [E.FAIL, E.ROLLED_BACK], [S.ROLLING_BACK, S.FAILED]),
    ("manual in probation", S.PROBATION, [E.ROLLBACK, E.ROLLED_BACK], [S.ROLLING_BACK, S.FAILED]),
    ("manual when idle", S.IDLE, [E.ROLLBACK, E.ROLLED_BACK, E.DONE], [S.ROLLING_BACK, S.FAILED, S.IDLE]),
    ("rollback itself fails", S.ROLLING_BACK, [E.FAIL, E.DONE], [S.FAILED, S.IDLE]),
]


@pytest.mark.parametrize("name,start,events,chain", PATHS, ids=[p[0] for p in PATHS])
def test_paths(name, start, events, chain):
    state, seen = start, []
    for ev in events:
        state = next_state(state, ev)
        seen.append(state)
    assert seen == chain


def test_every_pair_outside_the_table_raises():
    missing = [(s, e) for s, e in itertools.product(State, Event) if (s, e) not in TRANSITIONS]
    assert missing, "the table should not be total"
    for s, e in missing:
        with pytest.raises(InvalidTransition):
            next_state(s, e)


def test_unknown_names_raise():
    with pytest.raises(InvalidTransition):
        next_state("NOPE", "start")
    with pytest.raises(InvalidTransition):
        next_state("IDLE", "explode")


def test_failures_before_the_switch_never_roll_back_and_after_it_always_do():
    for s in PRE_SWITCH:
        assert TRANSITIONS[(s, E.FAIL)] is S.FAILED
    for s in POST_SWITCH:
        assert TRANSITIONS[(s, E.FAIL)] is S.ROLLING_BACK


def test_every_state_reaches_idle():
    graph: dict[State, set[State]] = {}
    for (s, _), d in TRANSITIONS.items():
        graph.setdefault(s, set()).add(d)
    for s in State:
        seen, todo = set(), [s]
        while todo:
            x = todo.pop()
            if x in seen:
                continue
            seen.add(x)
            todo.extend(graph.get(x, ()))
        assert S.IDLE in seen, s


NAMES = [
    (S.IDLE, E.START, "downloading"), (S.DOWNLOADING, E.DOWNLOADED, "downloaded"),
    (S.VERIFYING, E.VERIFIED, "verified"), (S.STAGED, E.BEGIN_TEST, "self_test"),
    (S.SELF_TEST, E.TEST_PASSED, "self_test_passed"), (S.SWITCHING, E.SWITCHED, "switched"),
    (S.PROBATION, E.PROBATION_PASSED, "committed"), (S.SELF_TEST, E.FAIL, "failed"),
    (S.PROBATION, E.FAIL, "rolling_back"), (S.PROBATION, E.ROLLBACK, "rollback_requested"),
    (S.ROLLING_BACK, E.ROLLED_BACK, "rolled_back"), (S.ROLLING_BACK, E.FAIL, "failed"),
    (S.FAILED, E.DONE, "idle"), (S.COMMITTED, E.DONE, "idle"),
]


@pytest.mark.parametrize("src,ev,name", NAMES)
def test_event_names(src, ev, name):
    assert event_name(src, ev, next_state(src, ev)) == name


# (persisted state, crashes so far, limit) -> (event, reason, crashes after, run)
RESUMES = [
    (S.IDLE, 0, 3, None, None, 0, False),
    (S.DOWNLOADING, 0, 3, None, None, 1, True),
    (S.VERIFYING, 1, 3, None, None, 2, True),
    (S.STAGED, 0, 3, None, None, 1, True),
    (S.SELF_TEST, 2, 3, E.FAIL, Reason.CRASH_LOOP, 3, True),
    (S.SELF_TEST, 0, 1, E.FAIL, Reason.CRASH_LOOP, 1, True),
    (S.SWITCHING, 0, 3, E.FAIL, Reason.CRASH, 1, True),
    (S.PROBATION, 0, 3, E.FAIL, Reason.CRASH, 1, True),
    (S.PROBATION, 2, 3, E.FAIL, Reason.CRASH_LOOP, 3, True),
    (S.COMMITTED, 0, 3, None, None, 1, True),
    (S.COMMITTED, 5, 3, None, None, 6, True),
    (S.ROLLING_BACK, 0, 3, None, None, 1, True),
    (S.ROLLING_BACK, 2, 3, E.FAIL, Reason.CRASH_LOOP, 3, True),
    (S.FAILED, 0, 3, None, None, 1, True),
]


@pytest.mark.parametrize("state,crashes,limit,event,reason,after,run", RESUMES,
                         ids=[f"{r[0].value}-{r[1]}of{r[2]}" for r in RESUMES])
def test_plan_resume(state, crashes, limit, event, reason, after, run):
    plan = plan_resume(state, crashes, limit)
    assert (plan.event, plan.reason, plan.crashes, plan.run) == (event, reason, after, run)
    if plan.event is not None:
        next_state(state, plan.event)  # the plan's event is a real transition


def test_resume_map_rolls_back_exactly_the_post_switch_states():
    assert {s for s, m in RESUME.items() if m is Resume.ROLLBACK} == set(POST_SWITCH)


A, B, C = "a" * 64, "b" * 64, "c" * 64
RECONCILE = [
    ("converged", {"sha256": A}, A, S.IDLE, None, set(), None, Action.NONE),
    ("new model", {"sha256": B}, A, S.IDLE, None, set(), None, Action.START),
    ("no desired", None, A, S.IDLE, None, set(), None, Action.NONE),
    ("same as in flight", {"sha256": B}, A, S.DOWNLOADING, B, set(), None, Action.NONE),
    ("newer while downloading", {"sha256": C}, A, S.DOWNLOADING, B, set(), None, Action.SUPERSEDE),
    ("newer while self-testing", {"sha256": C}, A, S.SELF_TEST, B, set(), None, Action.SUPERSEDE),
    ("newer in probation", {"sha256": C}, B, S.PROBATION, B, set(), None, Action.DEFER),
    ("back to old in probation", {"sha256": A}, B, S.PROBATION, B, set(), None, Action.DEFER),
    ("failed before here", {"sha256": B}, A, S.IDLE, None, {(B, "r1")}, "r1", Action.REJECTED),
    ("failed in another rollout", {"sha256": B}, A, S.IDLE, None, {(B, "r1")}, "r2", Action.START),
    ("no model yet", {"sha256": B}, None, S.IDLE, None, set(), None, Action.START),
]


@pytest.mark.parametrize("name,desired,current,state,target,rejected,rollout,action", RECONCILE,
                         ids=[r[0] for r in RECONCILE])
def test_reconcile(name, desired, current, state, target, rejected, rollout, action):
    assert reconcile(desired, current, state, target, rejected, rollout) is action


@pytest.mark.parametrize("state", [s for s in State if s is not S.IDLE])
def test_a_clean_stop_resumes_without_counting_a_crash(state):
    plan = plan_resume(state, 2, 3, clean=True)
    assert (plan.event, plan.crashes, plan.run, plan.clean) == (None, 2, True, True)
