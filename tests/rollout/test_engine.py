"""The engine and store on a real SQLite fleet store: device reports are written the way ingest writes them
(registry state messages, event rows, inference rows); the MQTT side is a recording publisher here and a real
broker with real agents in test_e2e.py."""

from __future__ import annotations

import time

import pytest

from edgekit.protocol import StateMessage
from fleet.models import DeviceEvent, InferenceSample
from fleet.registry import Registry
from fleet.rollout.engine import RolloutEngine
from fleet.rollout.errors import RolloutStateError
from fleet.rollout.model import BundleRef
from fleet.rollout.policy import build_policy
from fleet.rollout.store import RolloutStore
from fleet.rollout.tables import DesiredRow

V1 = {"name": "digits", "version": "1.0.0", "sha256": "a" * 64, "url": "http://x/a.ekb"}
V2 = BundleRef("digits", "2.0.0", "b" * 64, "http://x/b.ekb", 10)


class Recorder:
    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, dict | None, str | None]] = []
        self.fail = fail

    def publish_desired(self, device_id, desired, timeout=10.0):
        if self.fail:
            from fleet.errors import LinkError
            raise LinkError("broker down")
        self.sent.append((device_id, desired.model, desired.rollout_id))

    def clear_desired(self, device_id, timeout=10.0):
        self.sent.append((device_id, None, None))


class Fleet:
    """Writes what ingest would write for simulated devices, with a controllable clock."""

    def __init__(self, ctx, n=10):
        self.engine = ctx.engine()
        self.reg = Registry(self.engine, ctx.fleet_id)
        self.now = time.time()
        self.ids = [f"dev{i:02d}" for i in range(n)]
        self.seq = 0
        with self.reg.Session.begin() as s:  # as after an earlier rollout of v1
            for d in self.ids:
                s.add(DesiredRow(device_id=d, model=dict(V1), rollout_id="r0", updated_at=self.now, generation=1,
                                 published_generation=1, published_at=self.now, publish_count=1))
        for d in self.ids:
            self.reg.add(d)
            self.state(d, True, V1)

    def clock(self):
        return self.now

    def state(self, d, online, model):
        self.reg.apply_state(StateMessage(d, "online" if online else "offline", ts=self.now,
                                          model={k: model[k] for k in ("name", "version", "sha256")},
                                          update={"state": "IDLE"}), received=self.now)

    def event(self, d, name, model, reason=None, rollout_id=None):
        self.seq += 1
        with self.reg.Session.begin() as s:
            s.add(DeviceEvent(device_id=d, seq=self.seq, ts=self.now, received=self.now, event=name, reason=reason,
                              rollout_id=rollout_id, model={k: model[k] for k in ("name", "version", "sha256")}))

    def inference(self, d, version, p95, count=100, errors=0):
        self.seq += 1
        with self.reg.Session.begin() as s:
            s.add(InferenceSample(device_id=d, seq=self.seq, ts=self.now, model_version=f"digits@{version}",
                                  count=count, errors=errors, p50_ms=p95 / 2, p95_ms=p95, p99_ms=p95 * 1.2))

    def commit(self, d, bundle, rid, p95=2.0):
        model = {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256}
        self.event(d, "committed", model, rollout_id=rid)
        self.state(d, True, model)
        self.inference(d, bundle.version, p95)


@pytest.fixture
def sim(fleet_ctx):
    return Fleet(fleet_ctx)


def run(engine, sim, rid, react, ticks=60, step=1.0):
    """Tick the engine; ``react(device_id, model, rollout_id)`` plays each newly published desired state."""
    seen = 0
    for _ in range(ticks):
        sim.now += step
        engine.tick()
        for d, model, r in engine.publisher.sent[seen:]:
            react(d, model, r)
        seen = len(engine.publisher.sent)
        if engine.store.get(rid).state not in ("running",):
            break
    return engine.store.get(rid)


def test_staged_rollout_completes_with_numbers_in_the_audit_log(fleet_ctx, sim):
    for d in sim.ids:
        sim.inference(d, "1.0.0", 2.0)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="1,10%,50%,100%", soak="3s"))

    final = run(engine, sim, r.id, lambda d, m, rid: sim.commit(d, V2, rid, p95=2.1))
    assert final.state == "completed"
    assert sorted(d for d, m, _ in engine.publisher.sent) == sim.ids  # each device told exactly once
    decisions = [e for e in store.audit(r.id) if e["event"] in ("advance", "complete")]
    assert [e["numbers"]["stage_size"] for e in decisions] == [1, 1, 5, 10]
    last = decisions[-1]["numbers"]
    assert last["committed"] == 10 and last["success_rate"] == 1.0
    assert last["p95_regression"] == pytest.approx(0.05) and last["latency_devices"] == 10


