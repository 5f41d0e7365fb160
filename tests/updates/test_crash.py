"""kill -9 in every state of an update (and mid-download), restart, and check what the device does.

Each case lists the crash point of each launch (the agent SIGKILLs itself there, through EDGEKIT_TEST_CRASH_AT; the
last launch runs without one), the model the device must end up serving, and the outcome it must report. After every
crash the state file must load and agree with the store; after the last restart the agent must serve the old or the
new model bit-exactly before it finishes, and every transition in its history must have arrived as an event.
"""

from __future__ import annotations

import pytest

from device_agent.update.persist import Record, check_consistent

from .artifacts import Fault
from .test_update_flow import serving_check

# id, bundle, crash point per launch, final model, outcome (name, reason) in the history
CASES = [
    ("downloading", "v2", ["DOWNLOADING"], "v2", ("committed", None)),
    ("mid-download", "v2", ["DOWNLOAD_MID"], "v2", ("committed", None)),
    ("verifying", "v2", ["VERIFYING"], "v2", ("committed", None)),
    ("staged", "v2", ["STAGED"], "v2", ("committed", None)),
    ("self-test", "v2", ["SELF_TEST"], "v2", ("committed", None)),
    ("switching", "v2", ["SWITCHING"], "v1", ("rolled_back", "crash")),
    ("after-pointer-moved", "v2", ["AFTER_SET_CURRENT"], "v1", ("rolled_back", "crash")),
    ("probation", "v2", ["PROBATION"], "v1", ("rolled_back", "crash")),
    ("committed", "v2", ["COMMITTED"], "v2", ("committed", None)),
    ("idle-after-commit", "v2", ["IDLE"], "v2", ("committed", None)),
    ("rolling-back", "v2", ["PROBATION", "ROLLING_BACK"], "v1", ("rolled_back", "crash")),
    ("rollback-pointer-moved", "v2", ["PROBATION", "AFTER_ROLLBACK_POINTER"], "v1", ("rolled_back", "crash")),
    ("failed", "golden_bad", ["FAILED"], "v1", ("failed", "golden_mismatch")),
    # the update kills the agent in its self-test on every launch: the third restart aborts it (crash_limit 3)
    ("loop-guard", "v2", ["SELF_TEST", "SELF_TEST", "SELF_TEST"], "v1", ("failed", "crash_loop")),
]
#: the crash point of the last launch, which must not crash (the loop guard keeps it out of the crashing state)
LAST = {"loop-guard": "SELF_TEST"}


def assert_consistent(agent) -> Record:
    rec = Record.from_dict(agent.record())
    store = agent.store()
    cur = store.current()
    problems = check_consistent(rec, cur.sha256 if cur else None, {e.sha256 for e in store.entries()})
    assert not problems, f"inconsistent after a crash in {rec.state}: {problems}"
    return rec


@pytest.mark.parametrize("case,bundle,points,final,outcome", CASES, ids=[c[0] for c in CASES])
def test_kill_9(rig_factory, case, bundle, points, final, outcome):
    rig = rig_factory({"crash_limit": 3})
    agent = rig.agent
    v1, new = rig.sha("v1"), rig.sha(bundle)
    if case == "mid-download":
        rig.server.add(rig.bundles[bundle], f"{bundle}.ekb")
        rig.server.faults[f"{bundle}.ekb"] = Fault(delay=0.02)
    agent.start(crash_at=points[0])
    assert agent.wait_ready() or not agent.alive
    rig.events.publish_desired(rig.desired(bundle))
    for i in range(len(points)):
        assert agent.wait_exit(60) == -9, agent.tail()
        assert_consistent(agent)
        last = i + 1 == len(points)
        agent.start(crash_at=LAST.get(case) if last else points[i + 1])
        if last:
            assert agent.wait_ready()
            # right after the restart, before the updater is done: the old or the new model, bit-exact
            serving_check(rig, {v1: "v1", new: bundle})
    if case == "loop-guard":
        assert not any(h["dst"] == "SWITCHING" for h in agent.history())

    name, reason = outcome
    done = agent.wait_history(lambda h: [i for i in h if i["name"] == name and i["reason"] == reason
                                         and i["target"]["sha256"] == new], timeout=60, what=f"{name}/{reason}")
    agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    assert serving_check(rig, {rig.sha(final): final}) == final
    rec = assert_consistent(agent)
    assert rec.state == "IDLE"
    if final == "v1":
        assert rec.is_rejected(new, "r1"), "a failed model must not be retried for the same rollout"
    else:
        assert agent.store().previous().sha256 == v1
    if reason in ("crash", "crash_loop"):
        assert any(h["detail"].get("crashes", 0) >= 1 for h in agent.history() if h["reason"] == reason)
        assert done
    resumed = [h for h in agent.history() if h["name"] == "resumed"]
    assert len(resumed) == len(points) - (1 if case in ("idle-after-commit",) else 0)

    # the events tell the truth: every line of the history arrived on the events topic, in order
    def same(events):
        hist = [(h["name"], h["dst"]) for h in agent.history()]
        got = [(e["event"], e["to_state"]) for e in sorted(events, key=lambda e: e["seq"])]
        return got == hist and got
    rig.events.wait(same, timeout=20, what="events matching the history")
    if case == "mid-download":
        reqs = rig.server.requests_for(f"{bundle}.ekb")
        ranged = [r for r in reqs if r.range]
        assert ranged and ranged[0].status == 206, reqs
        offset = int(ranged[0].range.split("=")[1].rstrip("-"))
        assert 0 < offset < rig.bundles[bundle].stat().st_size
        downloaded = next(h for h in agent.history() if h["name"] == "downloaded")
        assert downloaded["detail"]["resumed_from"] == offset
