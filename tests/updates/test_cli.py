"""``edgekit agent history`` / ``rollback`` through click's CliRunner (the root CLI, so errors are one line)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from device_agent.update.machine import Event, Reason
from device_agent.update.persist import Record, StateFile, advance
from edgekit.cli import cli

TARGET = {"name": "digits", "version": "2.0.0", "sha256": "b" * 64, "url": "http://x/b.ekb", "size": 10}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(f'device_id = "d1"\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def _write(config, events):
    sf = StateFile(config.parent / "data" / "update")
    rec = Record()
    for ev, kw in events:
        rec, t = advance(rec, ev, **kw)
        sf.save(rec)
        sf.append_history(t)
    return rec


def test_history_empty_and_filled(config):
    r = CliRunner().invoke(cli, ["agent", "history", "--config", str(config), "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = CliRunner().invoke(cli, ["agent", "history", "--config", str(config)])
    assert r.exit_code == 0 and "no updates yet" in r.output
    _write(config, [(Event.START, {"target": TARGET, "update_id": "u1", "rollout_id": "r1"}),
                    (Event.FAIL, {"reason": Reason.HASH_MISMATCH}), (Event.DONE, {})])
    r = CliRunner().invoke(cli, ["agent", "history", "--config", str(config), "--json"])
    items = json.loads(r.output)
    assert [(i["name"], i["reason"]) for i in items] == [("downloading", None), ("failed", "hash_mismatch"),
                                                         ("idle", None)]
    r = CliRunner().invoke(cli, ["agent", "history", "--config", str(config), "-n", "2"])
    assert r.exit_code == 0 and "hash_mismatch" in r.output and "downloading" not in r.output


def test_rollback_refuses_while_an_update_is_in_flight(config):
    _write(config, [(Event.START, {"target": TARGET, "update_id": "u1"})])
    r = CliRunner().invoke(cli, ["agent", "rollback", "--config", str(config)])
    assert r.exit_code == 1
    assert "an update is in DOWNLOADING" in r.output and len(r.output.strip().splitlines()) == 1


def test_rollback_without_a_previous_model(config):
    r = CliRunner().invoke(cli, ["agent", "rollback", "--config", str(config)])
    assert r.exit_code == 1 and "no previous model" in r.output
    assert StateFile(config.parent / "data" / "update").load().state == "IDLE"
    assert not (config.parent / "data" / "spool.sqlite").exists()  # nothing was written


def test_bad_config(tmp_path):
    r = CliRunner().invoke(cli, ["agent", "history", "--config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 1 and "does not exist" in r.output
