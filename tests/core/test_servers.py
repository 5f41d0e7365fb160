"""The local server launchers shared by tests and benchmarks (edgekit.servers), against the real programs."""

from __future__ import annotations

import socket

import pytest

from edgekit.servers import Mosquitto, ServerStartError, find_mosquitto

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed (apt-get install "
                                "mosquitto); scripts/bootstrap.sh installs it")


def test_mosquitto_listens_and_stops(tmp_path):
    broker = Mosquitto(tmp_path / "b").start()
    try:
        assert broker.running
        socket.create_connection((broker.host, broker.port), timeout=2).close()
    finally:
        broker.stop()
    assert not broker.running


def test_a_refused_config_is_reported_with_mosquittos_own_message(tmp_path):
    # the class of break that made the agent benchmark rot: an option repeated in extra_conf
    broker = Mosquitto(tmp_path / "b", extra_conf="user root\nuser root\n")
    with pytest.raises(ServerStartError) as exc:
        broker.start()
    assert "exited with status" in exc.value.message, exc.value.message
    assert "Duplicate user value" in exc.value.message, exc.value.message
    assert broker.proc is None and not broker.running