def test_canary_self_test_failure_aborts_and_reverts_only_the_canary(fleet_ctx, sim):
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="1,50%,100%", soak="3s", on_failure="abort"))

    def react(d, model, rid):
        if model["sha256"] == V2.sha256:
            sim.event(d, "failed", dict(model), reason="golden_mismatch", rollout_id=rid)

    final = run(engine, sim, r.id, react)
    assert final.state == "aborted"
    engine.tick()  # the revert
    sent = engine.publisher.sent
    assert [(d, m["version"]) for d, m, _ in sent] == [("dev00", "2.0.0"), ("dev00", "1.0.0")]
    abort = next(e for e in store.audit(r.id) if e["event"] == "fail_abort")
    assert abort["numbers"]["self_test_failed"] == 1 and abort["numbers"]["failure_rate"] == 1.0
    assert store.get(r.id).reverted and store.get(r.id).assignments["dev00"].status == "reverted"


def test_latency_regression_pauses_then_operator_aborts(fleet_ctx, sim):
    for d in sim.ids:
        sim.inference(d, "1.0.0", 2.0)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="1,100%", soak="5s"))
    final = run(engine, sim, r.id, lambda d, m, rid: sim.commit(d, V2, rid, p95=6.0))
    assert final.state == "paused"
    pause = next(e for e in store.audit(r.id) if e["event"] == "fail_pause")
    assert pause["numbers"]["p95_regression"] == pytest.approx(2.0)
    with pytest.raises(RolloutStateError):
        store.command(r.id, "approve")
    store.command(r.id, "abort", "too slow")
    engine.tick()
    assert engine.publisher.sent[-1][1]["version"] == "1.0.0"
    assert len(engine.publisher.sent) == 2


def test_restart_mid_rollout_resumes_without_reassigning(fleet_ctx, sim):
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    first = RolloutEngine(store, Recorder(), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="1,50%,100%", soak="2s"))
    for _ in range(4):  # canary assigned, committed, soaking; stage 2 assigned
        sim.now += 1
        first.tick()
        for d, m, rid in first.publisher.sent:
            if store.get(r.id).assignments[d].status == "pending":
                sim.commit(d, V2, rid)
    before = store.get(r.id)
    assert before.stage >= 1 and len(before.assignments) >= 1
    # a new process: new store and engine objects on the same database, a publisher that was never used
    store2 = RolloutStore(fleet_ctx.engine(), fleet_ctx.fleet_id, clock=sim.clock)
    second = RolloutEngine(store2, Recorder(), clock=sim.clock)
    final = run(second, sim, r.id, lambda d, m, rid: sim.commit(d, V2, rid))
    assert final.state == "completed"
    starts = [e for e in store2.audit(r.id) if e["event"] == "engine_start"]
    assert len(starts) == 2 and starts[1]["numbers"]["assigned"] == len(before.assignments)
    told_twice = set(d for d, *_ in first.publisher.sent) & set(d for d, *_ in second.publisher.sent)
    assert not told_twice


def test_unpublished_desired_states_are_retried_after_a_link_failure(fleet_ctx, sim):
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(fail=True), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="1,100%"))
    engine.tick()
    assert engine.errors == 1 and store.unpublished()[0][0] == "dev00"
    engine.publisher.fail = False
    sim.now += 1
    engine.tick()
    assert engine.publisher.sent == [("dev00", V2.desired_model(), r.id)] and not store.unpublished()


def test_offline_device_is_assigned_last_and_converges_after_completion(fleet_ctx, sim):
    sim.state("dev00", False, V1)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="1,100%", soak="1s", success_threshold="90%",
                                                     failure_threshold="10%"))
    online = lambda d, m, rid: sim.commit(d, V2, rid) if d != "dev00" else None  # noqa: E731
    final = run(engine, sim, r.id, online)
    assert final.state == "completed"
    assert engine.publisher.sent[0][0] == "dev01"  # the canary is an online device
    assert final.assignments["dev00"].status == "pending"
    assert r.id in store.needing_ticks()
    sim.now += 1
    sim.commit("dev00", V2, r.id)  # it reconnects and installs from its retained desired state
    engine.tick()
    assert store.get(r.id).assignments["dev00"].status == "committed"
    assert r.id not in store.needing_ticks()


def test_a_later_rollout_takes_over_a_device_still_pending_in_a_finished_one(fleet_ctx, sim):
    sim.state("dev00", False, V1)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="100%", soak="0"))
    final = run(engine, sim, r.id, lambda d, m, rid: sim.commit(d, V2, rid) if d != "dev00" else None)
    assert final.state == "completed" and final.assignments["dev00"].status == "pending"
    v3 = BundleRef("digits", "3.0.0", "c" * 64, "http://x/c.ekb", 10)
    r3 = store.create(v3, "devices:dev00", ["dev00"], build_policy(stages="100%"))
    engine.tick()
    old = store.get(r.id).assignments["dev00"]
    assert old.status == "replaced" and r3.id in old.reason
    assert r.id not in store.needing_ticks() and engine.publisher.sent[-1][1]["version"] == "3.0.0"


