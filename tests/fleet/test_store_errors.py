"""Database errors leave every store as fleet errors: unreachable -> retryable StoreUnavailableError, a refused
row -> StoreConflictError; the rollout engine waits out an outage with one log line instead of a traceback a tick."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from fleet.errors import StoreConflictError, StoreError, StoreUnavailableError
from tests.support.procs import free_port


@pytest.fixture
def dead_pg():
    """An engine for a PostgreSQL url where nothing listens (connection refused)."""
    from fleet.db import make_engine

    engine = make_engine(f"postgresql+psycopg://edgekit@127.0.0.1:{free_port()}/fleet",
                         connect_args={"connect_timeout": 2})
    yield engine
    engine.dispose()


def _calls(engine):
    from fleet import store
    from fleet.registry import Registry
    from fleet.rollout.store import RolloutStore

    reg, rs = Registry(engine, "f"), RolloutStore(engine, "f")
    return {
        "registry.add": lambda: reg.add("d1"), "registry.list": reg.list, "registry.get": lambda: reg.get("d1"),
        "rollouts.needing_ticks": rs.needing_ticks, "rollouts.list": rs.list, "rollouts.unpublished": rs.unpublished,
        "rollouts.get": lambda: rs.get("r1"),
        "telemetry.series": lambda: store.series(engine, "d1", "cpu", 0.0),
        "telemetry.counts": lambda: store.counts(engine),
        "telemetry.latest_system": lambda: store.latest_system(engine),
    }


@pytest.mark.parametrize("name", ["registry.add", "registry.list", "registry.get", "rollouts.needing_ticks",
                                  "rollouts.list", "rollouts.unpublished", "rollouts.get", "telemetry.series",
                                  "telemetry.counts", "telemetry.latest_system"])
def test_an_unreachable_database_is_a_retryable_store_error(dead_pg, name):
    with pytest.raises(StoreUnavailableError) as e:
        _calls(dead_pg)[name]()
    err = e.value
    assert err.retryable and err.code == "store_unavailable" and err.exit_code == 1
    assert "unavailable" in err.message and "\n" not in err.one_line() and err.hint
    assert isinstance(err.__cause__, Exception) and type(err.__cause__).__module__.startswith("sqlalchemy")


def test_a_row_the_database_refuses_is_a_conflict(tmp_path):
    from fleet import store
    from fleet.setup import init_fleet

    engine = init_fleet(tmp_path / "fleet", fleet_id="t", tls_port=free_port(), artifacts_port=free_port()).engine()
    with pytest.raises(StoreConflictError) as e, engine.begin() as conn:
        store.write_batch(conn, telemetry=[{"device_id": None, "seq": 1, "ts": 1.0}])  # NOT NULL
    assert isinstance(e.value, StoreError) and not e.value.retryable and e.value.code == "store_conflict"


def test_the_cli_reports_an_unreachable_database_in_one_line(tmp_path):
    import subprocess
    import sys

    from fleet.setup import init_fleet

    init_fleet(tmp_path / "fleet", fleet_id="t", tls_port=free_port(), artifacts_port=free_port())
    url = f"postgresql+psycopg://edgekit@127.0.0.1:{free_port()}/fleet"
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(tmp_path / "fleet"),
                          "--db", url, "rollout", "list"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "database" in res.stderr


def test_engine_thread_waits_out_an_outage_with_one_warning(dead_pg, caplog):
    from fleet.rollout.engine import EngineThread, RolloutEngine
    from fleet.rollout.store import RolloutStore

    engine = RolloutEngine(RolloutStore(dead_pg, "f"), publisher=None)
    thread = EngineThread(engine, interval=0.02)
    with caplog.at_level(logging.INFO, logger="edgekit.fleet.rollout"):
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while engine.errors < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            thread.stop()
    assert engine.errors >= 10 and thread.outages == 1 and thread.outage_since is not None
    records = [r for r in caplog.records if r.name == "edgekit.fleet.rollout"]
    assert len(records) == 1 and "waiting for the database" in records[0].getMessage(), records
    assert records[0].exc_info is None  # no traceback
    assert not any(t.name == "rollout-engine" for t in threading.enumerate())
