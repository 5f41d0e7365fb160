"""Rollout operations on a fleet (a :class:`fleet.config.FleetContext`): open the store, create a rollout from a
bundle file, fleet-wide rollback, and the engine thread the fleet service runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgekit.bundle import read_bundle

from .errors import NoFittingPayloadError, NoTargetDevicesError, RolloutError
from .model import BundleRef, Rollout, RolloutKind
from .payload_plan import PayloadPlan, plan_payloads
from .policy import build_policy
from .store import RolloutStore

_migrated: set[str] = set()


def open_store(ctx: Any) -> RolloutStore:
    """The rollout store of a fleet, with its database migrated to the newest schema (once per process)."""
    from fleet.db import upgrade

    url = ctx.db_url
    if url not in _migrated:
        upgrade(url)
        _migrated.add(url)
    return RolloutStore(ctx.engine(), ctx.fleet_id)


def publish(ctx: Any, path: str | os.PathLike) -> BundleRef:
    """Verify ``path`` against the fleet key, copy it to the artifact store and describe it for ``desired``."""
    url = ctx.publish_bundle(path)
    b = read_bundle(path, pubkey=ctx.signing_pub_path)
    return BundleRef(b.name, b.version, b.sha256, url, b.size, tuple(b.meta.payload_targets),
                     int(b.manifest["schema_version"]))


def target_devices(ctx: Any, target: str) -> list[str]:
    from fleet.registry import Registry

    return sorted(d.id for d in Registry(ctx.engine(), ctx.fleet_id).select(target))


def payload_plan(ctx: Any, bundle: str | os.PathLike, devices: list[str]) -> PayloadPlan:
    """Which payload of ``bundle`` each device runs, and which devices can run none (fleet/rollout/payload_plan.py)."""
    from fleet.registry import Registry

    from edgekit.errors import BundleError
    from fleet.artifacts import ArtifactError

    try:
        b = read_bundle(bundle, pubkey=ctx.signing_pub_path)
    except BundleError as exc:  # the same refusal as publishing it would give
        raise ArtifactError(f"refusing to publish {bundle}: {exc.message}", hint=exc.hint) from exc
    wanted = set(devices)
    caps = {d.id: d.capabilities for d in Registry(ctx.engine(), ctx.fleet_id).select("all") if d.id in wanted}
    return plan_payloads(b.meta.payload_targets, int(b.manifest["schema_version"]), caps)


def create_rollout(ctx: Any, store: RolloutStore, bundle: str | os.PathLike, target: str, *, actor: str = "operator",
                   skip_unfit: bool = False, plan_out: dict[str, Any] | None = None, **options: Any) -> Rollout:
    """Validate everything first (policy, target, bundle, a payload for every device), then publish the bundle and
    insert the rollout. ``plan_out`` receives the payload plan (``payloads``: device -> target, ``unfit``)."""
    policy = build_policy(**{k: v for k, v in options.items() if v is not None})
    devices = target_devices(ctx, target)
    if not devices:
        raise NoTargetDevicesError(f"target {target} matches no provisioned device")
    if not Path(bundle).is_file():
        raise RolloutError(f"bundle {bundle} does not exist", hint="pass the path of a .ekb file")
    plan = payload_plan(ctx, bundle, devices)
    if plan.unfit and not skip_unfit:
        first = next(iter(plan.unfit))
        raise NoFittingPayloadError(f"{len(plan.unfit)} of {len(devices)} target device(s) can run no payload of "
                                    f"this bundle ({', '.join(plan.unfit)}); {first}: {plan.unfit[first]}")
    devices = [d for d in devices if d in plan.assign]
    if not devices:
        raise NoFittingPayloadError("no target device can run a payload of this bundle")
    store.check_free(devices)
    ref = publish(ctx, bundle)
    if plan_out is not None:
        plan_out.update(plan.to_dict())
    return store.create(ref, target, devices, policy, actor=actor)


def find_previous_bundle(store: RolloutStore, to: str | None) -> BundleRef:
    """The bundle a rollback returns to: by version, sha256 (prefix) or, by default, the newest bundle rolled out
    before the newest rollout's bundle."""
    history = [r.bundle for r in sorted(store.list(), key=lambda r: r.created_at)]
    if not history:
        raise RolloutError("there is no earlier rollout to go back to",
                           hint="roll a bundle out with 'edgekit fleet rollout create'")
    if to is None:
        newest = history[-1].sha256
        earlier = [b for b in history if b.sha256 != newest]
        if not earlier:
            raise RolloutError("every rollout so far used the same bundle; there is nothing earlier to go back to",
                               hint="name a bundle with --to")
        return earlier[-1]
    matches = [b for b in reversed(history) if b.version == to or (len(to) >= 8 and b.sha256.startswith(to))]
    if not matches:
        known = ", ".join(sorted({f"{b.version} ({b.sha256[:12]})" for b in history}))
        raise RolloutError(f"no earlier rollout used bundle {to!r}",
                           hint=f"use one of: {known}, or pass a bundle file")
    return matches[0]


def rollback_fleet(ctx: Any, store: RolloutStore, to: str | None, target: str = "all") -> Rollout:
    """Every target device back to a previous bundle in one stage; active rollouts on them end as superseded."""
    if to is not None and Path(to).is_file():
        ref = publish(ctx, to)
    else:
        ref = find_previous_bundle(store, to)
    policy = build_policy(stages="100%", soak="0")
    return store.create(ref, target, target_devices(ctx, target), policy, kind=RolloutKind.ROLLBACK, supersede=True,
                        message=f"fleet-wide rollback of {target} to {ref.name} {ref.version}")


def start_engine(ctx: Any, link: Any, interval: float = 1.0, lease: Any = None):
    """Start the rollout engine inside a fleet service: ``ctx`` is its FleetContext, ``link`` its connected
    :class:`fleet.link.FleetLink`, ``lease`` its :class:`fleet.lease_store.LeaseKeeper` (None: always run). The ticks
    decide; a second thread publishes the desired states they commit (only while this replica holds the lease).
    Returns the :class:`~fleet.rollout.outbox.EngineWithOutbox` (``.engine``, ``.outbox_stats()``, ``.stop()``)."""
    from .engine import RolloutEngine
    from .outbox import EngineWithOutbox

    return EngineWithOutbox(RolloutEngine(open_store(ctx), link, lease=lease), interval).start()
