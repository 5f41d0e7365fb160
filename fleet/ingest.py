"""The ingest core: validate device messages, route them, and write them to the store in batches.

``Ingest.handle(topic, payload)`` never raises: anything that is not a valid v1 message on a device topic of this
fleet is counted as ``malformed``; a valid message from a device that is not provisioned is counted as ``unknown``.
Both are logged (rate-limited). ``flush()`` writes everything pending in one transaction and returns how many
messages it committed; the MQTT side (:mod:`fleet.service`) acknowledges them only after that.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from edgekit.errors import ProtocolError
from edgekit.protocol import Channel, EventMessage, StateMessage, TelemetryMessage, Topic, decode

from .db import db_errors
from .errors import StoreError, StoreUnavailableError
from .models import Device
from .registry import apply_state_to
from .rows import event_row, telemetry_rows
from .store import write_batch

log = logging.getLogger("edgekit.fleet.ingest")

CHANNELS = (Channel.STATE, Channel.EVENTS, Channel.TELEMETRY)


@dataclass
class IngestStats:
    received: int = 0
    telemetry_messages: int = 0
    samples: int = 0
    events: int = 0
    states: int = 0
    malformed: int = 0
    unknown: int = 0
    ignored: int = 0
    batches: int = 0
    db_errors: int = 0
    by_reason: collections.Counter = field(default_factory=collections.Counter)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "by_reason"}
        d["by_reason"] = dict(self.by_reason)
        return d


class _RateLimitedLog:
    def __init__(self, every: float = 5.0):
        self.every = every
        self.last: dict[str, float] = {}
        self.suppressed: collections.Counter = collections.Counter()

    def warn(self, kind: str, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -1e9) >= self.every:
            extra = f" ({self.suppressed[kind]} similar suppressed)" if self.suppressed[kind] else ""
            log.warning(msg + extra, *args)
            self.last[kind] = now
            self.suppressed[kind] = 0
        else:
            self.suppressed[kind] += 1


def _finite_ts(ts) -> bool:
    import math

    return isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts) and abs(ts) < 1e11


class Ingest:
    """Routes decoded messages into pending buffers; ``flush()`` writes them. Thread-safe for one writer thread."""

    def __init__(self, engine: Engine, fleet: str, *, known_refresh: float = 2.0,
                 provisioned: Callable[[], set[str]] | None = None):
        self.engine = engine
        self.fleet = fleet
        self.stats = IngestStats()
        self._known: set[str] = set()
        self._known_at = -1e9
        self._known_refresh = known_refresh
        self._provisioned = provisioned or self._load_provisioned
        self._log = _RateLimitedLog()
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.telemetry: list[dict] = []
        self.inference: list[dict] = []
        self.events: list[dict] = []
        self.states: dict[str, tuple[StateMessage, float]] = {}
        self.last_seen: dict[str, float] = {}
        self.pending_messages = 0

    # --- registry cache ------------------------------------------------------------------------------------------

    def _load_provisioned(self) -> set[str]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return set(conn.scalars(select(Device.id).where(Device.provisioned.is_(True))))

    def is_known(self, device_id: str, force: bool = False) -> bool:
        """Is the device provisioned? Cached; a miss re-reads the registry at most every ``known_refresh`` seconds,
        or at once with ``force`` (birth messages: a device provisioned a moment ago must not be refused)."""
        if device_id in self._known:
            return True
        now = time.monotonic()
        if force or now - self._known_at >= self._known_refresh:
            try:
                self._known = self._provisioned()
            except SQLAlchemyError as exc:
                self._log.warn("db", "cannot read the registry: %s", exc)
            self._known_at = now
        return device_id in self._known

    # --- routing -------------------------------------------------------------------------------------------------

    def _malformed(self, reason: str, topic: str, detail: str) -> None:
        self.stats.malformed += 1
        self.stats.by_reason[reason] += 1
        self._log.warn("malformed", "malformed message on %r: %s", topic[:200], detail[:200])

    def handle(self, topic: str, payload: bytes, received: float | None = None) -> str:
        """Route one message; returns its outcome: queued, malformed, unknown or ignored. Never raises."""
        self.stats.received += 1
        try:
            return self._handle(topic, payload, received or time.time())
        except Exception as exc:  # noqa: BLE001 — the service must survive any payload
            self._malformed("unexpected", topic if isinstance(topic, str) else repr(topic), repr(exc))
            log.exception("unexpected error routing a message")
            return "malformed"

    def _handle(self, topic: str, payload: bytes, received: float) -> str:
        try:
            t = Topic.parse(topic)
        except ProtocolError as exc:
            self._malformed("topic", topic, exc.message)
            return "malformed"
        if t.fleet != self.fleet:
            self._malformed("fleet", topic, f"topic of fleet {t.fleet!r}, serving {self.fleet!r}")
            return "malformed"
        if t.channel not in CHANNELS:
            self.stats.ignored += 1
            return "ignored"
        try:
            msg = decode(t.channel, payload)
        except ProtocolError as exc:
            self._malformed(t.channel, topic, exc.message)
            return "malformed"
        if getattr(msg, "device_id", t.device_id) != t.device_id:
            self._malformed("device_id", topic, f"payload device_id {msg.device_id!r} does not match the topic")
            return "malformed"
        if not self.is_known(t.device_id, force=isinstance(msg, StateMessage)):
            self.stats.unknown += 1
            self.stats.by_reason["unknown_device"] += 1
            self._log.warn("unknown", "message from device %r which is not provisioned (%s)", t.device_id, t.channel)
            return "unknown"
        dev = t.device_id
        try:
            rows = telemetry_rows(msg, received) if isinstance(msg, TelemetryMessage) else None
            event = event_row(msg, received) if isinstance(msg, EventMessage) else None
            if isinstance(msg, StateMessage) and not _finite_ts(msg.ts):
                raise ProtocolError("state ts must be a finite number")
        except (ProtocolError, TypeError, ValueError, OverflowError) as exc:
            self._malformed(t.channel, topic, getattr(exc, "message", str(exc)))
            return "malformed"
        with self._lock:
            if rows is not None:
                system, inference = rows
                self.telemetry.extend(system)
                self.inference.extend(inference)
                self.stats.telemetry_messages += 1
                self.stats.samples += len(system)
                if msg.dropped:
                    self.stats.by_reason["device_dropped_samples"] += msg.dropped
            elif isinstance(msg, EventMessage):
                self.events.append(event)
                self.stats.events += 1
            elif isinstance(msg, StateMessage):
                prev = self.states.get(dev)
                if prev is None or prev[0].ts <= msg.ts:
                    self.states[dev] = (msg, received)
                self.stats.states += 1
            self.last_seen[dev] = max(received, self.last_seen.get(dev, 0.0))
            self.pending_messages += 1
        return "queued"

    # --- writing -------------------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything pending in one transaction; returns the number of messages committed.

        On a database error the batch stays pending (and the error is counted); the caller retries.
        """
        with self._lock:
            if not self.pending_messages:
                return 0
            telemetry, inference, events = self.telemetry, self.inference, self.events
            states, last_seen, n = self.states, self.last_seen, self.pending_messages
            self._reset()
        try:
            with db_errors("writing a batch"), self.engine.begin() as conn:
                write_batch(conn, telemetry=telemetry, inference=inference, events=events, last_seen=last_seen)
                if states:
                    self._apply_states(conn, states)
        except StoreUnavailableError as exc:  # database unreachable/locked: keep the batch, retry
            self.stats.db_errors += 1
            self._log.warn("db", "writing a batch of %d messages failed (kept for retry): %s", n, exc.message)
            with self._lock:  # put it back in front of anything that arrived meanwhile
                self.telemetry[:0], self.inference[:0], self.events[:0] = telemetry, inference, events
                for d, sm in states.items():
                    self.states.setdefault(d, sm)
                for d, s in last_seen.items():
                    self.last_seen[d] = max(s, self.last_seen.get(d, 0.0))
                self.pending_messages += n
            raise
        except (StoreError, SQLAlchemyError) as exc:  # a row the database refuses: isolate it, do not retry forever
            self._log.warn("db", "a batch was refused (%s); writing its rows one by one", getattr(exc, "message", exc))
            self._write_one_by_one(telemetry, inference, events, states, last_seen)
        self.stats.batches += 1
        return n

    def _write_one_by_one(self, telemetry, inference, events, states, last_seen) -> None:
        jobs = ([{"telemetry": [r]} for r in telemetry] + [{"inference": [r]} for r in inference]
                + [{"events": [r]} for r in events] + [{"last_seen": last_seen}])
        for job in jobs:
            try:
                with db_errors("writing a row"), self.engine.begin() as conn:
                    write_batch(conn, **job)
            except StoreUnavailableError:
                raise
            except (StoreError, SQLAlchemyError):
                self.stats.by_reason["db_rejected"] += 1
        for dev, sm in states.items():
            try:
                with db_errors("writing a device state"), self.engine.begin() as conn:
                    self._apply_states(conn, {dev: sm})
            except StoreUnavailableError:
                raise
            except (StoreError, SQLAlchemyError):
                self.stats.by_reason["db_rejected"] += 1

    def _apply_states(self, conn, states: dict[str, tuple[StateMessage, float]]) -> None:
        from sqlalchemy.orm import Session

        with Session(bind=conn) as s:
            for dev_id, (msg, received) in sorted(states.items(), key=lambda kv: kv[0]):  # lock order
                dev = s.get(Device, dev_id)
                if dev is not None and dev.provisioned:
                    apply_state_to(dev, msg, received)
            s.flush()
