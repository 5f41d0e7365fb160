"""Probation after the switch: live figures from the local API decide, and a bad model is rolled back by itself."""

from __future__ import annotations

import time

from .artifacts import Fault
from .test_update_flow import LoadLoop, is_subsequence, serving_check


def _run_update(rig, bundle: str, outcome: str, warmup: int = 200):
    """Serve v1 under load (``warmup`` requests, so this device has figures for it), publish ``bundle``, wait for
    ``outcome``, then for some more requests after the updater is back in IDLE."""
    rig.agent.start()
    assert rig.agent.wait_ready()
    loop = LoadLoop(rig.agent, rig.bundles["sample"])
    loop.start()
    try:
        loop.wait_answers(warmup, sha=rig.sha("v1"))
        rig.events.publish_desired(rig.desired(bundle))
        rig.events.wait(lambda ev: [e for e in ev if e["event"] == outcome], timeout=60, what=outcome)
        rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
        rig.events.wait(lambda ev: is_subsequence([outcome, "idle"], [e["event"] for e in ev]), what="idle event")
        loop.wait_answers(20)
    finally:
        loop.stop()
    return loop


def test_latency_regression_in_probation_rolls_back(rig_factory):
    # the self-test gate is off, so the slow model reaches probation; live p95 against v1's p95 on this device
    # (the slow model takes ~1 ms idle, more loaded, against ~0.03 ms: the slack is lowered from 1 ms to 0.2 ms)
    rig = rig_factory({"self_test_latency": False, "probation_s": 20.0, "min_requests": 20,
                       "latency_slack_ms": 0.2})
    v1, slow = rig.sha("v1"), rig.sha("slow")
    loop = _run_update(rig, "slow", "rolled_back")
    ev = rig.events.events()
    rb = next(e for e in ev if e["event"] == "rolled_back")
    assert rb["reason"] == "latency_regression" and rb["model"]["sha256"] == slow
    begun = next(e for e in ev if e["event"] == "rolling_back")
    figures, baseline = begun["detail"]["figures"], begun["detail"]["baseline"]
    assert figures["p95_ms"] > baseline["p95_ms"] * 1.5 and figures["count"] >= 20
    assert rb["ts"] - next(e for e in ev if e["event"] == "switched")["ts"] < 15, "rolled back before the window ended"
    assert is_subsequence(["switched", "rolling_back", "rolled_back", "idle"], rig.events.names())
    # the load loop ran through the switch and the rollback: no failed request, v1 → slow → v1
    assert all(s == 200 for s, _, _ in loop.results)
    shas = [sha for _, sha, _ in loop.results]
    assert shas[0] == v1 and slow in shas and shas[-1] == v1
    assert serving_check(rig, {v1: "v1"}) == "v1"
    assert rig.agent.store().previous() is None, "the rolled-back model is not kept as a rollback target"
    assert {e.sha256 for e in rig.agent.store().entries()} == {v1}


def test_error_rate_in_probation_rolls_back(rig_factory):
    # the model passes its golden vectors but its GATHER fails on real images: every live request errors
    rig = rig_factory({"probation_s": 20.0, "min_requests": 20, "max_error_rate": 0.05})
    v1, bad = rig.sha("v1"), rig.sha("erroring")
    loop = _run_update(rig, "erroring", "rolled_back")
    rb = next(e for e in rig.events.events() if e["event"] == "rolled_back")
    assert rb["reason"] == "error_rate" and rb["model"]["sha256"] == bad
    failed = [s for s, _, _ in loop.results if s != 200]
    assert failed and set(failed) == {500}, "the bad model's errors reach the client as 500s while it serves"
    tail = loop.results[-20:]
    assert all(s == 200 and sha == v1 for s, sha, _ in tail), "after the rollback v1 answers again"
    assert serving_check(rig, {v1: "v1"}) == "v1"


def test_probation_window_without_traffic_commits(rig_factory):
    # no requests at all: nothing to judge, so the window simply ends (figures below min_requests are not judged)
    rig = rig_factory({"probation_s": 1.0})
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("v2"))
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "committed"], timeout=60, what="committed")
    assert serving_check(rig, {rig.sha("v2"): "v2"}) == "v2"


