"""The edgekit MQTT protocol, version 1: topics and messages as typed values.

Topics are built and parsed only here. Every payload is JSON with a ``v`` schema field; :func:`decode` turns bytes
into one of the message dataclasses or raises :class:`~edgekit.errors.ProtocolError` (which callers count and log,
never let crash them). See ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from .errors import ProtocolError

PROTOCOL_VERSION = 1
ROOT = "edgekit/v1"
SHARED_GROUP = "edgekit-fleet"

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


# --- the wire vocabulary ---------------------------------------------------------------------------------------------
# Every word a device and the fleet exchange lives here, as a str-enum: members compare equal to (and serialise as)
# their plain string values, so JSON payloads and database rows stay plain strings.


class Channel(enum.StrEnum):
    """The last topic segment(s): what a message on that topic is."""

    STATE = "state"           # device -> fleet, retained: birth certificate / Last Will
    DESIRED = "desired"       # fleet -> device, retained: the model the device should run
    EVENTS = "events"         # device -> fleet: update progress and outcomes
    TELEMETRY = "telemetry"   # device -> fleet: batches of samples
    CMD = "cmd"               # fleet -> device: a command
    CMD_REPLY = "cmd/reply"   # device -> fleet: the reply to a command


CHANNELS = tuple(c.value for c in Channel)


class DeviceStatus(enum.StrEnum):
    """``state.status``."""

    ONLINE = "online"
    OFFLINE = "offline"


class UpdateState(enum.StrEnum):
    """The device updater's state, as reported in ``state.update.state`` and ``events.from_state/to_state``."""

    IDLE = "IDLE"
    DOWNLOADING = "DOWNLOADING"
    VERIFYING = "VERIFYING"
    STAGED = "STAGED"
    SELF_TEST = "SELF_TEST"
    SWITCHING = "SWITCHING"
    PROBATION = "PROBATION"
    COMMITTED = "COMMITTED"
    ROLLING_BACK = "ROLLING_BACK"
    FAILED = "FAILED"


class EventName(enum.StrEnum):
    """``events.event``: one per update transition, plus what the agent reports outside an update."""

    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    VERIFIED = "verified"
    SELF_TEST = "self_test"
    SELF_TEST_PASSED = "self_test_passed"
    SWITCHED = "switched"
    COMMITTED = "committed"
    IDLE = "idle"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLBACK_REQUESTED = "rollback_requested"
    ROLLED_BACK = "rolled_back"
    LOAD_FAILED = "load_failed"   # the model on disk could not be loaded at start-up
    # notes: reported like transitions, but the state does not change
    REJECTED = "rejected"                  # the desired model already failed here for this rollout
    RESUMED = "resumed"                    # the updater restarted and picked up its persisted state
    ROLLBACK_REFUSED = "rollback_refused"  # a rollback was asked for but cannot be done
    STATE_RECOVERED = "state_recovered"    # the persisted state was unreadable and was rebuilt


#: The events that end an update: what a rollout waits for.
OUTCOME_EVENTS = (EventName.COMMITTED, EventName.FAILED, EventName.ROLLED_BACK)


class Reason(enum.StrEnum):
    """Reason codes carried by FAIL / ROLLBACK transitions and the ``failed``/``rolled_back`` events."""

    DOWNLOAD_FAILED = "download_failed"          # HTTP error, connection lost, retries exhausted
    HASH_MISMATCH = "hash_mismatch"              # the artifact's sha256 or size is not the desired one
    SIGNATURE_INVALID = "signature_invalid"      # wrong key or tampered manifest
    BUNDLE_INVALID = "bundle_invalid"            # not a readable bundle (corrupt tar, payload hash, bad manifest)
    DISK_FULL = "disk_full"                      # not enough free space for the download
    NO_FITTING_PAYLOAD = "no_fitting_payload"    # the bundle has no payload this device can run (before download)
    GOLDEN_MISMATCH = "golden_mismatch"          # golden outputs outside the tolerance
    INCOMPATIBLE_MODEL = "incompatible_model"    # unsupported ops, missing delegate, interpreter failure
    LATENCY_REGRESSION = "latency_regression"    # slower than the policy allows vs the previous model
    ERROR_RATE = "error_rate"                    # inference errors above the policy in probation
    CRASH = "crash"                              # the agent restarted while the new model was (maybe) serving
    CRASH_LOOP = "crash_loop"                    # the loop guard: this update crashed the agent too often
    SUPERSEDED = "superseded"                    # a newer desired model replaced this one mid-way
    MANUAL = "manual"                            # `edgekit agent rollback` or a rollback command
    SWITCH_FAILED = "switch_failed"              # the new model could not be made current / loaded for serving
    ROLLBACK_FAILED = "rollback_failed"          # the previous model could not be restored
    NO_PREVIOUS = "no_previous"                  # a rollback was asked for but there is nothing to go back to
    INTERNAL = "internal"                        # an unexpected error in the updater itself


