"""Retention policy: raw samples older than ``raw_days`` are folded into fixed buckets and then deleted.

The bucketing is pure (:func:`rollup_system`, :func:`rollup_inference`); :func:`apply_retention` reads the expired
raw rows, merges them into existing buckets (count-weighted), writes the buckets and deletes the raw rows in one
transaction per table (with each device's newest figures in ``device_latest`` when they expire too). The cutoff is
aligned to a bucket boundary so a bucket is folded in one run.
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import and_, delete, select
from sqlalchemy.engine import Engine

from .models import DeviceLatest, InferenceRollup, InferenceSample, TelemetryRollup, TelemetrySample

SYSTEM_AVG = ("cpu", "mem", "temp", "disk", "load1")


def _mean(pairs: list[tuple[float, int]]) -> float | None:
    tot = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / tot if tot else None


def rollup_system(rows: Iterable[dict[str, Any]], bucket_s: int) -> dict[tuple[str, float], dict[str, Any]]:
    acc: dict[tuple[str, float], dict[str, Any]] = {}
    for r in rows:
        key = (r["device_id"], float(int(r["ts"] // bucket_s) * bucket_s))
        a = acc.setdefault(key, {"n": 0, **{c: [] for c in SYSTEM_AVG}, "temp_max": None})
        a["n"] += 1
        for c in SYSTEM_AVG:
            if r.get(c) is not None:
                a[c].append((r[c], 1))
        if r.get("temp") is not None:
            a["temp_max"] = r["temp"] if a["temp_max"] is None else max(a["temp_max"], r["temp"])
    return acc


def rollup_inference(rows: Iterable[dict[str, Any]], bucket_s: int) -> dict[tuple[str, float, str], dict[str, Any]]:
    acc: dict[tuple[str, float, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["device_id"], float(int(r["ts"] // bucket_s) * bucket_s), r["model_version"])
        a = acc.setdefault(key, {"n": 0, "count": 0, "errors": 0, "p50_ms": [], "p95_ms": [], "p99_ms": [],
                                 "p95_max_ms": None})
        a["n"] += 1
        a["count"] += r["count"] or 0
        a["errors"] += r["errors"] or 0
        w = max(r["count"] or 0, 1)
        for c in ("p50_ms", "p95_ms", "p99_ms"):
            if r.get(c) is not None:
                a[c].append((r[c], w))
        if r.get("p95_ms") is not None:
            a["p95_max_ms"] = r["p95_ms"] if a["p95_max_ms"] is None else max(a["p95_max_ms"], r["p95_ms"])
    return acc


def cutoff_for(now: float, raw_days: float, bucket_s: int) -> float:
    return float(int((now - raw_days * 86400) // bucket_s) * bucket_s)


def apply_retention(engine: Engine, now: float, raw_days: float, bucket_s: int) -> dict[str, int]:
    """Fold raw rows older than the cutoff into buckets and delete them; returns counts folded per table."""
    cutoff = cutoff_for(now, raw_days, bucket_s)
    done = {"telemetry": 0, "inference": 0}
    with engine.begin() as conn:
        t = TelemetrySample.__table__
        rows = [dict(r._mapping) for r in conn.execute(select(t).where(t.c.ts < cutoff))]
        if rows:
            acc = rollup_system(rows, bucket_s)
            rt = TelemetryRollup.__table__
            for (dev, bucket), a in acc.items():
                old = conn.execute(select(rt).where(and_(rt.c.device_id == dev, rt.c.bucket == bucket,
                                                         rt.c.bucket_seconds == bucket_s))).first()
                vals = {c: a[c] for c in SYSTEM_AVG}
                n = a["n"]
                if old is not None:
                    for c in SYSTEM_AVG:
                        pairs = a[c] + ([(getattr(old, c), old.n)] if getattr(old, c) is not None else [])
                        vals[c] = pairs
                    n += old.n
                    tmax = max([x for x in (old.temp_max, a["temp_max"]) if x is not None], default=None)
                    conn.execute(delete(rt).where(rt.c.id == old.id))
                else:
                    tmax = a["temp_max"]
                conn.execute(rt.insert().values(device_id=dev, bucket=bucket, bucket_seconds=bucket_s, n=n,
                                                temp_max=tmax, **{c: _mean(vals[c]) for c in SYSTEM_AVG}))
            conn.execute(delete(t).where(t.c.ts < cutoff))
            # a device whose newest sample expired has no raw sample left: no newest figures either
            conn.execute(delete(DeviceLatest).where(DeviceLatest.ts < cutoff))
            done["telemetry"] = len(rows)
        t = InferenceSample.__table__
        rows = [dict(r._mapping) for r in conn.execute(select(t).where(t.c.ts < cutoff))]
        if rows:
            acc = rollup_inference(rows, bucket_s)
            rt = InferenceRollup.__table__
            for (dev, bucket, ver), a in acc.items():
                old = conn.execute(select(rt).where(and_(rt.c.device_id == dev, rt.c.bucket == bucket,
                                                         rt.c.bucket_seconds == bucket_s,
                                                         rt.c.model_version == ver))).first()
                n, count, errors, p95max = a["n"], a["count"], a["errors"], a["p95_max_ms"]
                pct = {c: a[c] for c in ("p50_ms", "p95_ms", "p99_ms")}
                if old is not None:
                    w = max(old.count, 1)
                    for c in pct:
                        if getattr(old, c) is not None:
                            pct[c] = pct[c] + [(getattr(old, c), w)]
                    n, count, errors = n + old.n, count + old.count, errors + old.errors
                    p95max = max([x for x in (old.p95_max_ms, p95max) if x is not None], default=None)
                    conn.execute(delete(rt).where(rt.c.id == old.id))
                conn.execute(rt.insert().values(device_id=dev, bucket=bucket, bucket_seconds=bucket_s,
                                                model_version=ver, n=n, count=count, errors=errors,
                                                p95_max_ms=p95max, **{c: _mean(v) for c, v in pct.items()}))
            conn.execute(delete(t).where(t.c.ts < cutoff))
            done["inference"] = len(rows)
    return done
