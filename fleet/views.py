"""Data behind the CLI views (pure functions over store queries; rendering lives in cli_views)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Engine

from edgekit.durations import ago, parse_duration

from .registry import Registry
from .store import inference_summary, latest_system, series

__all__ = ["ago", "parse_duration", "sparkline", "text_plot", "device_rows", "telemetry_view"]

SPARKS = "▁▂▃▄▅▆▇█"
P95_WINDOW = 300.0


def sparkline(values: list[float], width: int = 60) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    if len(vals) > width:  # average into width buckets
        step = len(vals) / width
        vals = [sum(vals[int(i * step):max(int((i + 1) * step), int(i * step) + 1)])
                / len(vals[int(i * step):max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)]
    lo, hi = min(vals), max(vals)
    span = hi - lo
    return "".join(SPARKS[0] if span == 0 else SPARKS[min(7, int((v - lo) / span * 7.999))] for v in vals)


def text_plot(values: list[float], width: int = 72, height: int = 10) -> str:
    """A block chart: one column per (averaged) point, ``height`` rows, y labels at the top and bottom."""
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    if len(vals) > width:
        step = len(vals) / width
        vals = [sum(c) / len(c) for c in (vals[int(i * step):max(int((i + 1) * step), int(i * step) + 1)]
                                          for i in range(width))]
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    levels = [(v - lo) / span * height for v in vals]
    rows = []
    for r in range(height, 0, -1):
        line = "".join("█" if lv >= r else (SPARKS[int((lv - r + 1) * 8)] if lv > r - 1 else " ") for lv in levels)
        label = f"{hi:>10.2f} " if r == height else (f"{lo:>10.2f} " if r == 1 else " " * 11)
        rows.append(label + "│" + line)
    return "\n".join(rows)


def device_rows(engine: Engine, fleet: str, now: float | None = None, *, p95: bool = True) -> list[dict[str, Any]]:
    """One row per provisioned device: registry fields + newest CPU/temperature + p95 of its current model.

    With ``p95=False`` the rows carry ``p95_ms: None`` and the 5-minute inference window is not read: for callers
    that show only some rows (:func:`fill_p95` then fills those) or no p95 at all."""
    now = now or time.time()
    # the registry with each device's newest figures in one query (device_latest, no telemetry scan); the
    # 5-minute inference window for the whole fleet at once (no IN list of thousands of ids)
    devices = Registry(engine, fleet).summaries()
    if not devices:
        return []
    inf = inference_summary(engine, now - P95_WINDOW) if p95 else None
    empty: dict[str, dict[str, Any]] = {}
    return [{"id": d.id, "online": d.online, "model": d.model_name, "version": d.model_version,
             "last_seen": d.last_seen,
             "p95_ms": None if inf is None else current_model_figures(d, inf.get(d.id, empty)).get("p95_ms"),
             "cpu": d.cpu, "temp": d.temp, "update_state": d.update_state, "tags": d.tags or {},
             "groups": d.groups or []} for d in devices]


def fill_p95(engine: Engine, rows: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """Set ``p95_ms`` of these rows (of :func:`device_rows`) as device_rows would: the window of these devices
    only, read through the per-device index."""
    if not rows:
        return rows
    now = now or time.time()
    inf = inference_summary(engine, now - P95_WINDOW, [r["id"] for r in rows])
    empty: dict[str, dict[str, Any]] = {}
    for r in rows:
        r["p95_ms"] = _figures(r["model"], r["version"], inf.get(r["id"], empty)).get("p95_ms")
    return rows


def model_keys(name: str | None, version: str | None) -> list[str]:
    """Keys a device may use for its current model in telemetry: the agent reports ``name@version``."""
    return [k for k in (f"{name}@{version}" if name and version else None, version) if k]


def current_model_figures(d: Any, inf: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return _figures(d.model_name, d.model_version, inf)


def _figures(name: str | None, version: str | None, inf: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for k in model_keys(name, version):
        if k in inf:
            return inf[k]
    return max(inf.values(), key=lambda v: v["count"]) if inf else {}


def device_detail(engine: Engine, fleet: str, device_id: str, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    d = Registry(engine, fleet).get(device_id)
    out = d.to_dict()
    out["latest"] = latest_system(engine, [device_id]).get(device_id)
    out["inference_5m"] = inference_summary(engine, now - P95_WINDOW, [device_id]).get(device_id, {})
    from .store import events

    out["recent_events"] = events(engine, device_id=device_id, since=now - 7 * 86400)[-10:]
    return out


def telemetry_view(engine: Engine, fleet: str, device_id: str, since_s: float, metrics: list[str],
                   now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    Registry(engine, fleet).get(device_id)  # unknown device → UnknownDeviceError
    out = {"device_id": device_id, "since": now - since_s, "until": now, "metrics": {}}
    for m in metrics:
        pts = series(engine, device_id, m, now - since_s, now)
        vals = [p["value"] for p in pts]
        out["metrics"][m] = {
            "points": pts, "n": len(pts),
            "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "last": vals[-1] if vals else None, "mean": sum(vals) / len(vals) if vals else None}
    return out