#: Reasons that mean the on-device self-test refused the model (the rollout counts them separately).
SELF_TEST_REASONS = frozenset({Reason.GOLDEN_MISMATCH, Reason.INCOMPATIBLE_MODEL})


class CommandName(enum.StrEnum):
    """``cmd.name``: what the fleet may ask a device."""

    PING = "ping"                    # liveness: the reply carries the agent's health
    ROLLBACK = "rollback"            # go back to the previous model (reason ``manual``)
    UPDATE_STATUS = "update_status"  # the updater's state summary (``status`` is accepted as an alias)


#: Accepted spellings of commands, mapped to the command.
COMMAND_ALIASES = {"status": CommandName.UPDATE_STATUS}


def check_id(value: str, what: str = "id") -> str:
    """A fleet or device id: 1-64 chars of letters, digits, '_', '.', '-', starting with a letter or digit."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise ProtocolError(
            f"invalid {what} {value!r}",
            hint="use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    return value


@dataclass(frozen=True)
class Topic:
    """``edgekit/v1/<fleet>/devices/<device_id>/<channel>``, validated on construction."""

    fleet: str
    device_id: str
    channel: str

    def __post_init__(self) -> None:
        check_id(self.fleet, "fleet id")
        check_id(self.device_id, "device id")
        if self.channel not in CHANNELS:
            raise ProtocolError(f"unknown channel {self.channel!r}", hint=f"use one of {', '.join(CHANNELS)}")

    def __str__(self) -> str:
        return f"{ROOT}/{self.fleet}/devices/{self.device_id}/{self.channel}"

    @classmethod
    def parse(cls, topic: str) -> "Topic":
        prefix = ROOT + "/"
        if not topic.startswith(prefix):
            raise ProtocolError(f"topic {topic!r} is not an edgekit v1 topic")
        parts = topic[len(prefix):].split("/", 3)
        if len(parts) != 4 or parts[1] != "devices":
            raise ProtocolError(f"topic {topic!r} is not of the form {ROOT}/<fleet>/devices/<id>/<channel>")
        return cls(parts[0], parts[2], parts[3])


def device_prefix(fleet: str, device_id: str) -> str:
    """The topic subtree one device may use: ``edgekit/v1/<fleet>/devices/<id>/``."""
    return f"{ROOT}/{check_id(fleet, 'fleet id')}/devices/{check_id(device_id, 'device id')}/"


def fleet_filter(fleet: str, channel: str, shared: bool = False) -> str:
    """Subscription filter for one channel of every device of a fleet, optionally as an MQTT 5 shared subscription."""
    if channel not in CHANNELS:
        raise ProtocolError(f"unknown channel {channel!r}")
    base = f"{ROOT}/{check_id(fleet, 'fleet id')}/devices/+/{channel}"
    return f"$share/{SHARED_GROUP}/{base}" if shared else base


# --- messages --------------------------------------------------------------------------------------------------------


_FIELD_NAMES: dict[type, frozenset[str]] = {}  # per message class, computed once (ingest decodes thousands a second)


@dataclass
class _Message:
    kind: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["v"] = PROTOCOL_VERSION
        return d

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        missing = [k for k in cls.required if k not in data]
        if missing:
            raise ProtocolError(f"{cls.kind} message lacks {', '.join(missing)}")
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
        kwargs = {k: v for k, v in data.items() if k in names}
        try:
            msg = cls(**kwargs)
            msg.validate()
        except ProtocolError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"{cls.kind} message is malformed: {exc}") from exc
        return msg

    def validate(self) -> None:  # overridden where fields need checks beyond presence
        pass


def _model_ok(model: Any, what: str) -> None:
    if model is None:
        return
    if not isinstance(model, dict) or not all(isinstance(model.get(k), str) for k in ("name", "version", "sha256")):
        raise ProtocolError(f"{what}.model must have string name, version and sha256")


@dataclass
class StateMessage(_Message):
    """Retained birth certificate of a device; ``status`` is ``online`` or ``offline`` (the Last Will)."""

    kind: ClassVar[str] = "state"
    required: ClassVar[tuple[str, ...]] = ("device_id", "status")
    device_id: str
    status: str
    ts: float = field(default_factory=time.time)
    agent_version: str = ""
    runtime: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    update: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        check_id(self.device_id, "device id")
        if self.status not in tuple(DeviceStatus):
            raise ProtocolError(f"state.status must be online or offline, got {self.status!r}")
        _model_ok(self.model, "state")


@dataclass
class DesiredMessage(_Message):
    """Retained: what the device should run. ``model`` carries name, version, sha256, url and size."""

    kind: ClassVar[str] = "desired"
    required: ClassVar[tuple[str, ...]] = ("model",)
    model: dict[str, Any]
    rollout_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def validate(self) -> None:
        _model_ok(self.model, "desired")
        if not isinstance(self.model.get("url"), str):
            raise ProtocolError("desired.model.url must be a string")


@dataclass
class EventMessage(_Message):
    """Update progress and outcome. ``event`` is e.g. downloading, verified, committed, rolled_back, failed."""

    kind: ClassVar[str] = "events"
    required: ClassVar[tuple[str, ...]] = ("device_id", "seq", "event")
    device_id: str
    seq: int
    event: str
    ts: float = field(default_factory=time.time)
    from_state: str | None = None
    to_state: str | None = None
    reason: str | None = None
    rollout_id: str | None = None
    model: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        check_id(self.device_id, "device id")
        if not isinstance(self.seq, int) or isinstance(self.seq, bool) or self.seq < 0:
            raise ProtocolError("events.seq must be a non-negative integer")
        if not isinstance(self.event, str) or not self.event:
            raise ProtocolError("events.event must be a non-empty string")
        _model_ok(self.model, "events")


@dataclass
class TelemetryMessage(_Message):
    """A batch of samples. Each sample: ``{"seq", "ts", "system": {...}, "inference": {version: {...}}}``.

    ``dropped`` is the number of samples the device's spool discarded (oldest first) since the last report.
    """

    kind: ClassVar[str] = "telemetry"
    required: ClassVar[tuple[str, ...]] = ("device_id", "samples")
    device_id: str
    samples: list[dict[str, Any]]
    dropped: int = 0
    ts: float = field(default_factory=time.time)

    def validate(self) -> None:
        check_id(self.device_id, "device id")
        if not isinstance(self.samples, list):
            raise ProtocolError("telemetry.samples must be a list")
        for s in self.samples:
            if (not isinstance(s, dict) or not isinstance(s.get("seq"), int)
                    or not isinstance(s.get("ts"), (int, float))):
                raise ProtocolError("each telemetry sample needs an integer seq and a numeric ts")
            for key in ("system", "inference"):
                if key in s and not isinstance(s[key], dict):
                    raise ProtocolError(f"telemetry sample {key} must be an object")
        if not isinstance(self.dropped, int) or self.dropped < 0:
            raise ProtocolError("telemetry.dropped must be a non-negative integer")


@dataclass
class CommandMessage(_Message):
    """fleet → device request: one of :class:`CommandName` (ping, rollback, update_status)."""

    kind: ClassVar[str] = "cmd"
    required: ClassVar[tuple[str, ...]] = ("id", "name")
    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


@dataclass
class CommandReply(_Message):
    kind: ClassVar[str] = "cmd/reply"
    required: ClassVar[tuple[str, ...]] = ("id", "ok")
    id: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


MESSAGE_TYPES: dict[str, type[_Message]] = {
    m.kind: m for m in (StateMessage, DesiredMessage, EventMessage, TelemetryMessage, CommandMessage, CommandReply)
}


def decode(channel: str, payload: bytes | str) -> _Message:
    """Parse a payload received on ``channel``; raise ProtocolError for anything that is not a valid v1 message."""
    cls = MESSAGE_TYPES.get(channel)
    if cls is None:
        raise ProtocolError(f"unknown channel {channel!r}")
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise ProtocolError(f"{channel} payload is not JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{channel} payload must be a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"{channel} payload has schema version {data.get('v')!r}, expected {PROTOCOL_VERSION}")
    return cls.from_dict(data)