def test_interrupted_download_resumes_from_its_offset(rig_factory):
    rig = rig_factory()
    rig.agent.start()
    assert rig.agent.wait_ready()
    desired = rig.desired("v2")
    rig.server.faults["v2.ekb"] = Fault(truncate=40_000, times=1)  # the first response breaks off at 40 kB
    rig.events.publish_desired(desired)
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "committed"], timeout=60, what="committed")
    reqs = rig.server.requests_for("v2.ekb")
    assert [(r.range, r.status) for r in reqs] == [(None, 200), ("bytes=40000-", 206)], reqs
    assert reqs[1].sent == desired["size"] - 40_000
    downloaded = next(e for e in rig.events.events() if e["event"] == "downloaded")
    assert downloaded["detail"]["attempts"] == 2 and downloaded["detail"]["bytes"] == desired["size"]


def test_newer_desired_supersedes_a_download_in_flight(rig_factory):
    rig = rig_factory()
    rig.agent.start()
    assert rig.agent.wait_ready()
    d2, d3 = rig.desired("v2"), rig.desired("v3")
    rig.server.faults["v2.ekb"] = Fault(delay=0.5)  # 16 kB every half second: the download takes a few seconds
    rig.events.publish_desired(d2, rollout_id="r2")
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "downloading"], timeout=20, what="downloading")
    part = rig.agent.data_dir / "store" / ".downloads" / f"{d2['sha256']}.part"
    deadline = time.monotonic() + 20  # the download is under way: part of v2 is on disk
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert part.exists() and part.stat().st_size > 0, "the download of v2 never started writing"
    rig.events.publish_desired(d3, rollout_id="r3")
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "committed"], timeout=60, what="committed")
    ev = rig.events.events()
    sup = [e for e in ev if e["event"] == "failed"]
    assert [(e["reason"], e["model"]["sha256"]) for e in sup] == [("superseded", d2["sha256"])]
    assert next(e for e in ev if e["event"] == "committed")["model"]["sha256"] == d3["sha256"]
    assert serving_check(rig, {d3["sha256"]: "v3"}) == "v3"
    rec = rig.agent.record()
    assert not rec["rejected"], "a superseded model is not rejected: a later rollout may still want it"


def test_desired_published_while_offline_converges_on_start(rig_factory):
    rig = rig_factory({"probation_s": 0.5})
    rig.events.publish_desired(rig.desired("v2"))  # retained; the agent is not running yet
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "idle"], timeout=60, what="idle")
    assert serving_check(rig, {rig.sha("v2"): "v2"}) == "v2"
    state = rig.agent.get("/v1/health")["update"]
    assert state["state"] == "IDLE"
    # a second start does nothing: the device runs what is desired
    rig.agent.stop()
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.barrier()  # the agent has taken in the retained desired again
    rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    assert [h["name"] for h in rig.agent.history()].count("downloading") == 1


def test_fleet_going_back_during_probation_rolls_back_at_once(rig_factory):
    rig = rig_factory({"probation_s": 60.0})
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("v2"), rollout_id="r2")
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "switched"], timeout=60, what="switched")
    t0 = time.monotonic()
    rig.events.publish_desired(rig.desired("v1"), rollout_id="r2-abort")  # what an aborted rollout publishes
    rb = rig.events.wait(lambda ev: [e for e in ev if e["event"] == "rolled_back"], timeout=20, what="rolled_back")
    assert time.monotonic() - t0 < 10, "no waiting for the 60 s window"
    assert rb[0]["reason"] == "superseded"
    rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    assert serving_check(rig, {rig.sha("v1"): "v1"}) == "v1"
    rig.events.barrier()  # the retained v1 desired has been taken in after the rollback
    rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    names = [h["name"] for h in rig.agent.history()]
    assert names.count("downloading") == 1, "converged on v1 without another update"
    assert not rig.agent.record()["rejected"], "a superseded model may come back in a later rollout"
