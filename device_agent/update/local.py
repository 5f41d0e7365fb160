"""Local update commands on the device: ``edgekit agent rollback`` and ``edgekit agent history``.

A running agent holds ``<data_dir>/update/lock`` (flock). :func:`rollback` asks a running agent through the request
file ``update/rollback.request`` (its updater polls it) and waits for the outcome in the history; with no agent
running it rolls back itself, through the same table, record and history, and spools the events so the fleet learns
of it when the agent next connects.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from edgekit.fsutil import atomic_write

from .errors import RollbackError
from .machine import Event, Reason, State
from .persist import StateFile, Transition, advance, read_history
from .updater import LOCK_FILE, ROLLBACK_REQUEST, _new_id

OUTCOMES = {"rolled_back", "failed", "rollback_refused"}


def update_dir(config: Any) -> Path:
    return Path(config.data_dir) / "update"


def history(config: Any, limit: int | None = None) -> list[dict[str, Any]]:
    items = list(read_history(update_dir(config) / "history.jsonl"))
    return items[-limit:] if limit else items


def _agent_running(directory: Path) -> tuple[bool, int | None]:
    """(running, fd): when no agent holds the lock we take it and return its fd (the caller closes it)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return True, None
    return False, fd


def rollback(config: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Return to the previous model; a dict describing the outcome (``mode``: ``agent`` or ``offline``)."""
    directory = update_dir(config)
    running, fd = _agent_running(directory)
    if not running:
        try:
            return _offline_rollback(config)
        finally:
            os.close(fd)
    since = time.time()
    seen = len(list(read_history(directory / "history.jsonl")))
    atomic_write(directory / ROLLBACK_REQUEST, f"{since}\n".encode())
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
    (directory / ROLLBACK_REQUEST).unlink(missing_ok=True)
    raise RollbackError(f"the running agent did not roll back within {timeout:.0f} s",
                        hint="check 'edgekit agent history' and the agent's log")


def _offline_rollback(config: Any) -> dict[str, Any]:
    from ..spool import Spool
    from ..store import ModelStore

    files = StateFile(update_dir(config))
    rec = files.load()
    if rec.state_enum is not State.IDLE:
        raise RollbackError(f"an update is in {rec.state} and the agent is not running",
                            hint="start the agent: it resumes the update or rolls it back by itself")
    store = ModelStore(Path(config.data_dir) / "store")
    cur, prev = store.current(), store.previous()
    if cur is None or prev is None:
        raise RollbackError("there is no previous model to roll back to")
    spool = Spool(Path(config.data_dir) / "spool.sqlite", max_items=config.spool.max_items)
    try:
        def step(rec, event, reason=None, **changes):
            new, t = advance(rec, event, reason=reason, **changes)
            files.save(new)
            files.append_history(t)
            _spool_event(spool, t)
            return new

        rec = step(rec, Event.ROLLBACK, Reason.MANUAL, update_id=_new_id(cur.sha256), target=cur.model_ref(),
                   previous=prev.model_ref())
        store.set_current(prev.sha256)
        store.set_previous(None)  # the model rolled away from is not a rollback target
        rec = step(rec, Event.ROLLED_BACK, detail={"restored": prev.model_ref(), "how": "offline"})
        store.gc()
        step(rec, Event.DONE)
    finally:
        spool.close()
    return {"mode": "offline", "restored": prev.model_ref(), "from": cur.model_ref(), "reason": Reason.MANUAL.value}


def _spool_event(spool: Any, t: Transition) -> None:
    model = {k: str(t.target.get(k, "")) for k in ("name", "version", "sha256")} if t.target else None
    detail = dict(t.detail, update_id=t.update_id, seq=t.seq, offline=True)
    spool.append("events", {"event": t.name, "ts": t.ts, "from_state": t.src, "to_state": t.dst,
                            "reason": t.reason, "rollout_id": t.rollout_id, "model": model, "detail": detail})
