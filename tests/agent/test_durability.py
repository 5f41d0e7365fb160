"""Nothing is lost: broker outages, an agent SIGKILLed during an outage, and a spool over its cap."""

from __future__ import annotations

import time

import numpy as np
import pytest

from .conftest import FLEET, telemetry_seqs, write_config

TOPIC = f"edgekit/v1/{FLEET}/devices/dev1/"
KEY = "digits@1.0.0"


def _counted(sub) -> int:
    return sum(smp["inference"].get(KEY, {}).get("count", 0) for m in sub.of("telemetry") for smp in m["samples"])


def _assert_exactly_once_from_zero(seqs: list[int]) -> None:
    assert seqs, "no telemetry arrived"
    assert len(seqs) == len(set(seqs)), f"duplicates: {sorted(s for s in set(seqs) if seqs.count(s) > 1)}"
    assert sorted(seqs) == list(range(max(seqs) + 1)), "gaps in the sequence numbers"


def _wait_spool(client, items: int, timeout: float = 30.0) -> None:
    """Wait until the agent's spool holds at least ``items`` items (samples pile up there while the broker is down)."""
    deadline = time.monotonic() + timeout
    while client.health()["spool"]["items"] < items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the spool never held {items} items")
        time.sleep(0.05)


@pytest.mark.slow
def test_broker_outage_of_30s_loses_nothing(tmp_path, bundles, mosquitto, agent_factory, subscriber_factory):
    sub = subscriber_factory(mosquitto, TOPIC + "telemetry", client_id="outage-watch")
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"], broker=mosquitto, telemetry={"interval": 0.25})
    agent = agent_factory(cfg).start()
    client = agent.client()
    x = np.zeros((1, 8, 8, 1), np.int8)
    sub.wait_for(lambda s: telemetry_seqs(s), what="telemetry before the outage")

    mosquitto.stop()
    t_down = time.monotonic()
    done = 0
    while time.monotonic() - t_down < 31:
        client.infer(x)
        done += 1
        time.sleep(0.01)
    spooled = client.health()["spool"]["items"]
    assert spooled >= 100  # ~4 samples a second piled up
    mosquitto.start()

    sub.wait_for(lambda s: _counted(s) == done, timeout=60, what=f"all {done} inferences counted")
    health = client.health()
    assert health["mqtt_connected"] and health["link"]["disconnects"] >= 1
    _assert_exactly_once_from_zero(telemetry_seqs(sub))


def test_agent_killed_during_an_outage_delivers_its_spool(tmp_path, bundles, mosquitto, agent_factory,
                                                          subscriber_factory):
    sub = subscriber_factory(mosquitto, TOPIC + "telemetry", client_id="kill-watch")
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"], broker=mosquitto, telemetry={"interval": 0.2})
    agent = agent_factory(cfg).start()
    x = np.zeros((1, 8, 8, 1), np.int8)
    sub.wait_for(lambda s: telemetry_seqs(s), what="first telemetry")
    mosquitto.stop()
    client = agent.client()
    for _ in range(25):
        client.infer(x)
    # samples pile up in the spool; those taken from now on count the 25 inferences
    after_infer = client.health()["spool"]["items"]
    _wait_spool(client, max(8, after_infer + 1))
    before_kill = client.health()["spool"]["items"]
    assert before_kill >= 8
    agent.kill()
    agent.start()  # broker still down: the restarted agent spools on top of what is on disk
    for _ in range(5):
        agent.client().infer(x)
    after_infer = agent.client().health()["spool"]["items"]
    _wait_spool(agent.client(), after_infer + 1)  # a sample counting the 5 is on disk before the broker is back
    mosquitto.start()
    sub.wait_for(lambda s: _counted(s) == 30, timeout=30, what="all 30 inferences counted")
    _assert_exactly_once_from_zero(telemetry_seqs(sub))


def test_spool_over_its_cap_drops_the_oldest_and_reports_it(tmp_path, bundles, mosquitto, agent_factory,
                                                            subscriber_factory):
    sub = subscriber_factory(mosquitto, TOPIC + "telemetry", client_id="cap-watch")
    mosquitto.stop()
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"], broker=mosquitto, telemetry={"interval": 0.1},
                       spool={"max_items": 6})
    agent = agent_factory(cfg).start()
    deadline = time.monotonic() + 15
    while agent.client().health()["spool"]["dropped_total"] < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    mosquitto.start()

    def settled(s):
        msgs = s.of("telemetry")
        return msgs and sum(m["dropped"] for m in msgs) > 0 and len(telemetry_seqs(s)) >= 8
    sub.wait_for(settled, timeout=30, what="telemetry with a drop count")
    deadline = time.monotonic() + 15  # let the backlog and every drop report be acknowledged
    while time.monotonic() < deadline:
        spool = agent.client().health()["spool"]
        if spool["items"] == 0 and spool["dropped_unreported"] == 0:
            break
        time.sleep(0.05)
    dropped_total = agent.client().health()["spool"]["dropped_total"]
    agent.stop()
    sub.barrier()  # whatever the agent published before it stopped has reached the subscriber
    seqs = telemetry_seqs(sub)
    assert len(seqs) == len(set(seqs))
    missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
    assert missing and max(missing) < min(seqs), "only the oldest samples may be dropped"
    reported = sum(m["dropped"] for m in sub.of("telemetry"))
    assert reported == len(missing)
    assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1))
    assert dropped_total == len(missing)
