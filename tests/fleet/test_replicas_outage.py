"""`edgekit fleet serve` as separate processes: two replicas share the load exactly once (``--share-telemetry``); a
broker killed with -9 mid-ingest and restarted loses nothing, with one replica and with two: stored = produced."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from tests.support.procs import stop_pid

from .conftest import Fleet, edgekit, spawn, wait_for


def _samples(engine) -> int:
    from fleet.models import TelemetrySample

    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(TelemetrySample)).scalar_one()


def _stats(ctx, replica):
    try:
        return json.loads((ctx.paths.run_dir / f"serve-{replica}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _serve(ctx, replica, *extra):
    return edgekit(ctx, "serve", "--replica", replica, "--no-http", *extra)


def _stop_all(procs):
    for p in procs:
        stop_pid(p.pid, timeout=20)


def test_two_replicas_store_each_message_exactly_once(tmp_path, pg_url):
    f = Fleet(tmp_path, db_url=pg_url).start_broker()
    replicas = []
    try:
        devices = [f.provision(f"r{i}").package for i in range(4)]
        from fleet.db import upgrade

        upgrade(f.ctx.db_url)
        replicas = [_serve(f.ctx, name, "--share-telemetry") for name in ("a", "b")]
        wait_for(lambda: all((_stats(f.ctx, n) or {}).get("mqtt", {}).get("connected") for n in ("a", "b")),
                 what="both replicas connected")
        # a second process under a replica name that already runs is refused (it would steal the session)
        dup = _serve(f.ctx, "a")
        _, err = dup.communicate(timeout=60)
        assert dup.returncode != 0 and "already runs" in err, err
        sims = [spawn(["-m", "tests.fleet.devsim", str(p), "--messages", "250", "--samples", "2"]) for p in devices]
        for s in sims:
            out, err = s.communicate(timeout=120)
            assert s.returncode == 0, err
        engine = f.engine()
        wait_for(lambda: _samples(engine) == 2000, timeout=60, what="2000 samples stored")
        _stop_all(replicas)
        replicas = []
        a, b = _stats(f.ctx, "a")["ingest"], _stats(f.ctx, "b")["ingest"]
        # each replica took a share, and together they saw every telemetry message exactly once
        assert a["telemetry_messages"] > 0 and b["telemetry_messages"] > 0, (a, b)
        assert a["telemetry_messages"] + b["telemetry_messages"] == 1000, (a, b)
        assert a["samples"] + b["samples"] == 2000
        # both took part in the engine lease; exactly one of them held it
        sa, sb = _stats(f.ctx, "a"), _stats(f.ctx, "b")
        assert sa["rollouts"] is True and sb["rollouts"] is True
        assert sa["lease"]["acquisitions"] + sb["lease"]["acquisitions"] == 1, (sa["lease"], sb["lease"])
        assert _samples(engine) == 2000
        engine.dispose()
    finally:
        _stop_all(replicas)
        f.stop_broker()


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [1, 2])
def test_broker_kill9_and_restart_during_ingest_loses_nothing(tmp_path, request, replicas):
    """Telemetry at 100 messages/s; the broker is killed with -9 and restarted in the middle. The device reconnects
    as fast as the service (0.1 s), so it publishes while the service is still away: the service's persistent
    session (normal subscription, clean_start off, session expiry) has the broker queue those for it. Every sample
    produced is stored exactly once: 1 replica on SQLite, 2 replicas (each storing all) on PostgreSQL."""
    db = request.getfixturevalue("pg_url") if replicas == 2 else ""
    f = Fleet(tmp_path, db_url=db).start_broker()
    procs = []
    names = ["main", "spare"][:replicas]
    n = 800
    try:
        pkg = f.provision("k1").package
        from fleet.db import upgrade

        upgrade(f.ctx.db_url)
        for name in names:
            procs.append(_serve(f.ctx, name))
        wait_for(lambda: all((_stats(f.ctx, m) or {}).get("mqtt", {}).get("connected") for m in names),
                 what="service connected")
        sim = spawn(["-m", "tests.fleet.devsim", str(pkg), "--messages", str(n), "--rate", "100",
                     "--reconnect-min", "0.1"])
        procs.append(sim)
        engine = f.engine()
        wait_for(lambda: _samples(engine) > 150, what="ingest running")
        f.kill_broker()
        before = _samples(engine)
        # the outage is real for every replica: each has seen the connection drop before the broker comes back
        wait_for(lambda: all((_stats(f.ctx, m) or {}).get("mqtt", {}).get("connected") is False for m in names),
                 timeout=20, what="the replicas to see the broker gone")
        f.start_broker()
        out, err = sim.communicate(timeout=120)
        assert sim.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["acked"] == n + 1  # birth + telemetry: the broker took every one
        wait_for(lambda: _samples(engine) >= n, timeout=60, what="every sample stored")
        from fleet.models import TelemetrySample

        with engine.connect() as c:
            seqs = [s for (s,) in c.execute(select(TelemetrySample.seq).where(TelemetrySample.device_id == "k1")
                                            .order_by(TelemetrySample.seq))]
        assert seqs == list(range(n)) and before < n  # stored = produced, each exactly once
        for m in names:
            wait_for(lambda m=m: _stats(f.ctx, m)["mqtt"]["connects"] >= 2, what=f"{m} reconnected")
        _stop_all(procs)
        procs = []
        for m in names:  # every replica received every message (its own queue), none lost one
            assert _stats(f.ctx, m)["ingest"]["telemetry_messages"] >= n, _stats(f.ctx, m)["ingest"]
        assert _samples(engine) == n
        engine.dispose()
    finally:
        _stop_all(procs)
        f.stop_broker()
