"""Tables of the fleet store (SQLAlchemy 2 declarative). Times are UNIX seconds (float) on every backend.

- ``devices``: the registry — provisioned devices, their tags/groups, online status, current model, capabilities.
- ``telemetry``: one row per system sample (device, seq, ts) — unique, so a redelivered QoS 1 message is stored once.
- ``inference``: one row per (sample, model version) with count, errors and latency percentiles.
- ``events``: update progress/outcome events from devices (the rollout engine reads these).
- ``telemetry_rollup`` / ``inference_rollup``: downsampled buckets kept after raw samples expire.
- ``device_latest``: each device's newest system sample (by ts, then seq), kept by the store's batch write and
  pruned with the raw samples by retention, so the device tables read one row per device instead of the telemetry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Double, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base

BigId = BigInteger().with_variant(Integer(), "sqlite")  # sqlite autoincrement needs INTEGER PRIMARY KEY


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64))
    provisioned: Mapped[bool] = mapped_column(Boolean, default=True)
    provisioned_at: Mapped[float | None] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double)
    auth: Mapped[str] = mapped_column(String(16), default="cert")  # cert | password
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[float | None] = mapped_column(Double)
    registered_at: Mapped[float | None] = mapped_column(Double)  # first birth message
    agent_version: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"runtime": {...}, "hardware": {...}}
    update_state: Mapped[str | None] = mapped_column(String(32))
    update: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state_ts: Mapped[float | None] = mapped_column(Double)  # ts of the newest state message applied

    def to_dict(self) -> dict[str, Any]:
        return {c.name: getattr(self, c.key) for c in self.__table__.columns}


class TelemetrySample(Base):
    __tablename__ = "telemetry"
    __table_args__ = (UniqueConstraint("device_id", "seq", "ts"), Index("ix_telemetry_device_ts", "device_id", "ts"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[float] = mapped_column(Double)
    received: Mapped[float] = mapped_column(Double)
    cpu: Mapped[float | None] = mapped_column(Double)
    mem: Mapped[float | None] = mapped_column(Double)
    temp: Mapped[float | None] = mapped_column(Double)
    disk: Mapped[float | None] = mapped_column(Double)
    load1: Mapped[float | None] = mapped_column(Double)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class InferenceSample(Base):
    __tablename__ = "inference"
    __table_args__ = (UniqueConstraint("device_id", "seq", "ts", "model_version"),
                      Index("ix_inference_device_ts", "device_id", "ts"),
                      # the fleet-wide recent window (device tables, overview series) reads only this index
                      Index("ix_inference_ts_window", "ts", "device_id", "model_version", "count", "errors",
                            "p95_ms"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[float] = mapped_column(Double)
    model_version: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    p50_ms: Mapped[float | None] = mapped_column(Double)
    p95_ms: Mapped[float | None] = mapped_column(Double)
    p99_ms: Mapped[float | None] = mapped_column(Double)


class DeviceLatest(Base):
    __tablename__ = "device_latest"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[float] = mapped_column(Double)
    seq: Mapped[int] = mapped_column(BigInteger)
    cpu: Mapped[float | None] = mapped_column(Double)
    mem: Mapped[float | None] = mapped_column(Double)
    temp: Mapped[float | None] = mapped_column(Double)
    disk: Mapped[float | None] = mapped_column(Double)
    load1: Mapped[float | None] = mapped_column(Double)


class DeviceEvent(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("device_id", "seq", "ts"), Index("ix_events_device_ts", "device_id", "ts"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[float] = mapped_column(Double)
    received: Mapped[float] = mapped_column(Double)
    event: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(256))
    rollout_id: Mapped[str | None] = mapped_column(String(64), index=True)
    model: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class TelemetryRollup(Base):
    __tablename__ = "telemetry_rollup"
    __table_args__ = (UniqueConstraint("device_id", "bucket", "bucket_seconds"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[float] = mapped_column(Double)  # bucket start, UNIX seconds
    bucket_seconds: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    cpu: Mapped[float | None] = mapped_column(Double)
    mem: Mapped[float | None] = mapped_column(Double)
    temp: Mapped[float | None] = mapped_column(Double)
    temp_max: Mapped[float | None] = mapped_column(Double)
    disk: Mapped[float | None] = mapped_column(Double)
    load1: Mapped[float | None] = mapped_column(Double)


class InferenceRollup(Base):
    __tablename__ = "inference_rollup"
    __table_args__ = (UniqueConstraint("device_id", "bucket", "bucket_seconds", "model_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[float] = mapped_column(Double)
    bucket_seconds: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    p50_ms: Mapped[float | None] = mapped_column(Double)
    p95_ms: Mapped[float | None] = mapped_column(Double)
    p95_max_ms: Mapped[float | None] = mapped_column(Double)
    p99_ms: Mapped[float | None] = mapped_column(Double)


class LeaseRow(Base):
    """A lease (``fleet.lease``): who holds it, its epoch (the fencing token) and when it expires."""

    __tablename__ = "fleet_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Double, default=0.0)
    changed_at: Mapped[float] = mapped_column(Double, default=0.0)
