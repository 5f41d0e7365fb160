"""`edgekit fleet serve` as separate processes: two replicas share the load exactly once; a broker killed with -9
mid-ingest comes back and ingest resumes."""

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


def _serve(ctx, replica):
    return edgekit(ctx, "serve", "--replica", replica, "--no-http")


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
        replicas = [_serve(f.ctx, name) for name in ("a", "b")]
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
        # only the replica named "main" runs the rollout engine unless told otherwise
        assert _stats(f.ctx, "a")["rollouts"] is False and _stats(f.ctx, "b")["rollouts"] is False
        assert _samples(engine) == 2000
        engine.dispose()
    finally:
        _stop_all(replicas)
        f.stop_broker()


@pytest.mark.slow
def test_ingest_resumes_after_broker_kill9(tmp_path):
    f = Fleet(tmp_path).start_broker()
    procs = []
    try:
        pkg = f.provision("k1").package
        serve = _serve(f.ctx, "main")
        procs.append(serve)
        wait_for(lambda: (_stats(f.ctx, "main") or {}).get("mqtt", {}).get("connected"), what="service connected")
        assert _stats(f.ctx, "main")["rollouts"] is True
        # ~8 s of telemetry at 100 messages/s. The device backs off 2 s before reconnecting (agents back off with
        # jitter), the service 0.1-1 s: Mosquitto 2.0 does not queue shared-subscription messages for a member
        # whose session is offline after a restart, so the service must rejoin before the devices' backlog arrives.
        sim = spawn(["-m", "tests.fleet.devsim", str(pkg), "--messages", "800", "--rate", "100",
                     "--reconnect-min", "2"])
        procs.append(sim)
        engine = f.engine()
        wait_for(lambda: _samples(engine) > 100, what="ingest running")
        f.kill_broker()
        before = _samples(engine)
        # the outage is real for the service: it has seen the connection drop before the broker comes back
        wait_for(lambda: (_stats(f.ctx, "main") or {}).get("mqtt", {}).get("connected") is False, timeout=20,
                 what="the service to see the broker gone")
        f.start_broker()
        out, err = sim.communicate(timeout=120)
        assert sim.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["acked"] == 801  # birth + 800 telemetry: every PUBACK came
        # ingest resumed: samples published after the restart are stored, through a second connection
        wait_for(lambda: _samples(engine) >= 790, timeout=30, what="ingest resumed after the restart")
        from fleet.models import TelemetrySample

        with engine.connect() as c:
            last = c.execute(select(func.max(TelemetrySample.seq))).scalar_one()
        assert last == 799 and _samples(engine) > before
        wait_for(lambda: _stats(f.ctx, "main")["mqtt"]["connects"] >= 2, what="reconnect recorded")
        engine.dispose()
    finally:
        _stop_all(procs)
        f.stop_broker()
