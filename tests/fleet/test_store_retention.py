"""Migrations, registry targets and the retention policy on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select


@pytest.fixture
def engine(tmp_path, any_db):
    from fleet.db import make_engine, upgrade

    url = any_db or f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    upgrade(url)  # idempotent
    e = make_engine(url)
    yield e
    e.dispose()


def test_migrations_reach_the_head(engine):
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from fleet.db import alembic_config, current_revisions

    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    assert current_revisions(engine) == set(script.get_heads())  # every head of the chain (other packages' too)
    # the fleet's own chain: core tables first, rollouts on top of them
    assert script.get_bases() == ["0001_fleet_core"]
    assert {"0001_fleet_core", "0002_rollouts"} <= {r.revision for r in script.walk_revisions()}
    assert {"devices", "telemetry", "inference", "events", "telemetry_rollup", "inference_rollup"} <= set(
        inspect(engine).get_table_names())
    if engine.dialect.name == "sqlite":
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_registry_targets(engine):
    from fleet.errors import DeviceExistsError, TargetError
    from fleet.registry import Registry

    r = Registry(engine, "f")
    r.add("a", tags={"site": "x"}, groups=["g1", "g2"])
    r.add("b", tags={"site": "y"}, groups=["g2"])
    r.add("c")
    ids = lambda t: [d.id for d in r.select(t)]  # noqa: E731
    assert ids("tag:site=x") == ["a"] and ids("group:g2") == ["a", "b"] and ids("devices:c,a") == ["a", "c"]
    assert ids("all") == ["a", "b", "c"] and ids("tag:site=z") == []
    for bad in ("tag:site", "group:", "devices:", "host:a", "devices:bad id"):
        with pytest.raises(TargetError):
            r.select(bad)
    with pytest.raises(DeviceExistsError):
        r.add("a")
    r.revoke("c")
    assert ids("all") == ["a", "b"] and not r.provisioned("c")


def test_retention_folds_old_samples_into_buckets(engine):
    from fleet.models import InferenceRollup, InferenceSample, TelemetryRollup, TelemetrySample
    from fleet.retention import apply_retention
    from fleet.store import series, write_batch

    day = 86400.0
    now = 100 * day
    old = now - 10 * day  # older than raw_days=7
    tel, inf = [], []
    for i in range(60):  # one sample a minute for an hour, all old; then 5 fresh samples
        ts = old + i * 60
        tel.append({"device_id": "d", "seq": i, "ts": ts, "received": ts, "cpu": float(i), "mem": 50.0,
                    "temp": 40.0 + i % 7, "disk": None, "load1": 0.1, "extra": None})
        inf.append({"device_id": "d", "seq": i, "ts": ts, "model_version": "m@1", "count": 10, "errors": i % 2,
                    "p50_ms": 1.0, "p95_ms": float(i), "p99_ms": 3.0})
    for i in range(5):
        ts = now - 60 * i
        tel.append({"device_id": "d", "seq": 1000 + i, "ts": ts, "received": ts, "cpu": 99.0, "mem": 1.0,
                    "temp": 1.0, "disk": 1.0, "load1": 1.0, "extra": {"k": 1}})
    with engine.begin() as c:
        write_batch(c, telemetry=tel, inference=inf)
    res = apply_retention(engine, now, raw_days=7, bucket_s=900)
    assert res == {"telemetry": 60, "inference": 60}
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(TelemetrySample)).scalar_one() == 5
        assert c.execute(select(func.count()).select_from(InferenceSample)).scalar_one() == 0
        buckets = c.execute(select(TelemetryRollup).order_by(TelemetryRollup.bucket)).all()
        ib = c.execute(select(InferenceRollup).order_by(InferenceRollup.bucket)).all()
    # an hour of minute samples → 4 or 5 quarter-hour buckets holding all 60 samples, with exact means
    assert sum(b.n for b in buckets) == 60 and 4 <= len(buckets) <= 5
    first = buckets[0]
    start = int(first.bucket)
    in_first = [i for i in range(60) if start <= old + i * 60 < start + 900]
    assert first.cpu == pytest.approx(sum(in_first) / len(in_first))
    assert max(b.temp_max for b in buckets) == 46.0
    assert sum(b.count for b in ib) == 600 and sum(b.errors for b in ib) == 30
    assert max(b.p95_max_ms for b in ib) == 59.0
    # the series query returns rollups for the expired span and raw samples after it
    pts = series(engine, "d", "cpu", since=old - day, until=now + 1)
    assert [p["rollup"] for p in pts] == [True] * len(buckets) + [False] * 5
    # running again changes nothing; late data for a folded bucket merges into it
    assert apply_retention(engine, now, 7, 900) == {"telemetry": 0, "inference": 0}
    with engine.begin() as c:
        write_batch(c, telemetry=[{"device_id": "d", "seq": 5000, "ts": old + 1, "received": now, "cpu": 1000.0,
                                   "mem": None, "temp": None, "disk": None, "load1": None, "extra": None}])
    apply_retention(engine, now, 7, 900)
    with engine.connect() as c:
        b0 = c.execute(select(TelemetryRollup).order_by(TelemetryRollup.bucket)).first()
    assert b0.n == first.n + 1
    assert b0.cpu == pytest.approx((first.cpu * first.n + 1000.0) / (first.n + 1))
