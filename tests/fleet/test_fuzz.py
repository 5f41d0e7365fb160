"""Malformed payloads, fuzzed with hypothesis, never crash the ingest and are counted."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.protocol import TelemetryMessage, Topic

from .conftest import wait_for

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

FIELDS = ["v", "device_id", "samples", "seq", "ts", "status", "event", "model", "dropped", "system", "inference"]


@st.composite
def mutated(draw):
    """A valid message with some fields replaced by arbitrary JSON (often still an object with v=1)."""
    base = json.loads(TelemetryMessage("fz", [{"seq": 1, "ts": 1.0, "system": {"cpu_percent": 1},
                                                "inference": {"1": {"count": 1, "p95_ms": 2}}}]).encode())
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        base[key] = draw(json_values)
    if draw(st.booleans()) and isinstance(base.get("samples"), list) and base["samples"]:
        s = base["samples"][0]
        if isinstance(s, dict):
            s[draw(st.sampled_from(["seq", "ts", "system", "inference"]))] = draw(json_values)
    return json.dumps(base, allow_nan=True).encode()


payloads = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()) | mutated()
channels = st.sampled_from(["telemetry", "events", "state", "cmd/reply", "desired", "bogus"])


@pytest.fixture
def ingest(fleet):
    from fleet.ingest import Ingest

    fleet.provision("fz")
    return Ingest(fleet.engine(), fleet.ctx.fleet_id)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channel=channels, payload=payloads, device=st.sampled_from(["fz", "ghost", "fz/../x", ""]))
def test_fuzzed_messages_never_raise_and_are_counted(ingest, channel, payload, device):
    topic = f"edgekit/v1/{ingest.fleet}/devices/{device}/{channel}"
    before = ingest.stats.to_dict()
    outcome = ingest.handle(topic, payload)
    after = ingest.stats.to_dict()
    assert outcome in ("queued", "malformed", "unknown", "ignored")
    # exactly one counter moved for this message, and it is the one the outcome names
    moved = {k for k in ("malformed", "unknown", "ignored") if after[k] != before[k]}
    if outcome == "queued":
        assert not moved
    else:
        assert moved == {outcome}
    ingest.flush()  # whatever was accepted is writable


def test_fuzzed_payloads_through_the_broker_are_counted(fleet):
    """The running service gets N malformed payloads over MQTT: it counts N and still stores valid data."""
    from fleet.link import FleetLink
    from fleet.models import TelemetrySample
    from fleet.service import FleetService, ServiceOptions
    from sqlalchemy import func, select

    fleet.provision("fz")
    bad = []

    @settings(max_examples=150, deadline=None, database=None)
    @given(payload=payloads)
    def collect(payload):
        from edgekit.errors import ProtocolError
        from edgekit.protocol import decode

        try:
            decode("telemetry", payload)
        except ProtocolError:
            bad.append(payload)

    collect()
    assert len(bad) > 50
    svc = FleetService(fleet.ctx, ServiceOptions(replica="fz", http=False)).start(wait_connected=10)
    link = FleetLink.from_context(fleet.ctx).connect()
    try:
        topic = str(Topic(fleet.ctx.fleet_id, "fz", "telemetry"))
        for p in bad:
            link.publish(topic, p)
        link.publish(topic, TelemetryMessage("fz", [{"seq": 7, "ts": time.time()}]).encode())
        wait_for(lambda: svc.ingest.stats.malformed == len(bad) and svc.ingest.stats.samples == 1,
                 what="all fuzzed payloads counted")
        wait_for(lambda: svc.ingest.stats.batches >= 1)
        with svc.engine.connect() as c:
            wait_for(lambda: c.execute(select(func.count()).select_from(TelemetrySample)).scalar_one() == 1)
        assert svc._worker.is_alive()
    finally:
        link.close()
        svc.stop()


HOSTILE = [
    # valid per the protocol, but values a column cannot hold as-is
    ("telemetry", {"device_id": "fz", "samples": [{"seq": 2**70, "ts": 1.0}]}),
    ("telemetry", {"device_id": "fz", "samples": [{"seq": 1, "ts": 1e300}]}),
    ("telemetry", {"device_id": "fz", "samples": [{"seq": 2, "ts": 5.0, "system": {"x": float("nan"), "y": 2**80},
                                                   "inference": {"v" * 300: {"count": 2**70, "p95_ms": "slow"}}}]}),
    ("events", {"device_id": "fz", "seq": 3, "event": "e" * 500, "reason": {"not": "a string"},
                "from_state": 12, "detail": {"nan": float("inf")}}),
    ("state", {"device_id": "fz", "status": "online", "agent_version": 7, "update": ["not", "a", "dict"],
               "model": {"name": "n" * 400, "version": "1", "sha256": "s"}, "hardware": {"t": float("nan")}}),
    ("state", {"device_id": "fz", "status": "online", "ts": "yesterday"}),
]


def test_hostile_values_never_poison_a_batch(fleet_db):
    """Each store (SQLite and PostgreSQL) takes or refuses these per message; the next valid batch is written."""
    from fleet.ingest import Ingest
    from fleet.models import TelemetrySample
    from sqlalchemy import select

    fleet_db.provision("fz")
    ing = Ingest(fleet_db.engine(), fleet_db.ctx.fleet_id)
    for channel, body in HOSTILE:
        body = {**body, "v": 1}
        ing.handle(f"edgekit/v1/{ing.fleet}/devices/fz/{channel}", json.dumps(body).encode())
    ing.flush()
    ing.handle(f"edgekit/v1/{ing.fleet}/devices/fz/telemetry",
               TelemetryMessage("fz", [{"seq": 99, "ts": time.time()}]).encode())
    assert ing.flush() == 1
    with ing.engine.connect() as c:
        seqs = set(c.execute(select(TelemetrySample.seq)).scalars())
    assert 99 in seqs and 2**70 not in seqs
    assert ing.stats.malformed >= 3  # out-of-range seq, implausible ts, non-numeric state ts
    assert ing.stats.by_reason.get("db_rejected", 0) == 0  # cleaned before the database saw it
