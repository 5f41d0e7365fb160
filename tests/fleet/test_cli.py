"""The fleet CLI end to end (subprocesses) and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.procs import free_port

from .conftest import REPO


def run(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", *map(str, args)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_init_broker_provision_revoke_from_the_command_line(tmp_path):
    d = tmp_path / "fleet"
    info = json.loads(run("--data-dir", d, "init", "--fleet-id", "lab", "--tls-port", free_port(),
                          "--password-port", free_port(), "--artifacts-port", free_port(), "--json").stdout)
    assert info["fleet"] == "lab" and (d / "keys/fleet.key").exists() and (d / "ca/ca.pem").exists()
    conf = run("--data-dir", d, "broker", "config").stdout
    for line in ("require_certificate true", "use_identity_as_username true", "autosave_interval 1",
                 "max_queued_messages 100000", "persistence true", "allow_anonymous false"):
        assert line in conf
    # a second init is refused and leaves the fleet intact
    res = run("--data-dir", d, "init", check=False)
    assert res.returncode != 0 and "already exists" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    st = json.loads(run("--data-dir", d, "broker", "start", "--json").stdout)
    try:
        assert st["running"] and json.loads(run("--data-dir", d, "broker", "status", "--json").stdout)["running"]
        res = json.loads(run("--data-dir", d, "provision", "cam-1", "--tag", "site=lab", "--group", "door",
                             "--json").stdout)
        pkg = res["package"]
        assert res["broker_reloaded"] and sorted(os.listdir(pkg)) == ["agent.toml", "ca.pem", "client.key",
                                                                       "client.pem", "fleet.pub"]
        # the package is a valid agent config (read by the agent's own loader)
        from device_agent.config import load_config

        cfg = load_config(os.path.join(pkg, "agent.toml"), environ={})
        assert cfg.device_id == "cam-1" and cfg.fleet == "lab" and cfg.mqtt.tls and cfg.mqtt.cert_file
        pw = json.loads(run("--data-dir", d, "provision", "cam-2", "--auth", "password", "--json").stdout)
        assert load_config(os.path.join(pw["package"], "agent.toml"), environ={}).mqtt.password_file
        assert "cam-2:$7$" in (d / "broker/passwd").read_text()
        res = run("--data-dir", d, "provision", "cam-1", check=False)
        assert res.returncode != 0 and "already provisioned" in res.stderr
        rows = json.loads(run("--data-dir", d, "devices", "--json").stdout)
        assert [(r["id"], r["online"]) for r in rows] == [("cam-1", False), ("cam-2", False)]
        run("--data-dir", d, "revoke", "cam-2")
        assert "cam-2" not in (d / "broker/passwd").read_text()
        assert [r["id"] for r in json.loads(run("--data-dir", d, "devices", "--json").stdout)] == ["cam-1"]
        res = run("--data-dir", d, "revoke", "cam-2", check=False)
        assert res.returncode != 0 and "not provisioned" in res.stderr
        assert json.loads(run("--data-dir", d, "retention", "--json").stdout) == {"telemetry": 0, "inference": 0}
    finally:
        assert "broker stopped" in run("--data-dir", d, "broker", "stop").stdout
    assert run("--data-dir", d, "broker", "status", check=False).returncode != 0
    assert "not running" in run("--data-dir", d, "broker", "stop").stdout


@pytest.mark.parametrize("args, words", [
    (["devices"], "no fleet at"),
    (["telemetry", "x", "--since", "soon"], "no fleet at"),
])
def test_errors_without_a_fleet_are_one_line(tmp_path, args, words):
    res = run("--data-dir", tmp_path / "none", *args, check=False)
    assert res.returncode != 0 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr


def test_bad_inputs_are_one_line_errors(fleet):
    d = fleet.ctx.data_dir
    for args, words in ((["provision", "bad id!"], "invalid device id"),
                        (["provision", "x", "--tag", "novalue"], "KEY=VALUE"),
                        (["provision", "y", "--auth", "password"], None),
                        (["telemetry", "ghost"], "not provisioned"),
                        (["device", "ghost"], "not provisioned"),
                        (["devices", "--target", "host:a"], "cannot read target"),
                        (["init"], "already exists")):
        res = run("--data-dir", d, *args, check=False)
        if words is None:
            assert res.returncode == 0, res.stderr  # this fleet has a password listener
            continue
        assert res.returncode != 0 and words in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    fleet.provision("t1")
    res = run("--data-dir", d, "telemetry", "t1", "--since", "soon", check=False)
    assert res.returncode != 0 and "duration" in res.stderr
    res = run("--data-dir", d, "telemetry", "t1", "--metric", "bogus", check=False)
    assert res.returncode != 0 and "unknown metric" in res.stderr
    # a corrupt config names the key
    cfg = d / "fleet.toml"
    good = cfg.read_text()
    cfg.write_text(good.replace("[broker]", "[broker]\ntls_prot = 1"))
    res = run("--data-dir", d, "devices", check=False)
    assert res.returncode != 0 and "broker.tls_prot" in res.stderr
    cfg.write_text(good)


def test_missing_mosquitto_names_the_debian_package(fleet, monkeypatch):
    from edgekit import servers
    from fleet import broker
    from fleet.errors import BrokerNotInstalled

    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    monkeypatch.setattr(servers.os.path, "exists", lambda p: False)
    with pytest.raises(BrokerNotInstalled) as exc:
        broker.find_mosquitto()
    assert "apt-get install mosquitto" in exc.value.one_line()


def test_password_hashes_are_mosquitto_compatible(tmp_path):
    """Our $7$ hash is accepted by mosquitto_passwd's own format (checked with the real tool when present)."""
    import shutil

    from fleet.broker_conf import check_password, hash_password, parse_passwd

    h = hash_password("s3cret")
    assert h.startswith("$7$101$") and check_password("s3cret", h) and not check_password("nope", h)
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    f = tmp_path / "pw"
    subprocess.run([tool, "-b", "-c", str(f), "u", "s3cret"], check=True, capture_output=True)
    theirs = parse_passwd(f.read_text())["u"]
    assert check_password("s3cret", theirs) and not check_password("x", theirs)
