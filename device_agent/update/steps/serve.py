"""SWITCHING, PROBATION and COMMITTED: serve the new model, watch it, then keep it."""

from __future__ import annotations

import time
from typing import Any

from edgekit.errors import EdgekitError

from ..errors import UpdateFailed
from ..journal import crash_point
from ..machine import Event, Reason
from ..policy import probation_verdict
from .context import StepContext, Stopped


def switch(ctx: StepContext) -> None:
    target, host, slot = ctx.target, ctx.host, ctx.slot
    entry = ctx.store.get(target["sha256"])
    try:
        runner = host.load_entry(entry)
    except EdgekitError as exc:
        raise UpdateFailed(Reason.SWITCH_FAILED, f"the new model cannot be loaded for serving: {exc.message}",
                           hint=exc.hint) from exc
    prev_entry = slot.entry
    baseline = host.stats.snapshot(prev_entry.stats_key).to_dict() if prev_entry is not None else None
    start_new = host.stats.snapshot(entry.stats_key)
    ctx.store.set_current(entry.sha256)
    crash_point("AFTER_SET_CURRENT")
    slot.swap(runner, entry)
    if not ctx.policy.keep_previous_loaded:
        slot.drop_previous()
    ctx.probation = {"baseline": baseline, "start": start_new, "key": entry.stats_key}
    host.publish_state()
    until = time.time() + ctx.policy.probation_s
    ctx.transition(Event.SWITCHED, probation_until=until,
                   detail={"probation_s": ctx.policy.probation_s, "baseline": baseline})


def probation(ctx: StepContext) -> None:
    if not ctx.probation:  # resumed cleanly into probation (not a crash): judge from now on
        entry = ctx.store.get(ctx.target["sha256"])
        ctx.probation = {"baseline": None, "start": ctx.host.stats.snapshot(entry.stats_key), "key": entry.stats_key}
    deadline = ctx.rec.probation_until or time.time()
    while not ctx.stop.is_set():
        wanted = ctx.take_rollback()
        if wanted:
            ctx.transition(Event.ROLLBACK, wanted)
            return
        if _desired_is_previous(ctx):  # the fleet went back (an aborted rollout): no need to wait
            ctx.transition(Event.ROLLBACK, Reason.SUPERSEDED,
                           detail={"message": "the desired model is the previous one again"})
            return
        figures = _figures(ctx)
        verdict = probation_verdict(figures, ctx.probation.get("baseline"), ctx.policy)
        if verdict is not None:
            raise UpdateFailed(verdict, f"probation failed: {verdict.value}",
                               detail={"figures": figures, "baseline": ctx.probation.get("baseline")})
        if time.time() >= deadline:
            ctx.transition(Event.PROBATION_PASSED, detail={"figures": figures})
            return
        with ctx.cond:
            ctx.cond.wait(min(ctx.policy.check_interval_s, max(deadline - time.time(), 0.01)))
    raise Stopped()


def _desired_is_previous(ctx: StepContext) -> bool:
    desired = ctx.desired()
    prev = ctx.rec.previous
    return bool(desired is not None and prev and desired.model.get("sha256") == prev["sha256"])


def _figures(ctx: StepContext) -> dict[str, Any]:
    p = ctx.probation
    snap = ctx.host.stats.snapshot(p["key"])
    return (snap - p["start"]).to_dict()


def committed(ctx: StepContext) -> None:
    ctx.slot.drop_previous()  # still loadable from the store (GC keeps current + previous)
    ctx.probation = {}
    removed = ctx.clean_up()
    ctx.transition(Event.DONE, detail={"gc_removed": removed})
