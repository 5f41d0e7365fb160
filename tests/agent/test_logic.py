"""Pure logic of the agent: histogram stats, backoff, batching, config parsing, request decoding."""

from __future__ import annotations

import io
import json
import os
import random

import numpy as np
import pytest

from device_agent import codec, config as config_mod
from device_agent.errors import AgentConfigError, InvalidInputError
from device_agent.link import Backoff, batch_items
from device_agent.runtime import TensorSpec
from device_agent.spool import Item
from device_agent.stats import BOUNDS, Histogram, InferenceStats, bucket_of, bucket_value


def test_percentiles_within_a_bucket_of_the_exact_value():
    rng = np.random.default_rng(0)
    samples = rng.lognormal(mean=np.log(0.004), sigma=0.6, size=20_000)
    h = Histogram()
    for s in samples:
        h.add(float(s))
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(samples, q))
        assert abs(h.quantile(q) - exact) / exact < 0.13, q  # one bucket is a factor 10**(1/20) = 1.122
    assert len(h.counts) <= len(BOUNDS) + 1  # memory bounded by the bucket count, not the sample count


def test_bucket_edges_are_monotonic():
    assert list(BOUNDS) == sorted(BOUNDS)
    for i in range(1, len(BOUNDS)):
        assert BOUNDS[i - 1] < bucket_value(i) <= BOUNDS[i]
    assert bucket_of(1e-9) == 0 and bucket_of(1e9) == len(BOUNDS)


def test_stats_per_version_errors_window_and_interval():
    now = [1000.0]
    stats = InferenceStats(slot_seconds=1.0, max_window=60, clock=lambda: now[0])
    for _ in range(90):
        stats.record("m@1", 0.002)
    for _ in range(10):
        stats.record("m@1", 0.5, ok=False)
    before = stats.snapshot("m@1")
    now[0] += 30
    for _ in range(10):
        stats.record("m@1", 0.100)
    stats.record("m@2", 0.001)
    snap = stats.snapshot("m@1")
    assert snap.count == 110 and snap.errors == 10
    delta = snap - before
    assert delta.count == 10 and delta.errors == 0 and 90 < delta.p50_ms < 112
    win = stats.window("m@1", 5)
    assert win.count == 10 and win.error_rate == 0.0 and 90 < win.p95_ms < 112
    assert stats.window("m@1", 60).error_rate == pytest.approx(10 / 110)
    assert stats.snapshot("never").count == 0 and stats.snapshot("never").p95_ms is None
    assert sorted(stats.versions()) == ["m@1", "m@2"]


