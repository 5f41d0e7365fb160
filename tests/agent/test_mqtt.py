"""The agent process against a real Mosquitto: birth and will, telemetry, malformed inbound messages."""

from __future__ import annotations

import json
import time

import numpy as np
import paho.mqtt.client as mqtt

from edgekit.bundle import read_bundle
from edgekit.protocol import StateMessage, TelemetryMessage, decode

from .conftest import FLEET, telemetry_seqs, write_config

TOPIC = f"edgekit/v1/{FLEET}/devices/dev1/"


def _start(tmp_path, bundles, mosquitto, agent_factory, **sections):
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"], broker=mosquitto, **sections)
    return agent_factory(cfg).start()


def test_birth_message_is_retained_and_offline_on_stop_and_on_kill(tmp_path, bundles, mosquitto, agent_factory,
                                                                   subscriber_factory):
    agent = _start(tmp_path, bundles, mosquitto, agent_factory)
    sha = read_bundle(bundles["int8"]).sha256
    sub = subscriber_factory(mosquitto, TOPIC + "state", client_id="state-watch")
    states = sub.wait_for(lambda s: [m for m in s.of("state") if m["status"] == "online"], what="birth")
    birth = decode("state", json.dumps(states[-1]))
    assert isinstance(birth, StateMessage) and birth.device_id == "dev1"
    assert birth.model == {"name": "digits", "version": "1.0.0", "sha256": sha}
    assert birth.runtime["backend"] == "ai-edge-litert" and birth.agent_version
    late = subscriber_factory(mosquitto, TOPIC + "state", client_id="late-watch")  # retained: a late subscriber
    late.wait_for(lambda s: [r for _, _, r in s.messages if r], what="retained birth")  # gets it on subscribe
    assert late.of("state")[-1]["status"] == "online"
    agent.stop()  # SIGTERM: a clean shutdown publishes offline itself
    sub.wait_for(lambda s: s.of("state")[-1]["status"] == "offline", what="offline on stop")
    agent.start()
    sub.wait_for(lambda s: s.of("state")[-1]["status"] == "online", what="second birth")
    agent.kill()  # SIGKILL: the broker publishes the Last Will
    sub.wait_for(lambda s: s.of("state")[-1]["status"] == "offline", what="last will")


def test_plain_subscriber_receives_telemetry_with_inference_figures(tmp_path, bundles, mosquitto, agent_factory,
                                                                   subscriber_factory):
    sub = subscriber_factory(mosquitto, TOPIC + "telemetry", client_id="tele-watch")
    agent = _start(tmp_path, bundles, mosquitto, agent_factory, telemetry={"interval": 0.2})
    client = agent.client()
    for _ in range(7):
        client.infer(np.zeros((1, 8, 8, 1), np.int8))

    def counted(s):
        return sum(smp["inference"].get("digits@1.0.0", {}).get("count", 0)
                   for m in s.of("telemetry") for smp in m["samples"]) == 7
    sub.wait_for(counted, what="7 counted inferences")
    msgs = sub.of("telemetry")
    for m in msgs:
        TelemetryMessage.from_dict(m)
    sample = next(smp for m in msgs for smp in m["samples"] if smp["inference"])
    fig = sample["inference"]["digits@1.0.0"]
    assert fig["errors"] == 0 and 0 < fig["p50_ms"] <= fig["p95_ms"] <= fig["p99_ms"]
    system = sample["system"]
    for key in ("cpu_percent", "mem_available", "load", "disk_free", "uptime_s"):
        assert key in system
    seqs = telemetry_seqs(sub)
    assert seqs == list(range(len(seqs)))


def _wait_subscribed(mosquitto, subscriber_factory) -> None:
    """The agent subscribes, then publishes its birth: once the birth is out, its subscriptions are active."""
    watch = subscriber_factory(mosquitto, TOPIC + "state", client_id="birth-watch")
    watch.wait_for(lambda s: [m for m in s.of("state") if m["status"] == "online"], what="birth")


