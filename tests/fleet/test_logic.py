"""Pure logic: config parsing, broker files, row mapping, durations, sparklines (no broker, no database)."""

from __future__ import annotations

import pytest

from edgekit.errors import ProtocolError, UsageError


def test_config_round_trip_and_errors():
    from fleet.config import FleetConfig
    from fleet.errors import FleetConfigError

    cfg = FleetConfig.from_dict({"fleet": {"id": "lab"}, "broker": {"tls_port": 1234}, "retention": {"raw_days": 3}})
    assert cfg.fleet.id == "lab" and cfg.broker.tls_port == 1234 and cfg.retention.raw_days == 3.0
    assert FleetConfig.from_dict(__import__("tomllib").loads(cfg.to_toml().decode())) == cfg
    for data, key in (({"broker": {"tls_port": "x"}}, "broker.tls_port"), ({"broker": {"nope": 1}}, "broker.nope"),
                      ({"fleet": {"id": "bad id"}}, "fleet.id"), ({"broker": {"tls_port": 70000}}, "broker.tls_port"),
                      ({"store": {"url": "mysql://x"}}, "store.url"),
                      ({"broker": {"tls_port": True}}, "broker.tls_port"),
                      ({"broker": 3}, "broker"), ({"broker": {"tls_port": 0}}, "broker.tls_port"),
                      ({"retention": {"raw_days": 0}}, "retention.raw_days"), ({"brokr": {}}, "brokr")):
        with pytest.raises(FleetConfigError) as exc:
            FleetConfig.from_dict(data)
        assert exc.value.key == key


def test_acl_confines_each_device_and_lists_only_provisioned_ones():
    from fleet.broker_conf import render_acl

    acl = render_acl("f1", "_edgekit-fleet", ["b", "a"])
    assert "user _edgekit-fleet\ntopic readwrite edgekit/v1/f1/#" in acl
    assert "user a\ntopic readwrite edgekit/v1/f1/devices/a/#" in acl
    assert "user b\ntopic readwrite edgekit/v1/f1/devices/b/#" in acl
    assert "pattern" not in acl and "devices/+/" not in acl


def test_password_file_round_trip():
    from fleet.broker_conf import check_password, hash_password, parse_passwd, render_passwd

    entries = {"a": hash_password("pa"), "b": hash_password("pb")}
    back = parse_passwd(render_passwd(entries))
    assert back == entries and check_password("pa", back["a"]) and not check_password("pa", back["b"])


def test_rows_from_an_agent_sample():
    from edgekit.protocol import TelemetryMessage
    from fleet.rows import telemetry_rows

    msg = TelemetryMessage("d", [{"seq": 3, "ts": 10.0, "system": {"cpu_percent": 12.5, "mem_percent": 40,
                                                                    "temperature_c": {"a": 40.0, "b": 51.5},
                                                                    "load": [0.7, 0.5, 0.1], "disk_percent": 30,
                                                                    "agent_rss": 5},
                                  "inference": {"digits@1.0.0": {"count": 9, "errors": 1, "p95_ms": 2.5}}}])
    sysrows, infrows = telemetry_rows(msg, 11.0)
    assert sysrows == [{"device_id": "d", "seq": 3, "ts": 10.0, "received": 11.0, "cpu": 12.5, "mem": 40.0,
                        "temp": 51.5, "disk": 30.0, "load1": 0.7, "extra": {"agent_rss": 5}}]
    assert infrows == [{"device_id": "d", "seq": 3, "ts": 10.0, "model_version": "digits@1.0.0", "count": 9,
                        "errors": 1, "p50_ms": None, "p95_ms": 2.5, "p99_ms": None}]
    with pytest.raises(ProtocolError):
        telemetry_rows(TelemetryMessage("d", [{"seq": 2**64, "ts": 1.0}]), 1.0)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1.5h", 5400),
                                           ("30", 30), ("1h30m", 5400), ("500ms", 0.5), ("1w", 604800)])
def test_parse_duration(text, seconds):
    from fleet.views import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "-1h", "soon"])
def test_parse_duration_rejects(text):
    from fleet.views import parse_duration

    with pytest.raises(UsageError):
        parse_duration(text)


def test_sparkline_and_plot():
    from fleet.views import sparkline, text_plot

    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5]) == "▁▁▁" and sparkline([]) == ""
    assert len(sparkline(list(range(1000)), width=40)) == 40
    plot = text_plot([1, 2, 3], width=10, height=4).splitlines()
    assert len(plot) == 4 and plot[0].strip().startswith("3.00") and plot[-1].strip().startswith("1.00")


def test_registry_state_rules():
    from edgekit.protocol import StateMessage
    from fleet.models import Device
    from fleet.registry import apply_state_to

    d = Device(id="d", fleet="f", tags={}, groups=[], capabilities={}, update={}, online=False)
    apply_state_to(d, StateMessage("d", "online", ts=10.0, agent_version="1", runtime={"backend": "litert"},
                                   model={"name": "m", "version": "2", "sha256": "s"}, update={"state": "IDLE"}), 100.0)
    assert d.online and d.model_version == "2" and d.update_state == "IDLE" and d.last_seen == 100.0
    apply_state_to(d, StateMessage("d", "offline", ts=5.0), 101.0)  # older than the applied state: ignored
    assert d.online and d.last_seen == 101.0
    apply_state_to(d, StateMessage("d", "offline", ts=20.0), 102.0)  # the Last Will keeps model and capabilities
    assert not d.online and d.model_version == "2" and d.capabilities["runtime"] == {"backend": "litert"}
