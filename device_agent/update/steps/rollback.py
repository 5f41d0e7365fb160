"""ROLLING_BACK and FAILED: restore the previous model, then finish the failed update's bookkeeping.

The offline ``edgekit agent rollback`` runs these same steps on a host without a serving slot: the store pointers
move and nothing is loaded (``how = "offline"``); the next agent start serves the restored model.
"""

from __future__ import annotations

from edgekit.errors import EdgekitError

from ..errors import UpdateFailed
from ..journal import crash_point
from ..machine import Event, Reason
from .context import StepContext


def _restore(ctx: StepContext, prev) -> str:
    """Make ``prev`` current (and serving, where something serves); how it was done."""
    slot = ctx.host.slot
    if slot is None:
        ctx.store.set_current(prev.sha256)
        return "offline"
    serving = slot.entry
    if serving is not None and serving.sha256 == prev.sha256:
        ctx.store.set_current(prev.sha256)  # no-op when the pointer already moved back
        return "already serving"
    loaded_prev = slot.previous
    if loaded_prev is not None and loaded_prev[1].sha256 == prev.sha256:
        ctx.store.set_current(prev.sha256)
        crash_point("AFTER_ROLLBACK_POINTER")
        slot.rollback()  # instant: the previous interpreter is still loaded
        return "instant"
    try:
        runner = ctx.host.load_entry(prev)
    except EdgekitError as exc:
        raise UpdateFailed(Reason.ROLLBACK_FAILED, f"the previous model cannot be loaded: {exc.message}") from exc
    ctx.store.set_current(prev.sha256)
    crash_point("AFTER_ROLLBACK_POINTER")
    slot.swap(runner, prev)
    return "reloaded"


def rolling_back(ctx: StepContext) -> None:
    prev_ref = ctx.rec.previous
    if not prev_ref or not ctx.store.has(prev_ref["sha256"]):
        raise UpdateFailed(Reason.NO_PREVIOUS, "there is no previous model to roll back to; the current one "
                           "keeps serving")
    prev = ctx.store.get(prev_ref["sha256"])
    failed_sha = (ctx.rec.target or {}).get("sha256")
    how = _restore(ctx, prev)
    # the failed model must not linger as "previous": a later manual rollback would bring it back
    stale = ctx.store.previous()
    if failed_sha and failed_sha != prev.sha256 and stale is not None and stale.sha256 == failed_sha:
        ctx.store.set_previous(None)
    if ctx.host.slot is not None:
        ctx.host.slot.drop_previous()
    ctx.probation = {}
    ctx.host.publish_state()
    ctx.transition(Event.ROLLED_BACK, detail={"restored": prev.model_ref(), "how": how})


def failed(ctx: StepContext) -> None:
    removed = ctx.clean_up()
    ctx.transition(Event.DONE, detail={"gc_removed": removed})