def test_malformed_inbound_messages_are_counted_and_ignored(tmp_path, bundles, mosquitto, agent_factory,
                                                           subscriber_factory):
    agent = _start(tmp_path, bundles, mosquitto, agent_factory)
    _wait_subscribed(mosquitto, subscriber_factory)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="prankster", protocol=mqtt.MQTTv5)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    for payload in (b"\xff\xfe not json", b"[]", json.dumps({"v": 99, "model": {}}).encode(),
                    json.dumps({"v": 1, "model": {"name": "x"}}).encode()):
        pub.publish(TOPIC + "desired", payload, qos=1).wait_for_publish(5)
    pub.publish(TOPIC + "cmd", b"{}", qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    deadline = time.monotonic() + 10
    while agent.client().health()["link"]["malformed"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    health = agent.client().health()
    assert health["link"]["malformed"] == 5 and health["status"] == "ok"
    assert agent.client().infer(np.zeros((1, 8, 8, 1), np.int8))[0].shape == (1, 10)


def test_ping_command_is_answered_on_cmd_reply(tmp_path, bundles, mosquitto, agent_factory, subscriber_factory):
    _start(tmp_path, bundles, mosquitto, agent_factory)
    sub = subscriber_factory(mosquitto, TOPIC + "cmd/reply", client_id="reply-watch")
    _wait_subscribed(mosquitto, subscriber_factory)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-cmd", protocol=mqtt.MQTTv5)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    pub.publish(TOPIC + "cmd", json.dumps({"v": 1, "id": "c-1", "name": "ping"}), qos=1).wait_for_publish(5)
    pub.publish(TOPIC + "cmd", json.dumps({"v": 1, "id": "c-2", "name": "self-destruct"}), qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    replies = sub.wait_for(lambda s: len(s.of("cmd/reply")) >= 2 and s.of("cmd/reply"), what="two replies")
    by_id = {r["id"]: r for r in replies}
    assert by_id["c-1"]["ok"] is True and by_id["c-1"]["result"]["health"]["status"] == "ok"
    assert by_id["c-2"]["ok"] is False and "self-destruct" in by_id["c-2"]["error"]


def test_client_id_takeover_does_not_turn_into_a_reconnect_storm(tmp_path, bundles, mosquitto, agent_factory):
    """Two agents with the same device id kick each other off the broker; both must back off between tries."""
    agents = []
    for name in ("a", "b"):
        cfg = write_config(tmp_path / f"{name}.toml", pub=bundles["pub"], data_dir=tmp_path / name,
                           bundle=bundles["int8"], broker=mosquitto)
        agents.append(agent_factory(cfg).start())
    time.sleep(5)
    connects = [a.client().health()["link"]["connects"] for a in agents]
    assert all(1 <= c <= 15 for c in connects), connects  # at most ~1 per backoff_max (1 s) each


def test_birth_message_reports_runtimes_delegates_and_execution_providers(tmp_path, bundles, mosquitto,
                                                                          agent_factory, subscriber_factory):
    """The capability probe (a child process, a few seconds after start) republishes the birth certificate."""
    from edgekit.payloads import device_targets

    _start(tmp_path, bundles, mosquitto, agent_factory)
    sub = subscriber_factory(mosquitto, TOPIC + "state", client_id="caps-watch")
    states = sub.wait_for(lambda s: [m for m in s.of("state") if "capabilities" in m.get("runtime", {})],
                          what="birth with capabilities")
    runtime = states[-1]["runtime"]
    caps = runtime["capabilities"]
    assert "ai-edge-litert" in caps["runtimes"] and caps["bundle_schemas"] == [1, 2]
    assert caps["delegates"] == [] and caps["allow_cpu_fallback"] is False  # no Edge TPU on this machine
    try:
        import onnxruntime
    except ImportError:
        assert "onnxruntime" not in caps["runtimes"] and caps["execution_providers"] == []
    else:
        assert "onnxruntime" in caps["runtimes"]
        assert caps["execution_providers"] == onnxruntime.get_available_providers()
    assert runtime["targets"] == device_targets(caps) and runtime["targets"][0] == "cpu"
    assert runtime["serving_backend"] == "ai-edge-litert"
