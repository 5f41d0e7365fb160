"""Ingest against the real broker (generated config) and real SQLite/PostgreSQL stores."""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from edgekit.protocol import StateMessage, TelemetryMessage, Topic

from .conftest import spawn, wait_for


def _count(engine, model) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(model)).scalar_one()


def test_service_stores_telemetry_events_and_registry(fleet_db, tmp_path):
    from fleet.link import FleetLink
    from fleet.models import DeviceEvent, InferenceSample, TelemetrySample
    from fleet.registry import Registry
    from fleet.service import FleetService, ServiceOptions

    f = fleet_db
    pkgs = [f.provision(d, tags={"site": "lab"}).package for d in ("d1", "d2")]
    svc = FleetService(f.ctx, ServiceOptions(replica="t", http_port=0)).start(wait_connected=10)
    try:
        procs = [spawn(["-m", "tests.fleet.devsim", str(p), "--messages", "30", "--samples", "2", "--events", "3",
                        "--stay", "0.5"]) for p in pkgs]
        # while they run: the registry shows them online with their birth message
        reg = Registry(svc.engine, f.ctx.fleet_id)
        wait_for(lambda: all(reg.get(d).online for d in ("d1", "d2")), what="devices online")
        d1 = reg.get("d1")
        assert (d1.model_name, d1.model_version, d1.agent_version) == ("digits", "1.0.0", "sim")
        assert d1.capabilities["hardware"]["cores"] == 2 and d1.update_state == "IDLE"
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            assert json.loads(out.splitlines()[-1])["samples"] == 60
        wait_for(lambda: _count(svc.engine, TelemetrySample) == 120 and _count(svc.engine, DeviceEvent) == 6,
                 what="all samples stored")
        assert _count(svc.engine, InferenceSample) == 120
        wait_for(lambda: not reg.get("d1").online, what="offline state applied")
        # a message from a device that is not provisioned is counted, not stored
        link = FleetLink.from_context(f.ctx).connect()
        try:
            link.publish(str(Topic(f.ctx.fleet_id, "ghost", "telemetry")),
                         TelemetryMessage("ghost", [{"seq": 0, "ts": time.time()}]).encode())
            link.publish(str(Topic(f.ctx.fleet_id, "ghost", "state")), StateMessage("ghost", "online").encode())
            link.publish(str(Topic(f.ctx.fleet_id, "d1", "telemetry")), b"{not json")
        finally:
            link.close()
        wait_for(lambda: svc.ingest.stats.unknown == 2 and svc.ingest.stats.malformed == 1, what="counters")
        assert _count(svc.engine, TelemetrySample) == 120
        import pytest

        from fleet.errors import UnknownDeviceError

        with pytest.raises(UnknownDeviceError):
            reg.get("ghost")
    finally:
        svc.stop()
    stats = json.loads(svc.statsfile.read_text())
    assert stats["ingest"]["samples"] == 120 and stats["ingest"]["unknown"] == 2


def test_duplicate_delivery_is_stored_once(fleet):
    """The same QoS 1 message delivered twice (e.g. redelivered after a reconnect) is one row."""
    from fleet.ingest import Ingest
    from fleet.models import TelemetrySample

    fleet.provision("dup")
    ing = Ingest(fleet.engine(), fleet.ctx.fleet_id)
    payload = TelemetryMessage("dup", [{"seq": 1, "ts": 1000.0, "system": {"cpu_percent": 5}}]).encode()
    topic = str(Topic(fleet.ctx.fleet_id, "dup", "telemetry"))
    assert ing.handle(topic, payload) == "queued"
    assert ing.flush() == 1
    assert ing.handle(topic, payload) == "queued"
    assert ing.flush() == 1
    assert _count(fleet.engine(), TelemetrySample) == 1


def test_birth_message_right_after_provisioning_is_accepted(fleet):
    """The provisioned-devices cache never refuses the birth message of a device provisioned a moment ago."""
    from fleet.ingest import Ingest
    from fleet.registry import Registry

    ing = Ingest(fleet.engine(), fleet.ctx.fleet_id, known_refresh=3600)
    topic = lambda d, ch: str(Topic(fleet.ctx.fleet_id, d, ch))  # noqa: E731
    assert ing.handle(topic("late", "state"), StateMessage("late", "online").encode()) == "unknown"
    fleet.provision("late")
    assert ing.handle(topic("late", "state"), StateMessage("late", "online").encode()) == "queued"
    ing.flush()
    assert Registry(fleet.engine(), fleet.ctx.fleet_id).get("late").online