def test_second_rollout_on_the_same_devices_is_refused(fleet_ctx, sim):
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id)
    r = store.create(V2, "all", sim.ids, build_policy())
    with pytest.raises(RolloutStateError, match=r.id):
        store.create(V2, "devices:dev03", ["dev03"], build_policy())


def test_the_rollout_tables_work_on_postgresql(postgres):
    """Migration 0002 on PostgreSQL, and a canary through the engine with the same store code."""
    import psycopg

    from fleet.db import make_engine, upgrade

    with psycopg.connect(postgres.url().replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS rollouts_test")
        c.execute("CREATE DATABASE rollouts_test")
    url = postgres.url("rollouts_test")
    upgrade(url)
    engine = make_engine(url)
    reg = Registry(engine, "pg")
    for d in ("a", "b"):
        reg.add(d)
        reg.apply_state(StateMessage(d, "online", model={k: V1[k] for k in ("name", "version", "sha256")}))
    store = RolloutStore(engine, "pg")
    eng = RolloutEngine(store, Recorder())
    r = store.create(V2, "all", ["a", "b"], build_policy(stages="1,100%"))
    eng.tick()
    assert [d for d, *_ in eng.publisher.sent] == ["a"] and not store.unpublished()
    assert [e["event"] for e in store.audit(r.id)] == ["create", "engine_start", "assign"]
    store.command(r.id, "abort")
    eng.tick()
    assert eng.publisher.sent[-1] == ("a", None, None)  # no previous desired with a URL: cleared
    assert store.get(r.id).reverted
    engine.dispose()


def test_manual_approval_between_stages(fleet_ctx, sim):
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    r = store.create(V2, "all", sim.ids, build_policy(stages="1,100%", soak="1s", require_approval=True))
    final = run(engine, sim, r.id, lambda d, m, rid: sim.commit(d, V2, rid))
    assert final.state == "awaiting_approval" and len(final.assignments) == 1
    for _ in range(3):  # waiting: nothing more is assigned
        sim.now += 5
        engine.tick()
    assert len(engine.publisher.sent) == 1
    store.command(r.id, "approve", "canary looks good")
    final = run(engine, sim, r.id, lambda d, m, rid: sim.commit(d, V2, rid))
    assert final.state == "completed" and len(engine.publisher.sent) == 10
    events = [e["event"] for e in store.audit(r.id) if e["actor"] != "planner" or e["event"] in
              ("await_approval", "complete")]
    assert events == ["create", "engine_start", "await_approval", "approve", "complete"]


def test_two_engines_under_one_lease_a_deposed_holder_writes_nothing(fleet_ctx, sim):
    """Engines a and b share the store, each with its own lease keeper. Only the holder ticks. When b takes the
    lease while a still believes it holds it (a paused past its lease), a's next write is fenced: its transaction
    is rolled back, no audit row or desired state of a lands, and a stands by."""
    from fleet.errors import LeaseLostError
    from fleet.lease_store import LeaseKeeper, LeaseStore

    store_a = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    store_b = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    keep_a = LeaseKeeper(LeaseStore(sim.engine), "a", ttl=30.0)
    keep_b = LeaseKeeper(LeaseStore(sim.engine), "b", ttl=30.0)
    a = RolloutEngine(store_a, Recorder(), clock=sim.clock, lease=keep_a)
    b = RolloutEngine(store_b, Recorder(), clock=sim.clock, lease=keep_b)
    assert keep_a.step_once().leader and not keep_b.step_once().leader
    r = store_a.create(V2, "all", sim.ids, build_policy(stages="1,100%", soak="0"))
    b.tick()
    assert b.publisher.sent == [] and store_a.get(r.id).assignments == {}  # b stands by
    a.tick()
    assert [d for d, _, _ in a.publisher.sent] == ["dev00"]  # a assigned the canary
    audit_before = store_a.audit(r.id)
    # b takes over: a's lease lapsed in the store (seen from a clock past its expiry) while a was paused
    later = LeaseStore(sim.engine, clock=lambda: time.time() + 60)
    assert later.attempt("b", 30.0).action == "steal"
    assert keep_b.step_once().leader
    sim.commit("dev00", V2, r.id)
    assert keep_a.token() is not None  # a's own clock says its lease still runs: only fencing stops it now
    with pytest.raises(LeaseLostError):
        a.tick()
    assert store_a.audit(r.id) == audit_before and len(store_a.get(r.id).assignments) == 1
    assert not keep_a.leader
    a.tick()  # standing by: nothing happens, nothing is raised
    assert len(a.publisher.sent) == 1
    for _ in range(5):  # b continues from the database: stage 2 for the other nine devices, each told once
        sim.now += 1.0
        b.tick()
    assert sorted(d for d, _, _ in b.publisher.sent) == sim.ids[1:]
    starts = [e["numbers"] for e in store_b.audit(r.id) if e["event"] == "engine_start"]
    assert [(s["holder"], s["epoch"]) for s in starts] == [("a", 1), ("b", 2)] and keep_b.epoch == 2
