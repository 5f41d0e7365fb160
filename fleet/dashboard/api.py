"""What the dashboard shows and does, as plain functions over the fleet's own views and services.

Reads go through :mod:`fleet.views` (the CLI's views), :mod:`fleet.store` queries and the
:class:`~fleet.rollout.store.RolloutStore`; actions through the RolloutStore's operator commands and
:func:`fleet.rollout.service.create_rollout`. Nothing here reads or writes a table directly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgekit.errors import UsageError

from ..config import FleetContext
from ..views import device_detail, device_rows, fill_p95, parse_duration, telemetry_view

DEVICE_METRICS = ("cpu", "mem", "temp", "count", "errors", "p50_ms", "p95_ms", "p99_ms")
SORT_KEYS = ("id", "online", "model", "version", "last_seen", "p95_ms", "cpu", "temp", "update_state")
MAX_RANGE = 30 * 86400.0


@dataclass
class Fleet:
    """The fleet a dashboard serves: its context, its store's engine, the rollout store and the accounts."""

    ctx: FleetContext
    _bundles: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        from ..rollout.service import open_store
        from .users import UserStore

        self.rollouts = open_store(self.ctx)  # migrates the database (users and tokens included)
        self.engine = self.rollouts.engine
        self.users = UserStore(self.engine)

    @property
    def fleet_id(self) -> str:
        return self.ctx.fleet_id


# --- reading ---------------------------------------------------------------------------------------------------------


def _range(q: Mapping[str, str], default: str = "1h") -> float:
    secs = parse_duration(q.get("range") or default)
    if not 0 < secs <= MAX_RANGE:
        raise UsageError(f"range {q.get('range')!r} is out of bounds", hint="use 1m to 30d")
    return secs


def overview(f: Fleet, q: Mapping[str, str]) -> dict[str, Any]:
    """Counts online/offline, per model version and per update state; p95 and error rate per model version."""
    from ..store import fleet_inference_series

    now = time.time()
    since = now - _range(q)
    rows = device_rows(f.engine, f.fleet_id, now, p95=False)  # counts only: no inference window
    by_version: dict[str, int] = {}
    by_state: dict[str, int] = {}
    for r in rows:
        key = f"{r['model']} {r['version']}" if r["model"] else "none"
        by_version[key] = by_version.get(key, 0) + 1
        st = r["update_state"] or "unknown"
        by_state[st] = by_state.get(st, 0) + 1
    online = sum(1 for r in rows if r["online"])
    bucket = max(10.0, (now - since) / 120)
    series = fleet_inference_series(f.engine, since, now, bucket)
    active = [_rollout_summary(r) for r in f.rollouts.list(active_only=True)]
    # no clock values in the answer: the live stream sends it again only when something changed
    return {"fleet": f.fleet_id, "devices": len(rows), "online": online,
            "offline": len(rows) - online, "by_version": dict(sorted(by_version.items())),
            "by_update_state": dict(sorted(by_state.items())), "bucket_seconds": bucket, "series": series,
            "active_rollouts": active}


def filter_devices(rows: list[dict[str, Any]], q: Mapping[str, str]) -> list[dict[str, Any]]:
    """Pure filter + sort of device rows by the query: tag=K=V, group, online=yes|no, model, version, q (id part),
    sort=<column>, order=asc|desc."""
    tag, group, online = q.get("tag") or "", q.get("group") or "", (q.get("online") or "").lower()
    model, version, text = q.get("model") or "", q.get("version") or "", (q.get("q") or "").lower()
    if tag:
        k, sep, v = tag.partition("=")
        if not sep or not k:
            raise UsageError(f"tag filter {tag!r} is not KEY=VALUE", hint="e.g. tag=site=lab")
    if online not in ("", "yes", "no", "true", "false"):
        raise UsageError(f"online filter {online!r} is not yes or no")
    out = []
    for r in rows:
        if tag and str((r["tags"] or {}).get(k)) != v:
            continue
        if group and group not in (r["groups"] or []):
            continue
        if online and r["online"] != (online in ("yes", "true")):
            continue
        if model and r["model"] != model or version and r["version"] != version:
            continue
        if text and text not in r["id"].lower():
            continue
        out.append(r)
    key = q.get("sort") or "id"
    if key not in SORT_KEYS:
        raise UsageError(f"cannot sort by {key!r}", hint=f"use one of {', '.join(SORT_KEYS)}")
    present = [r for r in out if r[key] is not None]
    missing = [r for r in out if r[key] is None]
    present.sort(key=lambda r: (r[key], r["id"]), reverse=(q.get("order") == "desc"))
    return present + missing  # empty cells last either way


def _int(q: Mapping[str, str], name: str, default: int, hi: int) -> int:
    try:
        v = int(q.get(name) or default)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {q.get(name)!r}") from None
    if not 0 <= v <= hi:
        raise UsageError(f"{name} must be between 0 and {hi}")
    return v


