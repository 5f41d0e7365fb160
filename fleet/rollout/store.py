"""Rollouts in the fleet database: create, load, apply the planner's actions, operator commands, audit log.

All writes for one tick of one rollout happen in one transaction, so the database never holds half a decision.
The ``desired_states`` rows written here are the outbox the engine publishes from (see :mod:`fleet.rollout.tables`).
"""

from __future__ import annotations

import builtins
import secrets
import time
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fleet.db import session_factory, store_boundary
from edgekit.protocol import OUTCOME_EVENTS
from fleet.models import Device, DeviceEvent, InferenceSample

from .errors import NoTargetDevicesError, RolloutNotFoundError, RolloutStateError
from .model import (ABORTED, ACTIVE_STATES, COMPLETED, PENDING, REPLACED, REVERTED, RUNNING, STAGE_EVENTS,
                    TERMINAL_STATES, Assignment, BundleRef, DeviceState, ModelStats, Outcome, Rollout, RolloutEvent,
                    RolloutKind, transition)
from .planner import (Action, AssignDevice, Decide, FinishRevert, RevertDevice, SetDeviceStatus, StartSoak,
                      summarize)
from .policy import Policy
from .tables import AuditRow, DesiredRow, RolloutDeviceRow, RolloutRow

TELEMETRY_LOOKBACK = 3600.0  # seconds of the previous model's figures before a rollout that count as its baseline


def version_of(label: str) -> str:
    """Agents label inference figures ``name@version``; the planner compares versions."""
    return label.rsplit("@", 1)[1] if "@" in label else label


