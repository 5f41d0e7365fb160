"""The journal of an update: record, history and event, always written in this order.

:meth:`Journal.transition` applies one machine transition: the record is replaced atomically first (so a restart
sees the new state), the history line is appended and fsynced, the event is spooled durably for the ``events``
topic, and only then may the new state's side effects run. ``EDGEKIT_TEST_CRASH_AT`` (test instrumentation) kills the
process right after that, at a chosen point.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .machine import Event, Reason, State
from .persist import Record, StateFile, Transition, advance

log = logging.getLogger("edgekit.agent.update")

#: Test instrumentation: ``EDGEKIT_TEST_CRASH_AT=<point>[,<point>…]`` makes the agent SIGKILL itself at that point —
#: a state name (right after the state is persisted and its event spooled, and before its action runs, also when a
#: restart resumes it) or one of :data:`CRASH_POINTS`. The kill is real; only its timing is chosen.
CRASH_ENV = "EDGEKIT_TEST_CRASH_AT"
CRASH_POINTS = ("DOWNLOAD_MID", "AFTER_SET_CURRENT", "AFTER_ROLLBACK_POINTER")
#: states after which the retained birth message is refreshed (its ``update`` summary changed meaningfully)
_STATE_REFRESH = {State.IDLE.value, State.FAILED.value, State.PROBATION.value, State.DOWNLOADING.value}


def crash_point(name: str) -> None:
    points = os.environ.get(CRASH_ENV, "")
    if points and name in points.split(","):
        log.warning("test crash point %s reached: killing the agent", name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def new_update_id(sha256: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{sha256[:8]}-{uuid.uuid4().hex[:4]}"


def event_fields(t: Transition, **extra: Any) -> dict[str, Any]:
    """The :class:`~edgekit.protocol.EventMessage` fields (without device_id/seq) that report one history line."""
    model = {k: str(t.target.get(k, "")) for k in ("name", "version", "sha256")} if t.target else None
    detail = dict(t.detail, update_id=t.update_id, seq=t.seq)
    if t.previous:
        detail["previous"] = {k: t.previous.get(k) for k in ("name", "version", "sha256")}
    detail.update(extra)
    return {"event": t.name, "ts": t.ts, "from_state": t.src, "to_state": t.dst, "reason": t.reason,
            "rollout_id": t.rollout_id, "model": model, "detail": detail}


class Journal:
    def __init__(self, directory: str | os.PathLike, publish_event: Callable[..., Any],
                 publish_state: Callable[[], None] | None = None):
        self.dir = Path(directory)
        self.files = StateFile(self.dir)
        self.rec: Record = self.files.load()
        self._publish_event = publish_event
        self._publish_state = publish_state

    def transition(self, event: Event, reason: Reason | str | None = None, detail: dict | None = None,
                   **changes: Any) -> Record:
        new, t = advance(self.rec, event, reason=reason, detail=detail, **changes)
        self.files.save(new)
        self.files.append_history(t)
        self.rec = new
        self._report(t)
        log.info("update %s: %s -> %s%s", t.update_id or "-", t.src, t.dst, f" ({t.reason})" if t.reason else "")
        crash_point(new.state)
        return new

    def note(self, name: str, **detail: Any) -> None:
        """An event that is not a transition (resumed, rejected, rollback_refused): history + event only."""
        rec = self.rec
        t = Transition(seq=rec.seq, ts=time.time(), update_id=rec.update_id, src=rec.state, event=name,
                       dst=rec.state, name=name, reason=detail.pop("reason", None),
                       target=detail.pop("target", None) or rec.target, previous=rec.previous,
                       rollout_id=detail.pop("rollout_id", None) or rec.rollout_id, detail=detail)
        self.files.append_history(t)
        self._report(t)

    def update(self, **changes: Any) -> Record:
        """Persist record fields that are not a transition (the crash counter, a clean stop)."""
        self.rec = replace(self.rec, **changes)
        self.files.save(self.rec)
        return self.rec

    def _report(self, t: Transition) -> None:
        try:
            self._publish_event(**event_fields(t))
        except Exception:  # noqa: BLE001 - the history is the record of truth; the event is a report of it
            log.exception("cannot spool the %s event", t.name)
        if t.dst in _STATE_REFRESH and self._publish_state is not None:
            self._publish_state()
