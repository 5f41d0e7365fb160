"""Local update commands on the device: ``edgekit agent rollback`` and ``edgekit agent history``.

A running agent holds ``<data_dir>/update/lock`` (flock). :func:`rollback` asks a running agent through the request
file ``update/rollback.request`` (its updater polls it) and waits for the outcome in the history; with no agent
running it rolls back itself, through the same table, record and history, and spools the events so the fleet learns
of it when the agent next connects.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import control
from .errors import RollbackError
from .journal import Journal, new_update_id
from .machine import Event, Reason, State
from .persist import StateFile, read_history

OUTCOMES = {"rolled_back", "failed", "rollback_refused"}


def update_dir(config: Any) -> Path:
    return Path(config.data_dir) / "update"


def history(config: Any, limit: int | None = None) -> list[dict[str, Any]]:
    items = list(read_history(update_dir(config) / "history.jsonl"))
    return items[-limit:] if limit else items


def rollback(config: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Return to the previous model; a dict describing the outcome (``mode``: ``agent`` or ``offline``)."""
    directory = update_dir(config)
    fd = control.try_lock(directory)
    if fd is not None:  # no agent runs: roll back here
        try:
            return _offline_rollback(config)
        finally:
            control.release(fd)
    state = StateFile(directory).load().state_enum
    if state not in (State.IDLE, State.PROBATION):
        raise RollbackError(f"cannot roll back while an update is in {state.value}",
                            hint="wait for it to finish (edgekit agent history shows its progress), then roll back")
    seen = len(list(read_history(directory / "history.jsonl")))
    control.post_rollback_request(directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in list(read_history(directory / "history.jsonl"))[seen:]:
            if item.get("name") in OUTCOMES:
                if item["name"] != "rolled_back":
                    raise RollbackError(f"the agent did not roll back: {item.get('reason') or item['name']}"
                                        + (f" ({item['detail'].get('message')})" if item.get("detail", {}).get(
                                            "message") else ""))
                return {"mode": "agent", "restored": item.get("detail", {}).get("restored"),
                        "from": item.get("target"), "reason": item.get("reason")}
        time.sleep(0.1)
    control.withdraw_rollback_request(directory)
    raise RollbackError(f"the running agent did not roll back within {timeout:.0f} s",
                        hint="check 'edgekit agent history' and the agent's log")


def _offline_rollback(config: Any) -> dict[str, Any]:
    from ..spool import Spool
    from ..store import ModelStore

    state = StateFile(update_dir(config)).load().state_enum
    if state is not State.IDLE:
        raise RollbackError(f"an update is in {state.value} and the agent is not running",
                            hint="start the agent: it resumes the update or rolls it back by itself")
    store = ModelStore(Path(config.data_dir) / "store")
    cur, prev = store.current(), store.previous()
    if cur is None or prev is None:
        raise RollbackError("there is no previous model to roll back to")
    spool = Spool(Path(config.data_dir) / "spool.sqlite", max_items=config.spool.max_items)
    try:
        journal = Journal(update_dir(config), lambda **fields: spool.append(
            "events", dict(fields, detail=dict(fields["detail"], offline=True))))
        journal.transition(Event.ROLLBACK, Reason.MANUAL, update_id=new_update_id(cur.sha256),
                           target=cur.model_ref(), previous=prev.model_ref())
        store.set_current(prev.sha256)
        store.set_previous(None)  # the model rolled away from is not a rollback target
        journal.transition(Event.ROLLED_BACK, detail={"restored": prev.model_ref(), "how": "offline"})
        store.gc()
        journal.transition(Event.DONE)
    finally:
        spool.close()
    return {"mode": "offline", "restored": prev.model_ref(), "from": cur.model_ref(), "reason": Reason.MANUAL.value}
