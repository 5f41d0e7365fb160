from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit import protocol as P
from edgekit.errors import ProtocolError


def test_topics_round_trip_and_validate():
    t = P.Topic("fleet1", "dev-01", "telemetry")
    assert str(t) == "edgekit/v1/fleet1/devices/dev-01/telemetry"
    assert P.Topic.parse(str(t)) == t
    assert P.Topic.parse("edgekit/v1/f/devices/d/cmd/reply").channel == "cmd/reply"
    assert P.fleet_filter("f", "telemetry", shared=True) == "$share/edgekit-fleet/edgekit/v1/f/devices/+/telemetry"
    for bad in ["edgekit/v1/f/devices/+/state", "edgekit/v2/f/devices/d/state", "edgekit/v1/f/devices/d/nope",
                "edgekit/v1/f/d/state", "x"]:
        with pytest.raises(ProtocolError):
            P.Topic.parse(bad)
    with pytest.raises(ProtocolError):
        P.Topic("f", "a/b", "state")
    with pytest.raises(ProtocolError):
        P.Topic("f", "#", "state")


def test_messages_round_trip():
    msgs = [
        ("state", P.StateMessage(device_id="d1", status="online", model={"name": "m", "version": "1.0.0",
                                                                            "sha256": "a" * 64})),
        ("desired", P.DesiredMessage(model={"name": "m", "version": "1.0.0", "sha256": "a" * 64, "url": "http://x"})),
        ("events", P.EventMessage(device_id="d1", seq=3, event="committed", reason=None)),
        ("telemetry", P.TelemetryMessage(device_id="d1", samples=[{"seq": 1, "ts": 1.0, "system": {"cpu": 3}}])),
        ("cmd", P.CommandMessage(id="c1", name="ping")),
        ("cmd/reply", P.CommandReply(id="c1", ok=True)),
    ]
    for channel, m in msgs:
        back = P.decode(channel, m.encode())
        assert back == m


@pytest.mark.parametrize("payload", [b"", b"[]", b"{", b'{"v": 2, "device_id": "d", "status": "online"}',
                                     b'{"v": 1, "device_id": "d"}', b'{"v": 1, "device_id": "d", "status": "zzz"}',
                                     b'{"v": 1, "device_id": "../x", "status": "online"}', b"\xff\xfe"])
def test_malformed_state_rejected(payload):
    with pytest.raises(ProtocolError):
        P.decode("state", payload)


@settings(max_examples=200, deadline=None)
@given(channel=st.sampled_from(list(P.MESSAGE_TYPES)),
       payload=st.one_of(st.binary(max_size=200),
                         st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                                      lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                           max_size=6),
                                      max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_decode_only_raises_protocol_error(channel, payload):
    try:
        P.decode(channel, payload)
    except ProtocolError:
        pass


def test_wire_vocabulary_is_str_enums_that_serialise_as_plain_strings():
    assert P.CHANNELS == ("state", "desired", "events", "telemetry", "cmd", "cmd/reply")
    m = P.EventMessage(device_id="d1", seq=1, event=P.EventName.FAILED, reason=P.Reason.GOLDEN_MISMATCH,
                       from_state=P.UpdateState.SELF_TEST)
    raw = json.loads(m.encode())
    assert raw["event"] == "failed" and raw["reason"] == "golden_mismatch" and raw["from_state"] == "SELF_TEST"
    assert f"{P.UpdateState.IDLE}" == "IDLE" and str(P.Channel.CMD_REPLY) == "cmd/reply"
    assert P.Topic("f", "d", P.Channel.CMD_REPLY) == P.Topic.parse("edgekit/v1/f/devices/d/cmd/reply")
    assert set(P.SELF_TEST_REASONS) <= set(P.Reason) and set(P.OUTCOME_EVENTS) <= set(P.EventName)


def test_agent_state_machine_speaks_the_protocol_vocabulary():
    from device_agent.update.machine import TRANSITIONS, Reason, State, event_name

    assert State is P.UpdateState and Reason is P.Reason
    names = {event_name(src, ev, dst) for (src, ev), dst in TRANSITIONS.items()}
    assert names <= set(P.EventName)
    # the updater's notes are events too
    import pathlib
    import re

    src = (pathlib.Path(__file__).parents[2] / "device_agent" / "update" / "updater.py").read_text()
    notes = set(re.findall(r"_note\((?:EventName\.(\w+)|\"(\w+)\")", src))
    assert notes and {P.EventName[a].value if a else b for a, b in notes} <= set(P.EventName)


def test_protocol_doc_lists_exactly_the_commands_and_events():
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    cmd_row = next(ln for ln in doc.splitlines() if ln.startswith("| `cmd` |"))
    listed = set(re.findall(r"`(\w+)`", cmd_row.split("`name` (", 1)[1].split(")")[0]))
    assert listed == {c.value for c in P.CommandName} | {"status"}
    for enum_cls in (P.Channel, P.DeviceStatus, P.UpdateState, P.EventName, P.Reason, P.CommandName):
        row = next(ln for ln in doc.splitlines() if ln.startswith(f"| `{enum_cls.__name__}`"))
        listed = set(re.findall(r"`([\w/]+)`", row.split("|")[2]))
        assert listed == {m.value for m in enum_cls}, enum_cls.__name__
