"""Chunked assignment and the outbox thread on a real SQLite fleet store (device reports written as ingest writes
them; the MQTT side is the recording publisher of test_engine.py)."""

from __future__ import annotations

import time

from fleet.rollout.engine import RolloutEngine
from fleet.rollout.outbox import EngineWithOutbox
from fleet.rollout.policy import build_policy
from fleet.rollout.store import RolloutStore

from .test_engine import V2, Fleet, Recorder


def ticks_until_done(engine, sim, rid, react, ticks=40):
    """Tick; after each tick, the devices told in it react. Returns the number of devices told per tick."""
    told_per_tick, seen = [], 0
    for _ in range(ticks):
        sim.now += 1.0
        engine.tick()
        new = engine.publisher.sent[seen:]
        told_per_tick.append(len(new))
        seen = len(engine.publisher.sent)
        for d, model, r in new:
            react(d, model, r)
        if engine.store.get(rid).state != "running":
            break
    return told_per_tick


def test_a_stage_is_assigned_and_published_a_chunk_per_tick(fleet_ctx):
    sim = Fleet(fleet_ctx, n=150)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    engine.assign_chunk = 40
    r = store.create(V2, "all", sim.ids, build_policy(stages="10%,100%", soak="0"))
    told = ticks_until_done(engine, sim, r.id, lambda d, m, rid: sim.commit(d, V2, rid))
    final = store.get(r.id)
    assert final.state == "completed"
    assert max(told) == 40 and [n for n in told if n] == [15, 40, 40, 40, 15]
    assert sorted(d for d, _, _ in engine.publisher.sent) == sorted(sim.ids)  # each device told exactly once
    assert all(a.status == "committed" for a in final.assignments.values())
    assigns = [e for e in store.audit(r.id) if e["event"] == "assign"]
    assert [len(e["numbers"]["devices"]) for e in assigns] == [15, 40, 40, 40, 15]
    assert [e["stage"] for e in assigns] == [0, 1, 1, 1, 1]


def test_a_faulty_first_chunk_halts_before_the_next_chunk_is_published(fleet_ctx):
    sim = Fleet(fleet_ctx, n=150)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id, clock=sim.clock)
    engine = RolloutEngine(store, Recorder(), clock=sim.clock)
    engine.assign_chunk = 20
    r = store.create(V2, "all", sim.ids, build_policy(stages="50%,100%", soak="0"))  # a 75-device first stage
    faulty = set(sorted(sim.ids)[:20:4])  # 5 of the first chunk

    def react(d, model, rid):
        if d in faulty:
            sim.event(d, "failed", dict(model), reason="golden_mismatch", rollout_id=rid)
        else:
            sim.commit(d, V2, rid)
    ticks_until_done(engine, sim, r.id, react)
    for _ in range(3):  # a stopped rollout stays stopped: nothing more goes out
        sim.now += 1.0
        engine.tick()
    final = store.get(r.id)
    assert final.state == "paused" and final.stage == 0
    told = {d for d, m, _ in engine.publisher.sent if m and m["sha256"] == V2.sha256}
    assert told == set(final.assignments) == set(sorted(sim.ids)[:20])
    assert {d for d, a in final.assignments.items() if a.status == "failed"} == faulty
    stop = next(e for e in store.audit(r.id) if e["event"] == "fail_pause")
    assert stop["numbers"]["assigned"] == 20 and stop["numbers"]["stage_size"] == 75
    assert stop["numbers"]["self_test_failed"] == 5


def test_the_outbox_thread_publishes_what_the_ticks_commit(fleet_ctx):
    sim = Fleet(fleet_ctx, n=30)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id)
    publisher = Recorder()
    running = EngineWithOutbox(RolloutEngine(store, publisher), interval=0.05, outbox_interval=0.05)
    assert running.engine.publish_in_tick is False
    r = store.create(V2, "all", sim.ids, build_policy(stages="100%", soak="0"))
    running.engine.tick()  # decides and commits the assignments, publishes nothing itself
    assert publisher.sent == [] and len(store.unpublished()) == 30
    running.start()
    try:
        deadline = time.monotonic() + 30
        while store.unpublished() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        running.stop()
    assert store.unpublished() == []
    assert sorted(d for d, _, _ in publisher.sent) == sorted(sim.ids)
    assert {rid for _, _, rid in publisher.sent} == {r.id}
    stats = running.outbox_stats()
    assert stats["published"] == 30 and stats["errors"] == 0
    assert all(row["publish_count"] == 2 for d, row in store.desired().items() if d in sim.ids)  # v1 once, v2 once


def test_a_tick_wakes_the_outbox_at_once(fleet_ctx):
    sim = Fleet(fleet_ctx, n=10)
    store = RolloutStore(sim.engine, fleet_ctx.fleet_id)
    publisher = Recorder()
    running = EngineWithOutbox(RolloutEngine(store, publisher), interval=0.05, outbox_interval=60).start()
    try:
        time.sleep(0.3)  # the outbox's first round is over: its next poll is a minute away
        t0 = time.monotonic()
        store.create(V2, "all", sim.ids, build_policy(stages="100%", soak="0"))
        while (store.unpublished() or not publisher.sent) and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        took = time.monotonic() - t0
    finally:
        running.stop()
    assert sorted(d for d, _, _ in publisher.sent) == sorted(sim.ids) and took < 20
