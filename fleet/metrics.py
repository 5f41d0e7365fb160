"""Prometheus metrics of a fleet service replica (``/metrics`` on its HTTP port), through ``prometheus_client``.

A custom collector reads everything at scrape time: the replica's own counters (:meth:`FleetService.stats`) and the
fleet's state through the same views the CLI uses (:func:`fleet.views.device_rows`, the rollout store). Label
cardinality stays bounded: model versions, update states, rejection reasons, and rollouts that are active or among
the newest finished ones. Per-device series only with ``per_device=True`` (small fleets).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from edgekit.extras import require

require("prometheus_client", "fleet")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: E402
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # noqa: E402

log = logging.getLogger("edgekit.fleet.metrics")

REJECT_REASONS_SKIPPED = ("device_dropped_samples",)  # counted on the device, not a rejection by the service
FINISHED_ROLLOUTS = 5  # newest finished rollouts still exported (active ones always are)


class FleetCollector:
    def __init__(self, ctx: Any, stats: Callable[[], dict[str, Any]], *, per_device: bool = False):
        self.ctx = ctx
        self.stats = stats
        self.per_device = per_device
        self._rollouts = None

    def _store(self):
        if self._rollouts is None:
            from .rollout.service import open_store

            self._rollouts = open_store(self.ctx)
        return self._rollouts

    def collect(self):
        yield from self._service(self.stats())
        try:
            fleet = list(self._fleet())
        except Exception as exc:  # noqa: BLE001 - the database may be down: keep serving the replica's own figures
            log.warning("fleet metrics unavailable: %s", exc)
            fleet = []
        yield from fleet
        yield _one(GaugeMetricFamily, "edgekit_store_up", "1 when the fleet store answered this scrape",
                   1 if fleet else 0)

    # --- the replica's own counters ------------------------------------------------------------------------------

    def _service(self, st: dict[str, Any]):
        ing, mqtt, http = st.get("ingest", {}), st.get("mqtt", {}), st.get("http", {})
        reasons = ing.get("by_reason") or {}
        yield _one(CounterMetricFamily, "edgekit_ingest_messages_received", "MQTT messages the ingest received",
                   ing.get("received", 0))
        yield _one(CounterMetricFamily, "edgekit_ingest_messages_stored", "messages committed to the fleet store",
                   st.get("stored", 0))
        c = CounterMetricFamily("edgekit_ingest_messages_rejected", "messages refused, by reason",
                                labels=["reason"])
        for reason, n in sorted(reasons.items()):
            if reason not in REJECT_REASONS_SKIPPED:
                c.add_metric([reason], n)
        if ing.get("ignored"):
            c.add_metric(["ignored_channel"], ing["ignored"])
        yield c
        for kind, name, doc, value in (
                (CounterMetricFamily, "edgekit_device_dropped_samples", "samples devices report they had to drop",
                 reasons.get("device_dropped_samples", 0)),
                (GaugeMetricFamily, "edgekit_ingest_lag_seconds",
                 "time from receiving a message to committing it, for the newest batch", st.get("lag_s", 0.0)),
                (GaugeMetricFamily, "edgekit_ingest_queue", "messages received and not yet written",
                 st.get("queue", 0)),
                (GaugeMetricFamily, "edgekit_broker_connected", "1 while the service is connected to the broker",
                 1 if mqtt.get("connected") else 0),
                (CounterMetricFamily, "edgekit_broker_connects", "connections made to the broker",
                 mqtt.get("connects", 0)),
                (CounterMetricFamily, "edgekit_broker_disconnects", "connections to the broker lost",
                 mqtt.get("disconnects", 0)),
                (CounterMetricFamily, "edgekit_artifact_downloads", "bundle downloads served (GET, 200 or 206)",
                 http.get("downloads", 0)),
                (CounterMetricFamily, "edgekit_artifact_bytes", "bundle bytes sent", http.get("bytes_sent", 0))):
            yield _one(kind, name, doc, value)

    # --- the fleet's state ---------------------------------------------------------------------------------------

    def _fleet(self):
        from .rollout.model import ACTIVE_STATES
        from .rollout.store import stage_counts, STATUS_KEYS
        from .rollout.policy import stage_sizes
        from .views import device_rows

        now = time.time()
        # the 5-minute p95 window only when per-device series need it (the fleet gauges only count)
        rows = device_rows(self.ctx.engine(), self.ctx.fleet_id, now, p95=self.per_device)
        online = sum(1 for r in rows if r["online"])
        yield _one(GaugeMetricFamily, "edgekit_devices_online", "provisioned devices online", online)
        g = GaugeMetricFamily("edgekit_devices", "provisioned devices", labels=["status"])
        g.add_metric(["online"], online)
        g.add_metric(["offline"], len(rows) - online)
        yield g
        by_model: dict[tuple[str, str], int] = {}
        by_state: dict[str, int] = {}
        for r in rows:
            k = (r["model"] or "", r["version"] or "")
            by_model[k] = by_model.get(k, 0) + 1
            by_state[r["update_state"] or "unknown"] = by_state.get(r["update_state"] or "unknown", 0) + 1
        g = GaugeMetricFamily("edgekit_devices_by_model", "devices per running model version",
                              labels=["model", "version"])
        for (m, v), n in sorted(by_model.items()):
            g.add_metric([m, v], n)
        yield g
        g = GaugeMetricFamily("edgekit_devices_by_update_state", "devices per update state", labels=["state"])
        for s, n in sorted(by_state.items()):
            g.add_metric([s], n)
        yield g

        rollouts = self._store().list()
        active = [r for r in rollouts if r.state in ACTIVE_STATES]
        finished = [r for r in rollouts if r.state not in ACTIVE_STATES][-FINISHED_ROLLOUTS:]
        state_g = GaugeMetricFamily("edgekit_rollout_state", "1 for the state each rollout is in",
                                    labels=["rollout", "state"])
        stage_g = GaugeMetricFamily("edgekit_rollout_stage", "current stage of each rollout (1-based)",
                                    labels=["rollout"])
        dev_g = GaugeMetricFamily("edgekit_rollout_stage_devices", "devices of a rollout stage, by status",
                                  labels=["rollout", "stage", "status"])
        for r in finished + active:
            state_g.add_metric([r.id, r.state], 1)
            stage_g.add_metric([r.id], r.stage + 1)
            for sc in stage_counts(r, stage_sizes(r.policy.stages, len(r.devices))):
                for status in STATUS_KEYS:
                    dev_g.add_metric([r.id, str(sc["stage"] + 1), status], sc[status])
        yield state_g
        yield stage_g
        yield dev_g
        yield _one(GaugeMetricFamily, "edgekit_rollouts_active", "rollouts running, paused or awaiting approval",
                   len(active))

        if self.per_device:
            on = GaugeMetricFamily("edgekit_device_online", "1 while the device is online", labels=["device"])
            seen = GaugeMetricFamily("edgekit_device_last_seen_timestamp_seconds", "last message from the device",
                                     labels=["device"])
            cpu = GaugeMetricFamily("edgekit_device_cpu_percent", "newest CPU sample", labels=["device"])
            temp = GaugeMetricFamily("edgekit_device_temperature_celsius", "newest temperature", labels=["device"])
            p95 = GaugeMetricFamily("edgekit_device_p95_ms", "p95 latency of the current model over 5 minutes",
                                    labels=["device"])
            for r in rows:
                on.add_metric([r["id"]], 1 if r["online"] else 0)
                for fam, key in ((seen, "last_seen"), (cpu, "cpu"), (temp, "temp"), (p95, "p95_ms")):
                    if r[key] is not None:
                        fam.add_metric([r["id"]], r[key])
            yield from (on, seen, cpu, temp, p95)


def _one(kind, name: str, doc: str, value: float):
    """A metric family with one unlabelled sample."""
    fam = kind(name, doc)
    fam.add_metric([], value)
    return fam


class Metrics:
    """A registry holding one :class:`FleetCollector`; ``render()`` is the body of ``/metrics``."""

    content_type = CONTENT_TYPE_PLAIN_0_0_4  # the classic text format every Prometheus 2.x reads

    def __init__(self, ctx: Any, stats: Callable[[], dict[str, Any]], *, per_device: bool = False):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(ctx, stats, per_device=per_device))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), self.content_type
