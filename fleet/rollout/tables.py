"""Rollout tables on the fleet store's ``Base`` (migration: ``fleet/migrations/versions/0002_rollouts.py``).

- ``rollouts``: one row per rollout: bundle, target (resolved device list), policy, state, stage, soak clock.
- ``rollout_devices``: one row per (rollout, device) assignment: stage, previous desired model, status.
- ``rollout_audit``: every decision and operator command, with the numbers behind it (JSON).
- ``desired_states``: the outbox of what each device was told to run. A row whose ``published_generation`` is
  behind its ``generation`` is (re)published by the engine, so a crash between the database commit and the MQTT PUBACK
  only ever repeats an identical retained message, never an install.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Double, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet.db import Base

_BigId = BigInteger().with_variant(Integer(), "sqlite")


class RolloutRow(Base):
    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fleet: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="rollout")
    bundle_name: Mapped[str] = mapped_column(String(128))
    bundle_version: Mapped[str] = mapped_column(String(64))
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    bundle_url: Mapped[str] = mapped_column(String(512))
    bundle_size: Mapped[int] = mapped_column(BigInteger, default=0)
    bundle_payloads: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # schema-2 bundles' targets
    bundle_schema: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    target: Mapped[str] = mapped_column(String(512))
    devices: Mapped[list[str]] = mapped_column(JSON)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(32), index=True)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    stage_started_at: Mapped[float | None] = mapped_column(Double)
    soak_started_at: Mapped[float | None] = mapped_column(Double)
    acknowledged_at: Mapped[float | None] = mapped_column(Double)
    reverted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)


class RolloutDeviceRow(Base):
    __tablename__ = "rollout_devices"

    rollout_id: Mapped[str] = mapped_column(String(64), ForeignKey("rollouts.id", ondelete="CASCADE"),
                                            primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage: Mapped[int] = mapped_column(Integer)
    assigned_at: Mapped[float] = mapped_column(Double)
    previous: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    status_at: Mapped[float | None] = mapped_column(Double)
    reason: Mapped[str | None] = mapped_column(String(512))


class AuditRow(Base):
    __tablename__ = "rollout_audit"
    __table_args__ = (Index("ix_rollout_audit_rollout_ts", "rollout_id", "ts"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(String(32))       # planner | operator | engine | user:NAME (dashboard)
    event: Mapped[str] = mapped_column(String(32))       # create, assign, soak, advance, complete, fail_pause, ...
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    numbers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DesiredRow(Base):
    __tablename__ = "desired_states"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[dict[str, Any] | None] = mapped_column(JSON)   # None: clear the retained desired
    rollout_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[float] = mapped_column(Double)
    generation: Mapped[int] = mapped_column(Integer, default=1)       # +1 on every change
    published_generation: Mapped[int] = mapped_column(Integer, default=0)
    published_at: Mapped[float | None] = mapped_column(Double)
    publish_count: Mapped[int] = mapped_column(Integer, default=0)
