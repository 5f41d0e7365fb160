"""``edgekit fleet serve``: the ingest service and artifact server of one fleet replica.

- MQTT 5 via :class:`~fleet.link.FleetLink` as the fleet service, with its own persistent session
  (``clean_start=False`` + session expiry) and normal subscriptions to ``telemetry``, ``events`` and ``state``:
  what is published while the service or the broker is down (even a broker ``kill -9`` and restart) is queued for
  it and delivered on reconnect. Several replicas each receive and write every message; the store's unique keys
  keep one row of each. With ``share_telemetry`` telemetry goes through ``$share/edgekit-fleet/…`` instead
  (replicas split it), which Mosquitto 2.0 does not queue across a broker restart (docs/fleet.md).
- The rollout engine runs in the replica that holds the engine lease (:mod:`fleet.lease_store`), fenced by its
  epoch; every replica started with ``rollouts`` takes part.
- Manual acknowledgement: a message is PUBACKed only after the batch holding it is committed, so a crash of the
  service loses nothing; the broker redelivers and the store's unique keys drop the duplicate.
- Retention runs periodically; counters are written to ``run/serve-<replica>.json`` and served at ``/stats``;
  Prometheus metrics (:mod:`fleet.metrics`) at ``/metrics`` on the same port.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from edgekit.fsutil import atomic_write
from edgekit.protocol import Channel, fleet_filter

from .artifacts import ArtifactServer
from .service_options import ServiceOptions
from .config import FleetContext
from .db import make_engine, upgrade
from .errors import FleetError, StoreUnavailableError
from .ingest import Ingest
from .link import FleetLink
from .retention import apply_retention

if TYPE_CHECKING:
    from .lease_store import LeaseKeeper

log = logging.getLogger("edgekit.fleet.service")


class FleetService:
    def __init__(self, ctx: FleetContext, opts: ServiceOptions | None = None):
        self.ctx = ctx
        self.opts = opts or ServiceOptions()
        self.engine = make_engine(ctx.db_url)
        self.ingest = Ingest(self.engine, ctx.fleet_id)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._gen = 0
        self._ack_lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.http: ArtifactServer | None = None
        self.link: FleetLink | None = None
        self.rollouts = None  # fleet.rollout.outbox.EngineWithOutbox
        self.lease: LeaseKeeper | None = None  # the engine lease, when this replica takes part
        self.started = time.time()
        self.acked = 0
        self.stored = 0      # messages committed by the writer
        self.lag_s = 0.0     # receive -> commit of the oldest message of the newest batch
        self._stats_dirty = True
        self.pidfile = ctx.paths.serve_pid(self.opts.replica)
        self.statsfile = ctx.paths.serve_stats(self.opts.replica)

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self, wait_connected: float = 0.0) -> "FleetService":
        self._take_pidfile()
        upgrade(self.engine)
        if self.opts.http:
            port = self.ctx.config.artifacts.port if self.opts.http_port is None else self.opts.http_port
            try:
                self.http = ArtifactServer(self.ctx.paths.artifacts, self.ctx.config.artifacts.host, port,
                                           stats=self.stats, metrics=self._metrics(),
                                           max_downloads=self.ctx.config.artifacts.max_downloads).start()
            except OSError as exc:
                self.pidfile.unlink(missing_ok=True)
                raise FleetError(f"cannot serve artifacts on port {port}: {exc.strerror}",
                                 hint="pass --http-port or change artifacts.port in fleet.toml") from exc
        fleet = self.ctx.fleet_id
        subs = [(fleet_filter(fleet, Channel.TELEMETRY, shared=self.opts.share_telemetry), 1),
                (fleet_filter(fleet, Channel.EVENTS), 1), (fleet_filter(fleet, Channel.STATE), 1)]
        self.link = FleetLink.from_context(
            self.ctx, client_id=f"edgekit-fleet-{fleet}-{self.opts.replica}", clean_start=False,
            session_expiry=self.opts.session_expiry, subscriptions=subs, on_mqtt_message=self._on_message,
            on_connect=self._on_connect, manual_ack=True, receive_maximum=self.opts.receive_maximum)
        self._worker = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._worker.start()
        self.link.connect(timeout=wait_connected or 10.0, wait=bool(wait_connected))
        if self.opts.rollouts:
            from .lease_store import LeaseKeeper, LeaseStore, holder_id
            from .rollout.service import start_engine

            self.lease = LeaseKeeper(LeaseStore(self.engine), holder_id(self.opts.replica),
                                     self.opts.lease_seconds).start()
            self.rollouts = start_engine(self.ctx, self.link, self.opts.rollout_interval, lease=self.lease)
        return self

    def _metrics(self):
        if not self.opts.metrics:
            return None
        from .metrics import Metrics

        return Metrics(self.ctx, self.stats, per_device=self.opts.metrics_per_device).render

    def stop(self) -> None:
        self._stop.set()
        if self.rollouts:
            self.rollouts.stop()
        if self.lease:
            self.lease.stop(release=True)  # a clean stop hands the engine over at once, not after the lease time
        if self._worker:
            self._worker.join(30)
        if self.link:
            self.link.close()
        if self.http:
            self.http.stop()
        self._write_stats()
        self.pidfile.unlink(missing_ok=True)
        self.engine.dispose()

    def _take_pidfile(self) -> None:
        self.ctx.paths.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
            if pid != os.getpid():
                raise FleetError(f"replica {self.opts.replica!r} already runs (pid {pid})",
                                 hint="stop it first or start this one with another --replica name")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        atomic_write(self.pidfile, f"{os.getpid()}\n".encode())

    # --- MQTT side (paho's network thread) -----------------------------------------------------------------------

    def _on_connect(self) -> None:
        with self._ack_lock:
            self._gen += 1
        self._stats_dirty = True

    def _on_message(self, message) -> None:
        self.queue.put((message.topic, message.payload, message.mid, message.qos, self._gen, time.time()))

    # --- writer thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        to_ack: list[tuple[int, int, int]] = []
        first_pending = None
        last_stats = time.monotonic()
        # the first retention pass runs a minute after start, then every retention_interval
        last_retention = last_stats - self.opts.retention_interval + min(60.0, self.opts.retention_interval)
        backoff = 0.1
        while True:
            stopping = self._stop.is_set()
            try:
                item = self.queue.get(timeout=0.05)
            except queue.Empty:
                item = None
            n = 0
            while item is not None:
                topic, payload, mid, qos, gen, received = item
                self.ingest.handle(topic, payload, received)
                if qos:
                    to_ack.append((mid, qos, gen))
                if first_pending is None:
                    first_pending = time.monotonic()
                    oldest_received = received
                n += 1
                if n >= self.opts.batch_size:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    item = None
            now = time.monotonic()
            due = first_pending is not None and (len(to_ack) >= self.opts.batch_size or stopping
                                                 or now - first_pending >= self.opts.flush_interval
                                                 or self.queue.empty())
            if due:
                try:
                    self.stored += self.ingest.flush()
                    self.lag_s = max(0.0, time.time() - oldest_received)
                except (StoreUnavailableError, SQLAlchemyError):
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    if stopping:
                        break
                else:  # while the database is away the batch stays pending; the stats below still go out
                    backoff = 0.1
                    self._ack(to_ack)
                    to_ack = []
                    first_pending = None
            if now - last_stats >= self.opts.stats_interval or self._stats_dirty:
                self._stats_dirty = False
                self._write_stats()
                last_stats = now
            if now - last_retention >= self.opts.retention_interval:
                self._retention()
                last_retention = now
            if stopping and self.queue.empty() and first_pending is None:
                break

    def _ack(self, to_ack: list[tuple[int, int, int]]) -> None:
        if not to_ack or self.link is None:
            return
        with self._ack_lock:
            for mid, qos, gen in to_ack:
                if gen == self._gen:  # a message of an earlier connection is redelivered by the broker instead
                    self.link.client.ack(mid, qos)
                    self.acked += 1

    def _retention(self) -> None:
        r = self.ctx.config.retention
        try:
            apply_retention(self.engine, time.time(), r.raw_days, r.bucket_seconds)
        except SQLAlchemyError as exc:
            log.warning("retention failed: %s", exc)

    # --- stats ---------------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        link = self.link
        return {"replica": self.opts.replica, "fleet": self.ctx.fleet_id, "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 1), "ingest": self.ingest.stats.to_dict(),
                "acked": self.acked, "stored": self.stored, "lag_s": round(self.lag_s, 4),
                "queue": self.queue.qsize(), "rollouts": self.opts.rollouts,
                "lease": self.lease.status() if self.lease else None,
                "engine": self.rollouts.engine.tick_stats() if self.rollouts else None,
                "outbox": self.rollouts.outbox_stats() if self.rollouts else None,
                "mqtt": {"connected": bool(link and link.connected.is_set()), "connects": link.connects if link else 0,
                         "disconnects": link.disconnects if link else 0},
                "http": {"url": self.http.url if self.http else None,
                         "requests": len(self.http.requests) if self.http else 0,
                         "downloads": self.http.downloads if self.http else 0,
                         "bytes_sent": self.http.bytes_sent if self.http else 0,
                         "artifacts": self.http.counters() if self.http else {}}}

    def _write_stats(self) -> None:
        try:
            atomic_write(self.statsfile, json.dumps(self.stats(), indent=1, sort_keys=True).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.statsfile, exc)
