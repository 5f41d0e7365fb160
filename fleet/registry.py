"""The device registry: provisioned devices, their tags and groups, and what their birth messages say.

A device enters the registry only through provisioning; a ``state`` message from any other id is refused
(:meth:`Registry.apply_state` returns False and the ingest counts it as unknown). Online/offline comes from ``state``
messages, including the Last Will.
"""

from __future__ import annotations

import builtins
import json
import time
from typing import Any, Iterable, NamedTuple

from sqlalchemy import Text, cast
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine

from edgekit.protocol import DeviceStatus, StateMessage, check_id

from .db import session_factory, store_boundary
from .errors import DeviceExistsError, UnknownDeviceError
from .models import Device, DeviceLatest
from .rows import clean_json, short_str
from .targets import Target, parse_target


class DeviceSummary(NamedTuple):
    """A device table's row: registry columns plus the newest CPU and temperature."""

    id: str
    online: bool
    model_name: str | None
    model_version: str | None
    last_seen: float | None
    update_state: str | None
    tags: dict[str, Any] | None
    groups: list[str] | None
    cpu: float | None
    temp: float | None


@store_boundary
class Registry:
    def __init__(self, engine: Engine, fleet: str):
        self.engine = engine
        self.fleet = fleet
        self.Session = session_factory(engine)

    # --- provisioning --------------------------------------------------------------------------------------------

    def add(self, device_id: str, *, tags: dict[str, Any] | None = None, groups: Iterable[str] = (),
            auth: str = "cert", replace: bool = False) -> Device:
        check_id(device_id, "device id")
        now = time.time()
        with self.Session.begin() as s:
            dev = s.get(Device, device_id)
            if dev is not None and dev.provisioned and dev.revoked_at is None and not replace:
                raise DeviceExistsError(device_id)
            if dev is None:
                dev = Device(id=device_id, fleet=self.fleet, tags={}, groups=[], capabilities={}, update={},
                             online=False)
                s.add(dev)
            dev.provisioned = True
            dev.provisioned_at = now
            dev.revoked_at = None
            dev.auth = auth
            dev.tags = dict(tags or {})
            dev.groups = sorted(set(groups))
        return self.get(device_id)

    def add_many(self, device_ids: Iterable[str], *, tags: dict[str, Any] | None = None, groups: Iterable[str] = (),
                 auth: str = "cert") -> int:
        """Provision many devices in one transaction (existing rows are re-provisioned); returns how many."""
        now = time.time()
        ids = [check_id(d, "device id") for d in device_ids]
        groups = sorted(set(groups))
        with self.Session.begin() as s:
            existing = {d.id: d for d in s.scalars(sa_select(Device).where(Device.id.in_(ids)))} if ids else {}
            for device_id in ids:
                dev = existing.get(device_id)
                if dev is None:
                    dev = Device(id=device_id, fleet=self.fleet, tags={}, groups=[], capabilities={}, update={},
                                 online=False)
                    s.add(dev)
                dev.provisioned, dev.provisioned_at, dev.revoked_at, dev.auth = True, now, None, auth
                dev.tags, dev.groups = dict(tags or {}), list(groups)
        return len(ids)

    def revoke(self, device_id: str) -> Device:
        with self.Session.begin() as s:
            dev = s.get(Device, device_id)
            if dev is None or not dev.provisioned:
                raise UnknownDeviceError(device_id)
            dev.provisioned = False
            dev.revoked_at = time.time()
            dev.online = False
        return self.get(device_id)

    def set_tags(self, device_id: str, tags: dict[str, Any] | None = None,
                 groups: Iterable[str] | None = None) -> Device:
        with self.Session.begin() as s:
            dev = s.get(Device, device_id)
            if dev is None:
                raise UnknownDeviceError(device_id)
            if tags is not None:
                dev.tags = {**(dev.tags or {}), **tags}
            if groups is not None:
                dev.groups = sorted(set(groups))
        return self.get(device_id)

    # --- queries -------------------------------------------------------------------------------------------------

    def provisioned(self, device_id: str) -> bool:
        with self.Session() as s:
            dev = s.get(Device, device_id)
            return bool(dev is not None and dev.provisioned)

    def provisioned_ids(self) -> set[str]:
        with self.Session() as s:
            return set(s.scalars(sa_select(Device.id).where(Device.provisioned.is_(True))))

    def get(self, device_id: str) -> Device:
        with self.Session() as s:
            dev = s.get(Device, device_id)
            if dev is None:
                raise UnknownDeviceError(device_id)
            return dev

    def list(self, *, include_revoked: bool = False) -> list[Device]:
        with self.Session() as s:
            q = sa_select(Device).order_by(Device.id)
            if not include_revoked:
                q = q.where(Device.provisioned.is_(True))
            return list(s.scalars(q))

    def summaries(self) -> builtins.list[Any]:  # (list: the method above)
        """The provisioned devices' view columns (id, online, model_name, model_version, last_seen, update_state,
        tags, groups) and their newest CPU and temperature (``cpu``, ``temp``, from ``device_latest``) as
        lightweight rows, ordered by id: what the device tables show, in one query, without loading whole objects
        or reading the telemetry. Equal tags/groups documents are decoded once and shared between rows."""
        d, lt = Device.__table__.c, DeviceLatest.__table__.c
        q = (sa_select(d.id, d.online, d.model_name, d.model_version, d.last_seen, d.update_state,
                       cast(d.tags, Text), cast(d.groups, Text), lt.cpu, lt.temp)
             .select_from(Device.__table__.outerjoin(DeviceLatest.__table__, lt.device_id == d.id))
             .where(d.provisioned.is_(True)).order_by(d.id))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        docs: dict[str | None, Any] = {None: None}
        out = []
        for (id_, online, model, version, seen, state, tags, groups, cpu, temp) in rows:
            if tags not in docs:
                docs[tags] = json.loads(tags)
            if groups not in docs:
                docs[groups] = json.loads(groups)
            out.append(DeviceSummary(id_, bool(online), model, version, seen, state, docs[tags], docs[groups], cpu,
                                     temp))
        return out

    def select(self, target: str | Target) -> builtins.list[Device]:  # (list: the method above)
        """Provisioned devices matching ``tag:k=v``, ``group:g``, ``devices:a,b`` (or ``all``)."""
        t = parse_target(target) if isinstance(target, str) else target
        return [d for d in self.list() if t.matches(d)]

    # --- birth messages ------------------------------------------------------------------------------------------

    def apply_state(self, msg: StateMessage, received: float | None = None) -> bool:
        """Record a device's state message; False (nothing written) if the device is not provisioned."""
        received = received or time.time()
        with self.Session.begin() as s:
            dev = s.get(Device, msg.device_id)
            if dev is None or not dev.provisioned:
                return False
            apply_state_to(dev, msg, received)
        return True


def apply_state_to(dev: Device, msg: StateMessage, received: float) -> None:
    """Pure update of a registry row from a state message (an older state never overwrites a newer one)."""
    dev.last_seen = max(dev.last_seen or 0.0, received)
    if dev.state_ts is not None and msg.ts < dev.state_ts:
        return
    dev.state_ts = msg.ts
    dev.online = msg.status == DeviceStatus.ONLINE
    if msg.status == DeviceStatus.OFFLINE and not msg.agent_version and not msg.model:
        return  # a bare Last Will: keep what the last birth message said
    if dev.registered_at is None:
        dev.registered_at = received
    dev.agent_version = short_str(msg.agent_version, 64) or dev.agent_version
    if msg.model:
        dev.model_name = short_str(msg.model.get("name"), 128)
        dev.model_version = short_str(msg.model.get("version"), 64)
        dev.model_sha256 = short_str(msg.model.get("sha256"), 64)
    dev.capabilities = clean_json({"runtime": msg.runtime or {}, "hardware": msg.hardware or {}})
    update = msg.update if isinstance(msg.update, dict) else {}
    dev.update = clean_json(update)
    dev.update_state = short_str(update.get("state"), 32)
