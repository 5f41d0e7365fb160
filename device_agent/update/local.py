"""Local update commands on the device: ``edgekit agent rollback`` and ``edgekit agent history``.

A running agent holds ``<data_dir>/update/lock`` (flock). :func:`rollback` asks a running agent through the request
file ``update/rollback.request`` (its updater polls it) and waits for the outcome in the history; with no agent
running it rolls back itself with the updater's own rollback steps (:meth:`Updater.roll_back_offline` on an
:class:`~.host.OfflineHost`): the same table, record and history, and the events go into the spool so the fleet
learns of it when the agent next connects.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import control
from .errors import RollbackError
from .machine import Reason, State
from .persist import StateFile, read_history

if TYPE_CHECKING:
    from ..config import AgentConfig

OUTCOMES = {"rolled_back", "failed", "rollback_refused"}


def update_dir(config: "AgentConfig") -> Path:
    return config.paths.update_dir


HISTORY_LIMIT = 50  # transitions `agent history` shows by default
ROLLBACK_TIMEOUT_S = 60.0  # how long `agent rollback` waits for a running agent


def history(config: "AgentConfig", limit: int | None = None) -> list[dict[str, Any]]:
    items = list(read_history(config.paths.update_history))
    return items[-limit:] if limit else items


def rollback(config: "AgentConfig", timeout: float = ROLLBACK_TIMEOUT_S) -> dict[str, Any]:
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
    history_file = config.paths.update_history
    seen = len(list(read_history(history_file)))
    control.post_rollback_request(directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in list(read_history(history_file))[seen:]:
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


def _offline_rollback(config: "AgentConfig") -> dict[str, Any]:
    from ..store import ModelStore
    from .host import OfflineHost
    from .updater import Updater

    paths = config.paths
    state = StateFile(paths.update_dir).load().state_enum
    if state is not State.IDLE:
        raise RollbackError(f"an update is in {state.value} and the agent is not running",
                            hint="start the agent: it resumes the update or rolls it back by itself")
    host = OfflineHost(config, paths, ModelStore(paths.store))
    try:
        rec = Updater(host).roll_back_offline(Reason.MANUAL.value)
    finally:
        host.close()
    return {"mode": "offline", "restored": rec.detail["restored"], "from": rec.target, "reason": Reason.MANUAL.value}
