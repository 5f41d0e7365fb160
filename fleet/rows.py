"""Pure mapping of protocol messages to store rows (no database, no MQTT)."""

from __future__ import annotations

from typing import Any

import math

from edgekit.errors import ProtocolError
from edgekit.protocol import EventMessage, TelemetryMessage

INT64_MAX = 2**63 - 1

SYSTEM_COLUMNS = ("cpu", "mem", "temp", "disk", "load1")
INFERENCE_COLUMNS = ("count", "errors", "p50_ms", "p95_ms", "p99_ms")
# metric names accepted by queries and the CLI: column -> table
METRICS = {**{c: "telemetry" for c in SYSTEM_COLUMNS}, **{c: "inference" for c in INFERENCE_COLUMNS}}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _temp(system: dict[str, Any]) -> float | None:
    t = system.get("temperature_c", system.get("temp_c", system.get("temp")))
    if isinstance(t, dict):
        vals = [v for v in (_num(x) for x in t.values()) if v is not None]
        return max(vals) if vals else None
    return _num(t)


def _load1(system: dict[str, Any]) -> float | None:
    load = system.get("load")
    if isinstance(load, list) and load:
        return _num(load[0])
    return _num(system.get("load1"))


_SYSTEM_KEYS = {"cpu_percent", "cpu", "mem_percent", "mem", "temperature_c", "temp_c", "temp", "disk_percent",
                "disk", "load", "load1"}


def system_row(device_id: str, sample: dict[str, Any], received: float) -> dict[str, Any]:
    system = sample.get("system") or {}
    extra = {k: v for k, v in system.items() if k not in _SYSTEM_KEYS}
    return {
        "device_id": device_id, "seq": sample["seq"], "ts": float(sample["ts"]), "received": received,
        "cpu": _num(system.get("cpu_percent", system.get("cpu"))),
        "mem": _num(system.get("mem_percent", system.get("mem"))),
        "temp": _temp(system),
        "disk": _num(system.get("disk_percent", system.get("disk"))),
        "load1": _load1(system),
        "extra": clean_json(extra) or None,
    }


def inference_rows(device_id: str, sample: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for version, fig in (sample.get("inference") or {}).items():
        if not isinstance(fig, dict):
            continue
        count, errors = fig.get("count", 0), fig.get("errors", 0)
        out.append({
            "device_id": device_id, "seq": sample["seq"], "ts": float(sample["ts"]), "model_version": str(version)[:64],
            "count": count if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= INT64_MAX else 0,
            "errors": errors if isinstance(errors, int) and not isinstance(errors, bool) and 0 <= errors <= INT64_MAX
            else 0,
            "p50_ms": _num(fig.get("p50_ms")), "p95_ms": _num(fig.get("p95_ms")), "p99_ms": _num(fig.get("p99_ms")),
        })
    return out


def clean_json(v: Any, depth: int = 0) -> Any:
    """JSON both backends store: no NaN/Infinity (PostgreSQL rejects them), no int beyond int64, bounded depth."""
    if depth > 20:
        return None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, int) and not isinstance(v, bool):
        return v if -INT64_MAX <= v <= INT64_MAX else None
    if isinstance(v, dict):
        return {str(k): clean_json(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [clean_json(x, depth + 1) for x in v]
    return v


def short_str(v: Any, n: int) -> str | None:
    """A value for a VARCHAR(n) column: None stays None, anything else becomes a string of at most n chars."""
    if v is None:
        return None
    return (v if isinstance(v, str) else str(v))[:n]


def _check_key(seq, ts, what: str) -> None:
    """Values the store's columns can hold: seq/counters in int64, ts a finite number."""
    if not 0 <= seq <= INT64_MAX:
        raise ProtocolError(f"{what} seq {seq} is out of range")
    if not math.isfinite(float(ts)) or abs(float(ts)) > 1e11:
        raise ProtocolError(f"{what} ts {ts!r} is not a plausible UNIX time")


def telemetry_rows(msg: TelemetryMessage, received: float) -> tuple[list[dict], list[dict]]:
    """Rows of a telemetry message; raises ProtocolError for values no column can hold."""
    system, inference = [], []
    for s in msg.samples:
        _check_key(s["seq"], s["ts"], "telemetry sample")
        system.append(system_row(msg.device_id, s, received))
        inference.extend(inference_rows(msg.device_id, s))
    return system, inference


def event_row(msg: EventMessage, received: float) -> dict[str, Any]:
    _check_key(msg.seq, msg.ts, "event")
    if not isinstance(msg.ts, (int, float)) or isinstance(msg.ts, bool):
        raise ProtocolError("event ts must be a number")
    return {"device_id": msg.device_id, "seq": msg.seq, "ts": float(msg.ts), "received": received,
            "event": short_str(msg.event, 64), "from_state": short_str(msg.from_state, 32),
            "to_state": short_str(msg.to_state, 32), "reason": short_str(msg.reason or None, 256),
            "rollout_id": short_str(msg.rollout_id, 64), "model": clean_json(msg.model),
            "detail": clean_json(msg.detail) or None}
