"""``device_latest`` (each device's newest system sample, kept by the store's batch write) always equals what the
telemetry itself says, on SQLite and PostgreSQL: across ingest batches (out of order, redelivered), revocation,
re-provisioning, deletion of a registry row, retention and the migration that creates it. The device tables built
on it show the same figures as a direct reading of the raw samples."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import delete, select


def _migrated(url: str):
    from fleet.db import make_engine, upgrade

    upgrade(url)
    e = make_engine(url)
    yield e
    e.dispose()


@pytest.fixture
def engine(tmp_path, any_db):
    yield from _migrated(any_db or f"sqlite:///{tmp_path / 'store.db'}")


def newest_from_telemetry(engine) -> dict[str, dict]:
    """The reference: each device's newest raw sample by (ts, seq), read straight from the telemetry table."""
    from fleet.models import TelemetrySample as T

    out: dict[str, tuple] = {}
    with engine.connect() as c:
        for r in c.execute(select(T.device_id, T.ts, T.seq, T.cpu, T.mem, T.temp, T.disk, T.load1)):
            if r.device_id not in out or (r.ts, r.seq) > out[r.device_id][:2]:
                out[r.device_id] = (r.ts, r.seq, r.cpu, r.mem, r.temp, r.disk, r.load1)
    return {d: dict(zip(("ts", "seq", "cpu", "mem", "temp", "disk", "load1"), v)) for d, v in out.items()}


def assert_latest_matches(engine) -> None:
    from fleet.store import latest_system

    ref = newest_from_telemetry(engine)
    got = latest_system(engine)
    assert set(got) == set(ref)
    for d, v in ref.items():
        assert got[d] == {k: v[k] for k in ("ts", "cpu", "mem", "temp", "disk", "load1")}, d


def sample(dev: str, seq: int, ts: float, cpu: float, temp: float | None = 40.0) -> dict:
    return {"device_id": dev, "seq": seq, "ts": ts, "received": ts, "cpu": cpu, "mem": 50.0, "temp": temp,
            "disk": None, "load1": None, "extra": None}


def write(engine, telemetry=(), inference=()) -> None:
    from fleet.store import write_batch

    with engine.begin() as c:
        write_batch(c, telemetry=list(telemetry), inference=list(inference))


def test_newest_per_device_is_pure_and_ordered():
    from fleet.store import newest_per_device

    rows = [sample("b", 1, 10.0, 1), sample("a", 5, 20.0, 2), sample("a", 9, 15.0, 3), sample("b", 2, 10.0, 4)]
    assert [(r["device_id"], r["cpu"]) for r in newest_per_device(rows)] == [("a", 2), ("b", 4)]  # ts, then seq
    assert newest_per_device([]) == []


def test_summary_follows_batches_out_of_order_and_redelivered(engine):
    now = time.time()
    write(engine, [sample("a", 1, now - 50, 10), sample("b", 1, now - 40, 20)])
    assert_latest_matches(engine)
    # a later batch with older samples (a device flushing its spool): the newest stays
    write(engine, [sample("a", 0, now - 90, 99), sample("a", 2, now - 30, 11), sample("b", 0, now - 80, 98)])
    assert_latest_matches(engine)
    # a redelivered sample (same device, seq, ts) with other values: stored once, and the newest is unchanged
    write(engine, [sample("a", 2, now - 30, 55)])
    assert_latest_matches(engine)
    # same ts, higher seq wins (as in the reference); a sample without temperature blanks it, as the raw row does
    write(engine, [sample("b", 7, now - 40, 21, temp=None), sample("c", 1, now - 5, 30)])
    assert_latest_matches(engine)
    from fleet.store import latest_system

    got = latest_system(engine)
    assert got["a"]["cpu"] == 11 and got["b"]["cpu"] == 21 and got["b"]["temp"] is None and got["c"]["cpu"] == 30
    assert latest_system(engine, ["c"]) == {"c": got["c"]}