def new_rollout_id(now: float) -> str:
    return time.strftime("r%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(2)


def _to_rollout(row: RolloutRow, assignments: Iterable[RolloutDeviceRow]) -> Rollout:
    r = Rollout(id=row.id, bundle=BundleRef(row.bundle_name, row.bundle_version, row.bundle_sha256, row.bundle_url,
                                            row.bundle_size, tuple(row.bundle_payloads or ()),
                                            int(row.bundle_schema or 1)),
                policy=Policy.from_dict(row.policy), target=row.target, devices=tuple(row.devices),
                created_at=row.created_at, state=row.state, stage=row.stage, stage_started_at=row.stage_started_at,
                soak_started_at=row.soak_started_at, acknowledged_at=row.acknowledged_at, reverted=row.reverted,
                kind=row.kind)
    for a in assignments:
        r.assignments[a.device_id] = Assignment(a.device_id, a.stage, a.assigned_at, a.previous, a.status,
                                                a.status_at, a.reason)
    return r


@store_boundary
class RolloutStore:
    def __init__(self, engine: Engine, fleet: str, clock=time.time):
        self.engine = engine
        self.fleet = fleet
        self.Session = session_factory(engine)
        self.clock = clock
        # the rollout engine's writes (apply, note, mark_published_many) call this first in their transaction:
        # fleet.lease_store.LeaseKeeper.fence refuses them once another replica holds the engine lease
        self.fence: Callable[[Session], None] | None = None

    def _fenced(self, s: Session) -> None:
        if self.fence is not None:
            self.fence(s)

    # --- creating ------------------------------------------------------------------------------------------------

    def create(self, bundle: BundleRef, target: str, device_ids: Sequence[str], policy: Policy, *,
               kind: str = RolloutKind.ROLLOUT, message: str = "", supersede: bool = False,
               actor: str = "operator") -> Rollout:
        """Insert a running rollout over ``device_ids``. Refuses a target that overlaps an active rollout unless
        ``supersede`` (fleet-wide rollback), which ends those rollouts as superseded (no revert)."""
        if not device_ids:
            raise NoTargetDevicesError(f"target {target} matches no provisioned device")
        now = self.clock()
        rid = new_rollout_id(now)
        with self.Session.begin() as s:
            for other in self._overlapping(s, device_ids, refuse=not supersede):
                self._state_change(s, other, RolloutEvent.SUPERSEDE, "engine", f"superseded by {kind} {rid}", {}, now)
            s.add(RolloutRow(id=rid, fleet=self.fleet, kind=kind, bundle_name=bundle.name,
                             bundle_version=bundle.version, bundle_sha256=bundle.sha256, bundle_url=bundle.url,
                             bundle_size=bundle.size, bundle_payloads=list(bundle.payloads) or None,
                             bundle_schema=bundle.schema, target=target, devices=sorted(device_ids),
                             policy=policy.to_dict(), state=RUNNING, stage=0, stage_started_at=now,
                             soak_started_at=None, acknowledged_at=None, reverted=False, created_at=now,
                             updated_at=now, finished_at=None))
            s.flush()
            self._audit(s, rid, now, actor, RolloutEvent.CREATE, None, RUNNING, 0,
                        message or f"{kind} of {bundle.name} {bundle.version} to {target}: {policy.describe()}",
                        {"devices": len(device_ids), "bundle_sha256": bundle.sha256, "policy": policy.to_dict()})
        return self.get(rid)

    def check_free(self, device_ids: Sequence[str]) -> None:
        """Raise RolloutStateError if an active rollout already targets any of ``device_ids``."""
        with self.Session() as s:
            self._overlapping(s, device_ids, refuse=True)

    @staticmethod
    def _overlapping(s: Session, device_ids: Sequence[str], refuse: bool) -> list[RolloutRow]:
        found = []
        for other in s.scalars(select(RolloutRow).where(RolloutRow.state.in_(ACTIVE_STATES))):
            overlap = sorted(set(other.devices) & set(device_ids))
            if not overlap:
                continue
            if refuse:
                raise RolloutStateError(
                    f"rollout {other.id} ({other.state}) already targets {len(overlap)} of these devices "
                    f"({', '.join(overlap[:3])}{'…' if len(overlap) > 3 else ''})",
                    hint=f"wait for it, or end it with 'edgekit fleet rollout abort {other.id}'")
            found.append(other)
        return found

    # --- reading -------------------------------------------------------------------------------------------------

    def get(self, rollout_id: str) -> Rollout:
        with self.Session() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None:
                raise RolloutNotFoundError(f"no rollout {rollout_id!r}")
            return _to_rollout(row, self._assignment_values(s, rollout_id))

    def list(self, *, active_only: bool = False) -> list[Rollout]:
        with self.Session() as s:
            q = select(RolloutRow).order_by(RolloutRow.created_at)
            if active_only:
                q = q.where(RolloutRow.state.in_(ACTIVE_STATES))
            return [_to_rollout(row, self._assignment_values(s, row.id)) for row in s.scalars(q)]

    def needing_ticks(self) -> builtins.list[str]:  # (list: the method above)
        """Rollouts the engine must look at: active ones, aborted ones not yet reverted, and finished ones whose
        devices have not all reported (offline devices converge after completion)."""
        with self.Session() as s:
            ids = list(s.scalars(select(RolloutRow.id).where(RolloutRow.state.in_(ACTIVE_STATES))))
            ids += list(s.scalars(select(RolloutRow.id).where(RolloutRow.state == ABORTED,
                                                              RolloutRow.reverted.is_(False))))
            ids += list(s.scalars(select(RolloutDeviceRow.rollout_id).join(
                RolloutRow, RolloutRow.id == RolloutDeviceRow.rollout_id).where(
                RolloutRow.state == COMPLETED, RolloutDeviceRow.status == PENDING).distinct()))
            return sorted(set(ids))

    def audit(self, rollout_id: str | None = None, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        with self.Session() as s:
            q = select(AuditRow).order_by(AuditRow.id)
            if rollout_id:
                q = q.where(AuditRow.rollout_id == rollout_id)
            rows = list(s.scalars(q))
        rows = rows[-limit:] if limit else rows
        return [{"id": r.id, "rollout_id": r.rollout_id, "ts": r.ts, "actor": r.actor, "event": r.event,
                 "from_state": r.from_state, "to_state": r.to_state, "stage": r.stage, "message": r.message,
                 "numbers": r.numbers} for r in rows]

    def desired(self) -> dict[str, dict[str, Any]]:
        with self.Session() as s:
            return {r.device_id: {"model": r.model, "rollout_id": r.rollout_id, "updated_at": r.updated_at,
                                  "generation": r.generation, "published_generation": r.published_generation,
                                  "published_at": r.published_at, "publish_count": r.publish_count}
                    for r in s.scalars(select(DesiredRow))}

    @staticmethod
    def _assignment_values(s: Session, rollout_id: str) -> Iterable[Any]:
        """The assignments' columns as plain rows (reading, not writing: no ORM objects to build)."""
        R = RolloutDeviceRow
        return s.execute(select(R.device_id, R.stage, R.assigned_at, R.previous, R.status, R.status_at, R.reason)
                         .where(R.rollout_id == rollout_id).order_by(R.device_id))

    @staticmethod
    def _assignments(s: Session, rollout_id: str) -> builtins.list[RolloutDeviceRow]:
        return list(s.scalars(select(RolloutDeviceRow).where(RolloutDeviceRow.rollout_id == rollout_id)
                              .order_by(RolloutDeviceRow.device_id)))

    # --- planner inputs ------------------------------------------------------------------------------------------

    def device_states(self, rollout: Rollout) -> dict[str, DeviceState]:
        ids = list(rollout.devices)
        out: dict[str, DeviceState] = {}
        # plain column reads, no ORM objects: at 5,000 devices building Device and DesiredRow instances (and
        # decoding their unused JSON columns) was two thirds of a tick
        with self.Session() as s:
            devices = {d.id: d for d in s.execute(_where_in(
                select(Device.id, Device.provisioned, Device.online, Device.state_ts, Device.model_name,
                       Device.model_version, Device.model_sha256, Device.update_state), Device.id, ids))}
            # the desired state is the planner's input only for devices it may assign (their ``previous``): for
            # the rollout's assigned devices it is not read (decoding 10,000 JSON models a second adds up)
            fresh = [d for d in ids if d not in rollout.assignments]
            desired = {d: m for d, m in s.execute(_where_in(select(DesiredRow.device_id, DesiredRow.model),
                                                            DesiredRow.device_id, fresh))} if fresh else {}
            urls = {sha: {"url": url, "size": size} for sha, url, size in s.execute(
                select(RolloutRow.bundle_sha256, RolloutRow.bundle_url, RolloutRow.bundle_size))}
            since = rollout.created_at - 1.0
            latest: dict[str, Any] = {}
            for row in s.execute(_where_in(
                    select(DeviceEvent.device_id, DeviceEvent.event, DeviceEvent.received, DeviceEvent.rollout_id,
                           DeviceEvent.model["sha256"].as_string().label("sha256"), DeviceEvent.reason)
                    .where(DeviceEvent.event.in_(OUTCOME_EVENTS), DeviceEvent.received >= since)
                    .order_by(DeviceEvent.received, DeviceEvent.id), DeviceEvent.device_id, ids)):
                if row.rollout_id in (rollout.id, None) or row.sha256 == rollout.bundle.sha256:
                    latest[row.device_id] = row
        fresh_set = set(fresh)
        for d in ids:
            dev = devices.get(d)
            if dev is None or not dev.provisioned:
                continue
            ev = latest.get(d)
            outcome = None
            if ev is not None:
                sha = ev.sha256 or (rollout.bundle.sha256 if ev.rollout_id == rollout.id else None)
                outcome = Outcome(ev.event, ev.received, sha, ev.reason)
            model = ({"name": dev.model_name, "version": dev.model_version, "sha256": dev.model_sha256}
                     if dev.model_sha256 else None)
            want = desired.get(d)
            if want is None and d in fresh_set and model is not None and model["sha256"] in urls:
                # never told anything by the fleet (installed with a local bundle), but its model is one the
                # artifact server has: that is the desired state to go back to on abort
                want = {**model, **urls[model["sha256"]]}
            out[d] = DeviceState(d, bool(dev.online), dev.state_ts if dev.online else None, model,
                                 want, dev.update_state, outcome)
        return out

    def telemetry(self, rollout: Rollout) -> dict[tuple[str, str], ModelStats]:
        """Per (device, model version): inferences, errors and the count-weighted p95 since shortly before the
        rollout (the previous model's baseline) — the new model only has figures after its switch anyway."""
        since = rollout.created_at - TELEMETRY_LOOKBACK
        with self.Session() as s:
            q = (select(InferenceSample.device_id, InferenceSample.model_version,
                        func.sum(InferenceSample.count), func.sum(InferenceSample.errors),
                        func.sum(InferenceSample.p95_ms * InferenceSample.count),
                        func.sum(func.coalesce(InferenceSample.count, 0)).filter(InferenceSample.p95_ms.is_not(None)))
                 .where(InferenceSample.ts >= since))
            rows = s.execute(_where_in(q, InferenceSample.device_id, rollout.devices)
                             .group_by(InferenceSample.device_id, InferenceSample.model_version)).all()
        wanted = set(rollout.devices)
        out: dict[tuple[str, str], ModelStats] = {}
        for device_id, label, count, errors, p95_weighted, p95_count in rows:
            if device_id not in wanted:
                continue
            p95 = float(p95_weighted) / float(p95_count) if p95_weighted is not None and p95_count else None
            out[(device_id, version_of(label))] = ModelStats(int(count or 0), int(errors or 0), p95)
        return out

    # --- applying the planner's actions --------------------------------------------------------------------------

    def apply(self, rollout: Rollout, actions: Sequence[Action]) -> Rollout | None:
        """Write ``actions`` for ``rollout`` in one transaction and return the rollout as stored now. The state is
        checked against the row: if a concurrent operator command changed it, nothing is written (None)."""
        if not actions:
            return rollout
        now = self.clock()
        with self.Session.begin() as s, s.no_autoflush:
            self._fenced(s)
            row = s.get(RolloutRow, rollout.id, with_for_update=True)
            if row is None or row.state != rollout.state or row.stage != rollout.stage:
                return None  # an operator changed it meanwhile: plan again next tick
            rows = {a.device_id: a for a in self._assignments(s, rollout.id)}
            # every row the actions touch, read up front in a few IN queries (one query per device made a
            # 9,000-device stage take minutes), then written without autoflushing in between
            touched = [a.device_id for a in actions if isinstance(a, (AssignDevice, RevertDevice))]
            desired_rows = {r.device_id: r for chunk in _chunks(touched)
                            for r in s.scalars(select(DesiredRow).where(DesiredRow.device_id.in_(chunk)))}
            new_ids = [a.device_id for a in actions if isinstance(a, AssignDevice)]
            older_rows: dict[str, list[RolloutDeviceRow]] = {}
            for chunk in _chunks(new_ids):  # e.g. offline when an earlier rollout ended
                for older in s.scalars(select(RolloutDeviceRow).where(
                        RolloutDeviceRow.device_id.in_(chunk), RolloutDeviceRow.rollout_id != rollout.id,
                        RolloutDeviceRow.status == PENDING)):
                    older_rows.setdefault(older.device_id, []).append(older)
            assigned = []
            for act in actions:
                if isinstance(act, AssignDevice):
                    s.add(RolloutDeviceRow(rollout_id=rollout.id, device_id=act.device_id, stage=act.stage,
                                           assigned_at=now, previous=dict(act.previous) if act.previous else None,
                                           status=PENDING, status_at=None, reason=None))
                    self._set_desired(s, act.device_id, rollout.bundle.desired_model(), rollout.id, now,
                                      desired_rows)
                    for older in older_rows.get(act.device_id, ()):
                        older.status, older.status_at, older.reason = REPLACED, now, f"taken over by {rollout.id}"
                    assigned.append(act.device_id)
                elif isinstance(act, SetDeviceStatus):
                    r = rows.get(act.device_id)
                    if r is not None:
                        r.status, r.status_at, r.reason = act.status, act.at, act.reason
                        if act.status != REVERTED:
                            self._audit(s, rollout.id, now, "planner", f"device_{act.status}", None, None, r.stage,
                                        f"{act.device_id}: {act.status}" + (f" ({act.reason})" if act.reason else ""),
                                        {"device_id": act.device_id})
                elif isinstance(act, RevertDevice):
                    # a previous model without a download URL cannot be a desired state: clear it instead
                    prev = dict(act.previous) if act.previous and act.previous.get("url") else None
                    self._set_desired(s, act.device_id, prev, rollout.id, now, desired_rows)
                elif isinstance(act, FinishRevert):
                    row.reverted = True
                    self._audit(s, rollout.id, now, "engine", RolloutEvent.REVERT, row.state, row.state, row.stage,
                                f"republished the previous desired state to {act.devices} devices",
                                {"devices": act.devices})
                elif isinstance(act, StartSoak):
                    row.soak_started_at = now
                    stage = rollout.policy.stages[row.stage].describe()
                    self._audit(s, rollout.id, now, "planner", "soak", row.state, row.state, row.stage,
                                f"stage {row.stage + 1} ({stage}) reached its success threshold; soaking "
                                f"{row.policy.get('soak')}s", dict(act.numbers))
                elif isinstance(act, Decide):
                    self._state_change(s, row, act.event, "planner", act.reason, dict(act.numbers), now)
            if assigned:
                self._audit(s, rollout.id, now, "planner", "assign", row.state, row.state, rollout.stage,
                            f"stage {rollout.stage + 1} ({rollout.policy.stages[rollout.stage].describe()}): "
                            f"assigned {len(assigned)} "
                            f"device(s): {', '.join(assigned)}", {"devices": assigned})
            row.updated_at = now
        return self.get(rollout.id)

    @staticmethod
    def _set_desired(s: Session, device_id: str, model: dict[str, Any] | None, rollout_id: str, now: float,
                     rows: dict[str, DesiredRow] | None = None) -> None:
        """Set a device's desired state; ``rows`` holds the rows read up front (a missing key: no row yet)."""
        row = rows.get(device_id) if rows is not None else s.get(DesiredRow, device_id)
        if row is None:
            row = DesiredRow(device_id=device_id, model=model, rollout_id=rollout_id, updated_at=now, generation=1,
                             published_generation=0, published_at=None, publish_count=0)
            s.add(row)
            if rows is not None:
                rows[device_id] = row
        else:
            row.model, row.rollout_id, row.updated_at = model, rollout_id, now
            row.generation += 1

    def _state_change(self, s: Session, row: RolloutRow, event: str, actor: str, message: str,
                      numbers: dict[str, Any], now: float) -> None:
        before = row.state
        row.state = transition(row.state, event, row.id)
        if event in STAGE_EVENTS:
            row.stage += 1
            row.stage_started_at = now
            row.soak_started_at = None
        if event == RolloutEvent.RESUME:
            row.acknowledged_at = now
            row.soak_started_at = None
        if row.state in TERMINAL_STATES:
            row.finished_at = now
        row.updated_at = now
        self._audit(s, row.id, now, actor, event, before, row.state, row.stage, message, numbers)

    @staticmethod
    def _audit(s: Session, rollout_id: str, now: float, actor: str, event: str, from_state: str | None,
               to_state: str | None, stage: int | None, message: str, numbers: dict[str, Any]) -> None:
        s.add(AuditRow(rollout_id=rollout_id, ts=now, actor=actor, event=event, from_state=from_state,
                       to_state=to_state, stage=stage, message=message, numbers=numbers))

    def note(self, rollout_id: str, event: str, message: str, numbers: dict[str, Any] | None = None) -> None:
        """An audit entry that changes nothing (e.g. the engine starting on a rollout in progress)."""
        now = self.clock()
        with self.Session.begin() as s:
            self._fenced(s)
            row = s.get(RolloutRow, rollout_id)
            if row is not None:
                self._audit(s, rollout_id, now, "engine", event, row.state, row.state, row.stage, message,
                            numbers or {})

    # --- operator commands ---------------------------------------------------------------------------------------

    def command(self, rollout_id: str, event: str, message: str = "", actor: str = "operator") -> Rollout:
        """pause / resume / abort / approve, checked against the transition table and audited as ``actor``
        ("operator" from the CLI, "user:NAME" from the dashboard)."""
        now = self.clock()
        with self.Session.begin() as s:
            row = s.get(RolloutRow, rollout_id, with_for_update=True)
            if row is None:
                raise RolloutNotFoundError(f"no rollout {rollout_id!r}")
            self._state_change(s, row, event, actor, message or f"{actor}: {event}", {}, now)
        return self.get(rollout_id)

    # --- the desired-state outbox --------------------------------------------------------------------------------

    def unpublished(self) -> builtins.list[tuple[str, dict[str, Any] | None, str | None, int]]:
        """(device, model, rollout id, generation) of every desired state the broker has not acknowledged."""
        with self.Session() as s:
            rows = s.scalars(select(DesiredRow).where(DesiredRow.published_generation < DesiredRow.generation)
                             .order_by(DesiredRow.device_id))
            return [(r.device_id, r.model, r.rollout_id, r.generation) for r in rows]

    def mark_published(self, device_id: str, generation: int) -> None:
        self.mark_published_many([(device_id, generation)])

    def mark_published_many(self, acked: Sequence[tuple[str, int]]) -> None:
        """Record the broker's PUBACK of (device, generation) pairs, in one transaction."""
        if not acked:
            return
        now = self.clock()
        want = dict(acked)
        with self.Session.begin() as s:
            self._fenced(s)
            ids = list(want)
            for i in range(0, len(ids), 5000):
                for row in s.scalars(select(DesiredRow).where(DesiredRow.device_id.in_(ids[i:i + 5000]))):
                    if row.published_generation < want[row.device_id]:
                        row.published_generation = want[row.device_id]
                        row.published_at = now
                        row.publish_count += 1


#: Above this many ids, a read takes every row and keeps the wanted ones in Python: a bound parameter per id costs
#: more than the rows it saves, and databases cap the number of parameters (SQLite 32,766, PostgreSQL 65,535).
IN_LIMIT = 1000


def _where_in(query: Any, column: Any, ids: Sequence[str]) -> Any:
    """``query`` restricted to ``column IN ids``, or unrestricted for a long list (the caller filters rows by id)."""
    return query.where(column.in_(list(ids))) if len(ids) <= IN_LIMIT else query


def _chunks(ids: Sequence[str], size: int = 2000) -> Iterable[list[str]]:
    """Keep IN lists well below the database's bound-parameter limit."""
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def rollout_view(r: Rollout) -> dict[str, Any]:
    """A JSON-ready summary of a rollout (CLI views)."""
    from .policy import stage_sizes

    sizes = stage_sizes(r.policy.stages, len(r.devices))
    return {
        "id": r.id, "kind": r.kind, "state": r.state, "target": r.target,
        "bundle": {"name": r.bundle.name, "version": r.bundle.version, "sha256": r.bundle.sha256,
                   "url": r.bundle.url},
        "stage": r.stage, "stage_label": r.policy.stages[r.stage].label(),
        "stages": [s.label() for s in r.policy.stages],
        "stage_sizes": sizes, "devices": len(r.devices), "created_at": r.created_at,
        "soak_started_at": r.soak_started_at, "counts": summarize(r), "stage_counts": stage_counts(r, sizes),
        "policy": r.policy.to_dict(),
        "assignments": [{"device_id": a.device_id, "stage": a.stage, "status": a.status, "assigned_at": a.assigned_at,
                         "status_at": a.status_at, "reason": a.reason,
                         "previous_version": a.previous_version} for a in r.assignments.values()],
    }


def stage_counts(r: Rollout, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Per stage: its label, its cumulative size and how many of the devices assigned in it are in each status."""
    out = [{"stage": i, "label": st.label(), "size": sizes[i], **{k: 0 for k in STATUS_KEYS}}
           for i, st in enumerate(r.policy.stages)]
    for a in r.assignments.values():
        if 0 <= a.stage < len(out):
            out[a.stage][a.status] = out[a.stage].get(a.status, 0) + 1
    return out


STATUS_KEYS = ("committed", "pending", "failed", "timed_out", "reverted", "replaced")