def devices(f: Fleet, q: Mapping[str, str]) -> dict[str, Any]:
    """The filtered, sorted page of device rows. The p95 column (a 5-minute window over the inference samples)
    is read for the whole fleet only when the rows are sorted by it, else for the page's rows alone."""
    now = time.time()
    by_p95 = q.get("sort") == "p95_ms"
    rows = filter_devices(device_rows(f.engine, f.fleet_id, now, p95=by_p95), q)
    limit, offset = _int(q, "limit", 200, 10000), _int(q, "offset", 0, 10 ** 9)
    page = rows[offset:offset + limit]
    if not by_p95:
        fill_p95(f.engine, page, now)
    return {"total": len(rows), "offset": offset, "limit": limit, "devices": page}


def device(f: Fleet, q: Mapping[str, str], device_id: str) -> dict[str, Any]:
    from ..store import events

    now = time.time()
    d = device_detail(f.engine, f.fleet_id, device_id, now)
    d["history"] = events(f.engine, device_id=device_id, since=now - _range(q, "30d"))[-200:]
    d["desired"] = f.rollouts.desired().get(device_id)
    return d


def telemetry(f: Fleet, q: Mapping[str, str], device_id: str) -> dict[str, Any]:
    metrics = [m for m in (q.get("metrics") or ",".join(DEVICE_METRICS)).split(",") if m]
    bad = [m for m in metrics if m not in DEVICE_METRICS]
    if bad:
        raise UsageError(f"unknown metric {bad[0]!r}", hint=f"use {', '.join(DEVICE_METRICS)}")
    view = telemetry_view(f.engine, f.fleet_id, device_id, _range(q), metrics)
    view.pop("since", None), view.pop("until", None)  # clock values: see overview()
    return view


def _rollout_summary(r) -> dict[str, Any]:
    from ..rollout.store import rollout_view

    v = rollout_view(r)
    v.pop("assignments")
    return v


def rollouts(f: Fleet, q: Mapping[str, str]) -> list[dict[str, Any]]:
    rs = f.rollouts.list(active_only=q.get("active") in ("1", "yes", "true"))
    return [_rollout_summary(r) for r in reversed(rs)]


def rollout(f: Fleet, q: Mapping[str, str], rollout_id: str) -> dict[str, Any]:
    from ..rollout.store import rollout_view

    v = rollout_view(f.rollouts.get(rollout_id))
    v["audit"] = f.rollouts.audit(rollout_id)
    return v


def bundles(f: Fleet, q: Mapping[str, str]) -> list[dict[str, Any]]:
    """Bundles published to the artifact store (name, version, sha256), newest first; read once per file."""
    from edgekit.bundle import read_bundle
    from edgekit.errors import EdgekitError

    out = []
    for p in sorted(Path(f.ctx.paths.artifacts).glob("*.ekb"), key=lambda p: p.stat().st_mtime, reverse=True):
        with f._lock:
            info = f._bundles.get(p.name)
        if info is None:
            try:
                b = read_bundle(p)
            except EdgekitError:
                continue
            info = {"sha256": b.sha256, "name": b.name, "version": b.version, "size": b.size,
                    "published_at": p.stat().st_mtime}
            with f._lock:
                f._bundles[p.name] = info
        out.append(info)
    return out


# --- acting (operators only; the caller checks the role) ------------------------------------------------------------

OPERATOR_ACTIONS = ("pause", "resume", "abort", "approve")


def command(f: Fleet, rollout_id: str, action: str, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    if action not in OPERATOR_ACTIONS:
        raise UsageError(f"unknown action {action!r}", hint=f"use one of {', '.join(OPERATOR_ACTIONS)}")
    message = str(body.get("message") or "")[:500]
    r = f.rollouts.command(rollout_id, action, message or f"{actor}: {action} (dashboard)", actor=actor)
    return _rollout_summary(r)


POLICY_FIELDS = ("stages", "success_threshold", "failure_threshold", "max_p95_regression", "p95_slack_ms",
                 "max_error_rate", "min_inferences", "soak", "device_timeout", "on_failure", "require_approval")


def create(f: Fleet, actor: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A rollout of a published bundle (by sha256) to a target, with the CLI's policy options."""
    from ..rollout.service import create_rollout

    sha = str(body.get("bundle_sha256") or "")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise UsageError("bundle_sha256 must be the 64-hex sha256 of a published bundle",
                         hint="pick one from GET /api/v1/bundles")
    path = Path(f.ctx.paths.artifacts) / f"{sha}.ekb"
    if not path.is_file():
        raise UsageError(f"no published bundle {sha[:12]}", hint="publish it with 'edgekit fleet rollout create'")
    target = str(body.get("target") or "")
    if not target:
        raise UsageError("target is missing", hint="tag:KEY=VALUE | group:NAME | devices:ID1,ID2 | all")
    unknown = sorted(set(body) - set(POLICY_FIELDS) - {"bundle_sha256", "target"})
    if unknown:
        raise UsageError(f"unknown field {unknown[0]!r}", hint=f"policy fields: {', '.join(POLICY_FIELDS)}")
    options = {k: body[k] for k in POLICY_FIELDS if body.get(k) not in (None, "")}
    r = create_rollout(f.ctx, f.rollouts, path, target, actor=actor, **options)
    return _rollout_summary(r)
