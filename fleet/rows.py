"""Pure mapping of protocol messages to store rows (no database, no MQTT)."""

from __future__ import annotations

from typing import Any

from edgekit.protocol import EventMessage, TelemetryMessage

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
        "extra": extra or None,
    }


def inference_rows(device_id: str, sample: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for version, fig in (sample.get("inference") or {}).items():
        if not isinstance(fig, dict):
            continue
        count, errors = fig.get("count", 0), fig.get("errors", 0)
        out.append({
            "device_id": device_id, "seq": sample["seq"], "ts": float(sample["ts"]), "model_version": str(version)[:64],
            "count": count if isinstance(count, int) and not isinstance(count, bool) else 0,
            "errors": errors if isinstance(errors, int) and not isinstance(errors, bool) else 0,
            "p50_ms": _num(fig.get("p50_ms")), "p95_ms": _num(fig.get("p95_ms")), "p99_ms": _num(fig.get("p99_ms")),
        })
    return out


def telemetry_rows(msg: TelemetryMessage, received: float) -> tuple[list[dict], list[dict]]:
    system, inference = [], []
    for s in msg.samples:
        system.append(system_row(msg.device_id, s, received))
        inference.extend(inference_rows(msg.device_id, s))
    return system, inference


def event_row(msg: EventMessage, received: float) -> dict[str, Any]:
    return {"device_id": msg.device_id, "seq": msg.seq, "ts": float(msg.ts), "received": received,
            "event": msg.event[:64], "from_state": msg.from_state, "to_state": msg.to_state,
            "reason": (msg.reason or None) and str(msg.reason)[:256], "rollout_id": msg.rollout_id,
            "model": msg.model, "detail": msg.detail or None}