def test_backoff_grows_with_jitter_and_resets():
    b = Backoff(initial=0.5, maximum=8.0, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    for n, d in enumerate(delays):
        cap = min(8.0, 0.5 * 2 ** n)
        assert cap / 2 <= d <= cap
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next() <= 0.5


def test_batching_groups_consecutive_telemetry_only():
    items = [Item(i, ch, i, {}) for i, ch in enumerate(["telemetry"] * 3 + ["events"] + ["telemetry"] * 5)]
    batches = batch_items(items, batch_max=2)
    assert [[i.id for i in b] for b in batches] == [[0, 1], [2], [3], [4, 5], [6, 7], [8]]


# --- config ----------------------------------------------------------------------------------------------------------


def _cfg(tmp_path, text: str, environ=None):
    (tmp_path / "fleet.pub").write_text("x")
    p = tmp_path / "agent.toml"
    p.write_text('device_id = "dev1"\nfleet_public_key = "fleet.pub"\n' + text)
    return config_mod.load_config(p, environ=environ or {})


def test_config_defaults_relative_paths_and_env_overrides(tmp_path):
    cfg = _cfg(tmp_path, '[mqtt]\nhost = "broker.local"\n[telemetry]\ninterval = 2\n',
               environ={"EDGEKIT_AGENT__MQTT__HOST": "10.0.0.9", "EDGEKIT_AGENT__MQTT__PORT": "8883",
                        "EDGEKIT_AGENT__MQTT__TLS": "true", "EDGEKIT_AGENT__RUNTIME__THREADS": "2"})
    assert cfg.mqtt.host == "10.0.0.9" and cfg.mqtt.port == 8883 and cfg.mqtt.tls is True
    assert cfg.runtime.threads == 2 and cfg.telemetry.interval == 2.0
    assert cfg.fleet_public_key == str(tmp_path / "fleet.pub")
    assert cfg.api.host == "127.0.0.1" and cfg.client_id == "dev1"


@pytest.mark.parametrize("text, key", [
    ("[mqtt]\nport = 70000\n", "mqtt.port"),
    ("[mqtt]\nport = \"abc\"\n", "mqtt.port"),
    ("[mqtt]\nhots = \"x\"\n", "mqtt.hots"),
    ("[telemetry]\ninterval = -1\n", "telemetry.interval"),
    ("[runtime]\nbackend = \"onnx\"\n", "runtime.backend"),
    ("[api]\nhost = \"0.0.0.0\"\n", "api.host"),
    ("mqtt = 3\n", "mqtt"),
    ("[spool]\nmax_items = true\n", "spool.max_items"),
    ("[update]\ncrash_limit = 0\n", "update.crash_limit"),
    ("[update]\nprobation = 5\n", "update.probation"),
])
def test_bad_config_names_the_key(tmp_path, text, key):
    with pytest.raises(AgentConfigError) as err:
        _cfg(tmp_path, text)
    assert err.value.key == key
    assert key in err.value.one_line() and "\n" not in err.value.one_line()


def test_env_override_of_one_update_key_merges_with_the_table(tmp_path):
    cfg = _cfg(tmp_path, "[update]\ncrash_limit = 7\nprobation_s = 5\n",
               environ={"EDGEKIT_AGENT__UPDATE__PROBATION_S": "120"})
    assert cfg.update.crash_limit == 7 and cfg.update.probation_s == 120.0


def test_env_override_of_one_key_keeps_the_rest_of_every_section(tmp_path):
    cfg = _cfg(tmp_path, '[mqtt]\nhost = "broker.local"\nport = 8883\n',
               environ={"EDGEKIT_AGENT__MQTT__PORT": "1884"})
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("broker.local", 1884)


def test_bad_env_override_names_the_key(tmp_path):
    with pytest.raises(AgentConfigError) as err:
        _cfg(tmp_path, "", environ={"EDGEKIT_AGENT__MQTT__KEEPALIVE": "soon"})
    assert err.value.key == "mqtt.keepalive"


def test_missing_required_and_broken_toml(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text('fleet = "f"\n')
    with pytest.raises(AgentConfigError) as err:
        config_mod.load_config(p, environ={})
    assert err.value.key == "device_id"
    p.write_text('device_id = "dev1"\n[mqtt\n')
    with pytest.raises(AgentConfigError, match="not valid TOML"):
        config_mod.load_config(p, environ={})
    with pytest.raises(AgentConfigError, match="does not exist"):
        config_mod.load_config(tmp_path / "nope.toml", environ={})


def test_config_round_trips_through_toml(tmp_path):
    cfg = _cfg(tmp_path, "[update]\nprobation_s = 30\n")
    text = config_mod.to_toml(cfg)
    again = config_mod.from_dict(config_mod.parse_toml(text), environ={})
    assert again.to_dict() == cfg.to_dict() and again.update == cfg.update and again.update.probation_s == 30


# --- request decoding ------------------------------------------------------------------------------------------------

SPEC = [TensorSpec("image", 0, np.dtype("int8"), (1, 2, 2, 1))]
FSPEC = [TensorSpec("x", 0, np.dtype("float32"), (1, 3))]


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_decode_json_forms():
    a = codec.decode_json(json.dumps({"inputs": [[[[1], [2]], [[3], [-4]]]]}).encode(), SPEC)[0]
    assert a.dtype == np.int8 and a.shape == (1, 2, 2, 1) and a.ravel().tolist() == [1, 2, 3, -4]
    b = codec.decode_json(json.dumps({"inputs": {"image": [[[1], [2]], [[3], [-4]]]}}).encode(), SPEC)[0]
    assert np.array_equal(a, b)
    f = codec.decode_json(b'{"inputs": [[0.1, 0.2, 0.30000001192092896]]}', FSPEC)[0]
    assert f.dtype == np.float32 and f[0, 2] == np.float32(0.3)


@pytest.mark.parametrize("body, match", [
    (b"not json", "not valid JSON"),
    (b'{"x": 1}', '"inputs"'),
    (b'{"inputs": [[[[1], [2]], [[3], [4]], [[5], [6]]]]}', "shape"),
    (b'{"inputs": [[[[1.5], [2]], [[3], [4]]]]}', "integers"),
    (b'{"inputs": [[[[300], [2]], [[3], [4]]]]}', "lie in"),
    (b'{"inputs": [[[["a"], [2]], [[3], [4]]]]}', "numbers"),
    (b'{"inputs": [[[[1], [2]], [[3]]]]}', "rectangular"),
    (b'{"inputs": {"other": 1}}', "unknown input"),
])
def test_decode_json_rejects(body, match):
    with pytest.raises(InvalidInputError, match=match):
        codec.decode_json(body, SPEC)


def test_decode_npy_is_strict_about_dtype_and_shape():
    ok = np.ones((1, 2, 2, 1), np.int8)
    assert np.array_equal(codec.decode_npy(_npy(ok), SPEC)[0], ok)
    assert codec.decode_npy(_npy(ok[0]), SPEC)[0].shape == (1, 2, 2, 1)  # batch of one may be left out
    with pytest.raises(InvalidInputError, match="dtype float64"):
        codec.decode_npy(_npy(ok.astype(np.float64)), SPEC)
    with pytest.raises(InvalidInputError, match="shape"):
        codec.decode_npy(_npy(np.ones((2, 2, 2, 1), np.int8)), SPEC)
    with pytest.raises(InvalidInputError, match="not a valid"):
        codec.decode_npy(b"\x93NUMPY garbage", SPEC)
    with pytest.raises(InvalidInputError, match="not a valid"):
        codec.decode_npy(_npy(np.array([{"a": 1}], dtype=object)), SPEC)


def test_publish_event_is_durable_and_checked_at_once(tmp_path, bundles):
    from edgekit.errors import ProtocolError
    from device_agent.agent import Agent

    (tmp_path / "fleet.pub").write_bytes(open(bundles["pub"], "rb").read())
    cfg = config_mod.from_dict({"device_id": "dev1", "fleet_public_key": str(tmp_path / "fleet.pub"),
                                "data_dir": str(tmp_path / "data"), "mqtt": {"enabled": False}}, environ={})
    agent = Agent(cfg, with_updater=False)
    assert agent.publish_event(event="downloading", from_state="IDLE", to_state="DOWNLOADING") == 0
    assert agent.publish_event(event="failed", reason="hash_mismatch", detail={"got": "x"}) == 1
    with pytest.raises(ProtocolError):
        agent.publish_event(event="", reason="empty event name")
    with pytest.raises(ProtocolError):
        agent.publish_event(event="switched", model={"name": "m"})
    items = agent.spool.pending(10)
    assert [(i.channel, i.seq, i.body["event"]) for i in items] == [("events", 0, "downloading"),
                                                                    ("events", 1, "failed")]
    agent.stop()


# --- telemetry probes ------------------------------------------------------------------------------------------------


def test_thermal_and_throttle_parsing():
    from device_agent.telemetry import parse_thermal, parse_throttled

    assert parse_thermal({"thermal_zone0": ("cpu-thermal\n", "48312\n"), "thermal_zone1": ("gpu\n", "oops")}) == \
        {"cpu-thermal": 48.31}
    assert parse_throttled("throttled=0x0\n") == {"raw": "0x0", "flags": []}
    got = parse_throttled("throttled=0x50005")
    assert got["raw"] == "0x50005" and got["flags"] == ["under_voltage", "throttled", "under_voltage_occurred",
                                                         "throttling_occurred"]
    assert parse_throttled("error=1") is None and parse_throttled("throttled=zz") is None


def test_system_probe_reads_sysfs_and_vcgencmd_when_present(tmp_path, monkeypatch):
    from device_agent.telemetry import SystemProbe

    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("51234\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "vcgencmd"  # stands in for the Raspberry Pi firmware tool
    tool.write_text("#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled=0x20002\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    sample = SystemProbe(tmp_path, thermal_root=tmp_path / "thermal").sample()
    assert sample["temperature_c"] == {"cpu-thermal": 51.23}
    assert sample["throttled"] == {"raw": "0x20002", "flags": ["arm_frequency_capped",
                                                               "arm_frequency_capping_occurred"]}
    assert 0 <= sample["cpu_percent"] <= 100 and sample["disk_total"] > 0 and sample["agent_rss"] > 0
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    plain = SystemProbe(tmp_path, thermal_root=tmp_path / "none").sample()
    assert "throttled" not in plain and "temperature_c" not in plain