def test_summary_through_the_real_ingest(engine):
    """Real messages through :class:`fleet.ingest.Ingest` (its batches and flushes), then the device table."""
    from edgekit.protocol import StateMessage, TelemetryMessage, Topic
    from fleet.ingest import Ingest
    from fleet.registry import Registry
    from fleet.views import device_rows

    reg = Registry(engine, "f")
    reg.add_many([f"d{i}" for i in range(6)], tags={"site": "lab"}, groups=["g"])
    ing = Ingest(engine, "f", known_refresh=0)
    now = time.time()
    first: list[tuple[str, bytes]] = []
    for rnd in range(3):
        for i in range(6):
            dev = f"d{i}"
            if rnd == 0:
                ing.handle(str(Topic("f", dev, "state")), StateMessage(
                    dev, "online", ts=now, agent_version="0.1.0", model={"name": "m", "version": "1.0.0",
                                                                        "sha256": "ab" * 32}).encode(), now)
            rows = [{"seq": rnd * 10 + k, "ts": now - 100 + rnd * 20 + k, "interval_s": 10,
                     "system": {"cpu_percent": float(i * 10 + rnd + k), "temperature_c": {"cpu": 40.0 + i}},
                     "inference": {"m@1.0.0": {"count": 10, "errors": 0, "p95_ms": 1.0 + i + rnd}}}
                    for k in range(2)]
            msg = (str(Topic("f", dev, "telemetry")), TelemetryMessage(dev, rows).encode())
            ing.handle(*msg, now)
            if rnd == 0:
                first.append(msg)
        if rnd == 1:  # round 0's messages again (QoS 1 redelivery) in a later batch
            for topic, payload in first:
                ing.handle(topic, payload, now)
        ing.flush()
        assert_latest_matches(engine)
    ref = newest_from_telemetry(engine)
    rows = {r["id"]: r for r in device_rows(engine, "f", now)}
    assert set(rows) == {f"d{i}" for i in range(6)}
    for d, r in rows.items():
        assert (r["cpu"], r["temp"]) == (ref[d]["cpu"], ref[d]["temp"])
        assert r["tags"] == {"site": "lab"} and r["groups"] == ["g"] and r["online"] and r["version"] == "1.0.0"
    # p95 over the 5-minute window of the current model: the count-weighted mean of the raw interval p95s
    i = 3
    assert rows["d3"]["p95_ms"] == pytest.approx(sum(1.0 + i + rnd for rnd in range(3) for _ in range(2)) / 6)


def test_revoked_reprovisioned_and_deleted_devices(engine):
    from fleet.models import Device
    from fleet.registry import Registry
    from fleet.views import device_rows

    reg = Registry(engine, "f")
    reg.add_many(["a", "b", "c"])
    now = time.time()
    write(engine, [sample("a", 1, now - 10, 10), sample("b", 1, now - 10, 20), sample("c", 1, now - 10, 30)])
    reg.revoke("b")
    assert [r["id"] for r in device_rows(engine, "f", now)] == ["a", "c"]  # a revoked device drops out
    write(engine, [sample("b", 2, now - 5, 21)])  # late samples of the revoked device are still its newest
    assert_latest_matches(engine)
    reg.add_many(["b"])  # provisioned again: back, with the newest figures its telemetry holds
    rows = {r["id"]: r for r in device_rows(engine, "f", now)}
    assert rows["b"]["cpu"] == 21 and rows["a"]["cpu"] == 10
    with engine.begin() as c:  # a registry row deleted by hand: gone from the tables, the others intact
        c.execute(delete(Device.__table__).where(Device.__table__.c.id == "c"))
    rows = {r["id"]: r for r in device_rows(engine, "f", now)}
    assert set(rows) == {"a", "b"} and rows["a"]["cpu"] == 10 and rows["b"]["cpu"] == 21
    assert_latest_matches(engine)


def test_retention_drops_the_newest_figures_with_the_raw_samples(engine):
    from fleet.retention import apply_retention
    from fleet.store import latest_system

    now = time.time()
    old = now - 10 * 86400
    write(engine, [sample("old", 1, old, 1), sample("old", 2, old + 60, 2), sample("both", 1, old, 3),
                   sample("both", 2, now - 60, 4), sample("new", 1, now - 30, 5)])
    apply_retention(engine, now, raw_days=7, bucket_s=3600)
    assert_latest_matches(engine)
    assert set(latest_system(engine)) == {"both", "new"} and latest_system(engine)["both"]["cpu"] == 4


def test_migration_fills_the_summary_from_stored_samples(tmp_path, any_db):
    """A store written before the summary existed: upgrading fills it with each device's newest sample."""
    from fleet.db import make_engine, upgrade
    from fleet.models import TelemetrySample

    url = any_db or f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0003_dashboard")
    e = make_engine(url)
    try:
        now = time.time()
        rows = [sample(f"d{i % 4}", i, now - 100 + (i % 7), float(i)) for i in range(40)]
        rows.append(sample("d0", 99, max(r["ts"] for r in rows if r["device_id"] == "d0"), 123.0))  # a tie on ts
        with e.begin() as c:
            c.execute(TelemetrySample.__table__.insert(), rows)
        upgrade(e)
        assert_latest_matches(e)
        from fleet.store import latest_system

        assert latest_system(e)["d0"]["cpu"] == 123.0
    finally:
        e.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    yield from _migrated(f"sqlite:///{tmp_path / 'store.db'}")


