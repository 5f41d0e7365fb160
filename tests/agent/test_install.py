"""``edgekit agent install/uninstall/run/status/infer`` end to end: unit verified by systemd-analyze, config loads,
bad configs and bad bundles fail with one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ExitCode
from edgekit.keys import generate_keypair
from tests.support.procs import free_port

from .conftest import REPO, AgentProcess, write_config

EDGEKIT = str(Path(sys.executable).parent / "edgekit")


def _edgekit(*args, env=None, timeout=60):
    return subprocess.run([EDGEKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})), cwd=str(REPO))


def _verify_unit(unit: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    res = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Unknown" not in res.stderr and "ignoring" not in res.stderr, res.stderr


def test_install_into_a_root_gives_a_verified_unit_and_a_runnable_config(tmp_path, bundles, mosquitto):
    root = tmp_path / "root"
    port = free_port()
    res = _edgekit("agent", "install", "--root", root, "--device-id", "pi-7", "--fleet", "f1", "--fleet-key",
                   bundles["pub"], "--mqtt-host", mosquitto.host, "--mqtt-port", mosquitto.port,
                   "--api-port", port, "--bundle", bundles["int8"], "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    unit = root / "etc/systemd/system/edgekit-agent.service"
    assert out["unit"] == str(unit) and (root / "var/lib/edgekit-agent/store").is_dir()
    text = unit.read_text()
    for line in ("User=edgekit-agent", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 f"ReadWritePaths={root}/var/lib/edgekit-agent",
                 f"ExecStart={os.path.realpath(EDGEKIT)} agent run --config {root}/etc/edgekit/agent.toml"):
        assert line in text.splitlines(), line
    _verify_unit(unit)
    cfg = root / "etc/edgekit/agent.toml"
    assert oct(cfg.stat().st_mode & 0o777) == "0o640"
    # a second install refuses to overwrite
    again = _edgekit("agent", "install", "--root", root, "--device-id", "pi-7", "--fleet-key", bundles["pub"])
    assert again.returncode != 0 and "already exists" in again.stderr and "--force" in again.stderr
    # `agent run` (as the unit would start it) loads that config and serves
    agent = AgentProcess(cfg)
    try:
        agent.start()
        health = agent.client().health()
        assert health["device_id"] == "pi-7" and health["status"] == "ok"
        st = _edgekit("agent", "status", "--config", cfg, "--json")
        assert st.returncode == 0 and json.loads(st.stdout)["device_id"] == "pi-7"
        x = tmp_path / "x.npy"
        np.save(x, np.zeros((1, 8, 8, 1), np.int8))
        inf = _edgekit("agent", "infer", x, "--config", cfg, "--json")
        assert inf.returncode == 0, inf.stderr
        assert np.asarray(json.loads(inf.stdout)["outputs"][0]["data"]).shape == (1, 10)
        np.save(x, np.zeros((1, 8, 8, 1), np.float32))
        bad = _edgekit("agent", "infer", x, "--config", cfg)
        assert bad.returncode != 0 and "dtype float32" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    finally:
        agent.stop()
    un = _edgekit("agent", "uninstall", "--root", root, "--purge")
    assert un.returncode == 0, un.stderr
    assert not unit.exists() and not cfg.exists() and not (root / "var/lib/edgekit-agent").exists()


@pytest.mark.parametrize("as_tar", [False, True])
def test_install_from_a_device_package(tmp_path, bundles, as_tar):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy(bundles["pub"], pkg / "fleet.pub")
    (pkg / "ca.pem").write_text("ca")
    (pkg / "password").write_text("s3cret\n")
    (pkg / "agent.toml").write_text('device_id = "pi-9"\nfleet = "f2"\nfleet_public_key = "fleet.pub"\n'
                                    '[mqtt]\nhost = "broker.example"\nport = 8883\ntls = true\nca_file = "ca.pem"\n'
                                    'username = "pi-9"\npassword_file = "password"\n')
    src = pkg
    if as_tar:
        src = tmp_path / "pkg.tar"
        with tarfile.open(src, "w") as tar:
            tar.add(pkg, arcname="pi-9")
    root = tmp_path / "root"
    res = _edgekit("agent", "install", "--root", root, "--from", src)
    assert res.returncode == 0, res.stderr
    from device_agent.config import load_config

    cfg = load_config(root / "etc/edgekit/agent.toml", environ={})
    assert cfg.device_id == "pi-9" and cfg.fleet == "f2" and cfg.mqtt.tls and cfg.mqtt.port == 8883
    assert cfg.mqtt.ca_file == str(root / "etc/edgekit/credentials/ca.pem")
    assert Path(cfg.mqtt.password_file).read_text() == "s3cret\n"
    assert oct(Path(cfg.mqtt.password_file).stat().st_mode & 0o777) == "0o640"  # group: the agent's user
    assert Path(cfg.fleet_public_key).read_bytes() == Path(bundles["pub"]).read_bytes()
    assert cfg.data_dir == str(root / "var/lib/edgekit-agent")


def test_install_validates_before_writing_anything(tmp_path, bundles):
    root = tmp_path / "root"
    res = _edgekit("agent", "install", "--root", root, "--device-id", "bad id!", "--fleet-key", bundles["pub"])
    assert res.returncode != 0 and "device_id" in res.stderr
    res = _edgekit("agent", "install", "--root", root, "--device-id", "pi-1", "--fleet-key", bundles["key"])
    assert res.returncode != 0 and "fleet_public_key" in res.stderr
    assert not root.exists() or not any(root.rglob("*.toml"))


@pytest.mark.parametrize("text, words", [
    ('device_id = "d"\nfleet_public_key = "k.pub"\n[mqtt]\nport = "many"\n', "mqtt.port"),
    ('device_id = "d"\nfleet_public_key = "k.pub"\n[mqtt]\nhots = "x"\n', "mqtt.hots"),
    ('device_id = "d"\n[mqtt\n', "not valid TOML"),
    ('device_id = "d"\nfleet_public_key = "missing.pub"\n', "fleet_public_key"),
])
def test_corrupt_config_is_one_clear_line(tmp_path, bundles, text, words):
    shutil.copy(bundles["pub"], tmp_path / "k.pub")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(text)
    res = _edgekit("agent", "run", "--config", cfg, timeout=30)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("edgekit: error:"), res.stderr


def test_env_override_reaches_the_running_agent(tmp_path, bundles):
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data", api_port=1)
    res = _edgekit("agent", "run", "--config", cfg, env={"EDGEKIT_AGENT__API__PORT": "abc"}, timeout=30)
    assert res.returncode != 0 and "api.port" in res.stderr


def test_unsigned_and_wrong_key_bundles_are_refused_at_start(tmp_path, bundles):
    _, other_pub = generate_keypair(tmp_path / "other.key")
    cfg = write_config(tmp_path / "agent.toml", pub=other_pub, data_dir=tmp_path / "data", bundle=bundles["int8"])
    res = _edgekit("agent", "run", "--config", cfg, timeout=30)
    assert res.returncode != 0 and "signed by key" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / "data" / "store").glob("[0-9a-f]*"))
    tampered = tmp_path / "tampered.ekb"
    data = bytearray(Path(bundles["int8"]).read_bytes())
    i = data.find(b'"version":"1.0.0"')
    data[i:i + 17] = b'"version":"9.0.0"'
    tampered.write_bytes(bytes(data))
    cfg = write_config(tmp_path / "agent2.toml", pub=bundles["pub"], data_dir=tmp_path / "data2", bundle=tampered)
    res = _edgekit("agent", "run", "--config", cfg, timeout=30)
    assert res.returncode != 0 and "tampered" in res.stderr, res.stderr


def test_status_of_a_stopped_agent_reads_the_data_directory(tmp_path, bundles):
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data", bundle=bundles["int8"])
    agent = AgentProcess(cfg)
    try:
        agent.start()
    finally:
        agent.stop()
    res = _edgekit("agent", "status", "--config", cfg, "--json")
    assert res.returncode == ExitCode.NOT_RUNNING == 5  # not 3: that is "missing extra"
    doc = json.loads(res.stdout)
    assert doc["status"] == "not_running" and doc["model"]["name"] == "digits" and "items" in doc["spool"]


def test_a_current_model_that_no_longer_verifies_falls_back_to_the_previous(tmp_path, bundles):
    from edgekit.bundle import read_bundle
    from device_agent.spool import Spool
    from device_agent.store import ModelStore

    data = tmp_path / "data"
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=data, bundle=bundles["int8"])
    agent = AgentProcess(cfg)
    try:
        agent.start()
    finally:
        agent.stop()
    store = ModelStore(data / "store")
    new = store.install(bundles["fp32"], bundles["pub"])
    store.set_current(new.sha256)
    with open(new.model_path, "r+b") as f:  # bit rot / tampering after install
        f.seek(64)
        f.write(b"\xff\xfe\xfd")
    try:
        health = agent.start().client().health()
    finally:
        agent.stop()
    int8 = read_bundle(bundles["int8"]).sha256
    assert health["model"]["sha256"] == int8 and store.current().sha256 == int8
    spool = Spool(data / "spool.sqlite")
    events = [i.body for i in spool.pending(100) if i.channel == "events"]
    spool.close()
    assert [e["event"] for e in events] == ["load_failed"]
    assert events[0]["model"]["sha256"] == new.sha256 and events[0]["detail"]["serving"]["sha256"] == int8
