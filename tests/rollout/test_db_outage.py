"""PostgreSQL stops under a running ``fleet serve`` and a running rollout, then starts again: the service keeps
going (no traceback a second), ingest catches up, and the rollout finishes on every device."""

from __future__ import annotations

import json

import pytest

from edgekit.bundle import read_bundle
from examples.localfleet import LocalFleet, wait_for
from fleet.rollout.service import create_rollout, open_store
from tests.support.procs import Postgres

from .conftest import make_bundles

pytestmark = pytest.mark.slow

AGENT_POLICY = {"EDGEKIT_AGENT__UPDATE__PROBATION_S": "2", "EDGEKIT_AGENT__UPDATE__SELF_TEST_RUNS": "5",
                "EDGEKIT_AGENT__UPDATE__CHECK_INTERVAL_S": "0.25",
                "EDGEKIT_AGENT__UPDATE__SELF_TEST_LATENCY": "false", "EDGEKIT_AGENT__UPDATE__LATENCY_SLACK_MS": "50"}
IDS = ["pg0", "pg1", "pg2"]


@pytest.fixture
def pg(tmp_path):
    """A PostgreSQL server of this test's own (the session one is shared and must not be stopped)."""
    server = Postgres(tmp_path / "pg").start()
    yield server
    server.stop()


def _stats(lf):
    try:
        return json.loads((lf.ctx.paths.run_dir / "serve-main.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _log(lf) -> str:
    return (lf.workdir / "logs" / "fleet-serve.log").read_text(errors="replace")


def test_postgres_restart_under_serve_and_a_running_rollout(tmp_path, pg, digits_fp32_tflite, digits_int8_tflite):
    lf = LocalFleet(tmp_path / "lf", fleet_id="pgo", telemetry_interval=0.5, agent_env=dict(AGENT_POLICY),
                    db_url=pg.url())
    try:
        lf.init()
        bundles = make_bundles(lf.ctx, tmp_path / "bundles", digits_fp32_tflite, digits_int8_tflite)
        lf.start_broker()
        lf.start_service()
        lf.add_devices(IDS, bundles["v1"])
        for d in IDS:
            lf.start_agent(d)
        lf.wait_api(IDS, timeout=90)
        lf.wait_online(IDS, timeout=60)
        store = open_store(lf.ctx)
        base = create_rollout(lf.ctx, store, bundles["v1"], "all", stages="100%", soak="0")
        wait_for(lambda: store.get(base.id).state == "completed", 60, "the v1 baseline rollout")

        v2 = read_bundle(bundles["v2"]).sha256
        r = create_rollout(lf.ctx, store, bundles["v2"], "all", stages="1,100%", soak="2s", device_timeout="5m")
        wait_for(lambda: len(store.get(r.id).assignments) >= 1 and not store.unpublished(), 30,
                 "the canary assigned and its desired state published")
        lf.ctx.engine().dispose()  # this process's own pooled connections die with the server anyway

        pg.stop_server()
        # the outage is seen by both halves of the service: ingest keeps its batches, the engine waits
        wait_for(lambda: _stats(lf).get("ingest", {}).get("db_errors", 0) > 0, 60, "ingest to hit the outage")
        wait_for(lambda: "rollout engine waiting for the database" in _log(lf), 30, "the engine to hit it")
        errors_during = _stats(lf)["ingest"]["db_errors"]
        assert lf.service.poll() is None, _log(lf)[-3000:]
        # the agents go on meanwhile: the canary installs v2 and reports it into an unreachable database
        wait_for(lambda: _any_agent_on(lf, v2), 90, "the canary to run v2 during the outage")

        pg.start_server()
        wait_for(lambda: store.get(r.id).state in ("completed", "paused", "aborted"), 180,
                 "the rollout to finish after the database came back")
        final = store.get(r.id)
        assert final.state == "completed", (final.state, store.audit(r.id)[-5:])
        assert {d.model_sha256 for d in lf.devices().values()} == {v2}
        assert lf.service.poll() is None
        log = _log(lf)
        assert "Traceback" not in log, log[-3000:]
        assert log.count("rollout engine waiting for the database") == 1
        assert "the database is back" in log
        assert errors_during >= 1 and _stats(lf)["ingest"]["db_errors"] >= errors_during
    finally:
        lf.close()


def _health(lf, d):
    from examples.localfleet import _get_json

    return _get_json(lf.agents[d].api + "/v1/health") or {}


def _any_agent_on(lf, sha):
    return any((_health(lf, d).get("model") or {}).get("sha256") == sha for d in IDS)