def test_the_fleet_wide_window_reads_the_time_index(sqlite_engine):
    """The devices table's 5-minute inference window does not walk the whole per-device index. Checked on SQLite's
    plan only: PostgreSQL chooses its plan from table statistics (its EXPLAIN was checked by hand)."""
    engine = sqlite_engine
    from sqlalchemy import event

    from fleet import store

    captured: list[tuple] = []

    def grab(conn, cursor, statement, params, context, executemany):
        if "FROM inference" in statement:
            captured.append((statement, params))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        store.inference_summary(engine, time.time() - 300)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    with engine.connect() as c:
        plan = " ".join(str(r[3]) for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + captured[0][0], captured[0][1]))
    assert "ix_inference_ts_window" in plan and "ix_inference_device_ts" not in plan, plan


def test_page_p95_equals_the_fleet_wide_window(engine):
    """fill_p95 (the devices page's rows only) gives each row the p95 device_rows gives it for the whole fleet:
    the current model's samples in the last 5 minutes, else the busiest version's, else none."""
    from edgekit.protocol import StateMessage
    from fleet.registry import Registry
    from fleet.views import device_rows, fill_p95

    reg = Registry(engine, "f")
    ids = [f"d{i}" for i in range(8)]
    reg.add_many(ids)
    now = time.time()
    for i, d in enumerate(ids[:6]):
        reg.apply_state(StateMessage(d, "online", ts=now, model={"name": "m", "version": "2.0", "sha256": "a" * 64}))
    inf = []
    for i, d in enumerate(ids):
        for k in range(12):
            ts = now - 20 * k - 1  # half the samples are older than the 5-minute window
            ver = "m@2.0" if i % 3 else "m@1.0"  # every third device reports only another version
            inf.append({"device_id": d, "seq": k, "ts": ts, "model_version": ver, "count": 10 + i + k,
                        "errors": 0, "p50_ms": 1.0, "p95_ms": None if (i == 5) else 1.5 + i * 0.25 + k,
                        "p99_ms": 9.0})
            if i == 4:
                inf.append({"device_id": d, "seq": k, "ts": ts, "model_version": "m@1.0", "count": 1000,
                            "errors": 1, "p50_ms": 1.0, "p95_ms": 50.0, "p99_ms": 90.0})
    write(engine, inference=inf)
    full = device_rows(engine, "f", now)
    page = fill_p95(engine, device_rows(engine, "f", now, p95=False)[2:7], now)
    assert [r["p95_ms"] for r in page] == [r["p95_ms"] for r in full[2:7]]
    assert all(r["p95_ms"] is None for r in device_rows(engine, "f", now, p95=False))
    by_id = {r["id"]: r for r in full}
    assert by_id["d5"]["p95_ms"] is None and by_id["d0"]["p95_ms"] is not None  # no p95 reported; other version
    assert by_id["d4"]["p95_ms"] < 50  # the current model's window, not the busier old version's
    assert len({r["p95_ms"] for r in full}) >= 6


def test_change_token_moves_with_writes_and_the_registry(engine):
    """The live views' change token: equal while nothing is written, different after an ingest batch, a birth
    message, a provisioning and a revocation."""
    from edgekit.protocol import StateMessage
    from fleet.registry import Registry
    from fleet.store import devices_change_token

    reg = Registry(engine, "f")
    reg.add_many(["a", "b"])
    t0 = devices_change_token(engine)
    assert devices_change_token(engine) == t0
    now = time.time()
    write(engine, [sample("a", 1, now - 5, 10)])
    t1 = devices_change_token(engine)
    assert t1 != t0 and devices_change_token(engine) == t1
    reg.apply_state(StateMessage("b", "online", ts=now, model={"name": "m", "version": "1", "sha256": "a" * 64}),
                    received=now + 1)
    t2 = devices_change_token(engine)
    assert t2 != t1
    reg.revoke("a")
    t3 = devices_change_token(engine)
    assert t3 != t2
    reg.add_many(["c"])
    assert devices_change_token(engine) != t3
