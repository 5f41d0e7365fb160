"""What every step of an update works with: the host, the policy, the journal and the worker's signals."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from edgekit.errors import EdgekitError

from ..errors import Superseded
from ..journal import Journal
from ..machine import Action, Event, Reason, reconcile
from ..persist import Record
from ..policy import Policy

if TYPE_CHECKING:
    from ...paths import AgentPaths
    from ...serving import ModelSlot
    from ...store import ModelStore
    from ..host import UpdateHost

log = logging.getLogger("edgekit.agent.update")


class Stopped(Superseded):
    """The agent is stopping: leave the state as persisted (the next start resumes it)."""

    def __init__(self, message: str = "the agent is stopping"):
        super().__init__(message)


@dataclass
class StepContext:
    host: "UpdateHost"
    policy: Policy
    journal: Journal
    stop: threading.Event
    cond: threading.Condition
    desired: Callable[[], Any]                    # the latest desired message (or None), read under ``cond``
    take_rollback: Callable[[], str | None]       # a pending rollback request's reason, taken once
    probation: dict[str, Any] = field(default_factory=dict)

    @property
    def rec(self) -> Record:
        return self.journal.rec

    @property
    def target(self) -> dict[str, Any]:
        """The model this update installs (every state but IDLE has one)."""
        target = self.journal.rec.target
        if target is None:
            raise RuntimeError(f"the update record in {self.journal.rec.state} has no target")
        return target

    @property
    def store(self) -> "ModelStore":
        return self.host.store

    @property
    def paths(self) -> "AgentPaths":
        return self.host.paths

    @property
    def slot(self) -> "ModelSlot":
        slot = self.host.slot
        if slot is None:
            raise RuntimeError("this step needs a serving slot (a running agent)")
        return slot

    def transition(self, event: Event, reason: Reason | str | None = None, detail: dict | None = None,
                   **changes: Any) -> Record:
        return self.journal.transition(event, reason, detail, **changes)

    def current_sha(self) -> str | None:
        cur = self.store.current()
        return cur.sha256 if cur else None

    def superseded(self) -> bool:
        """A newer desired model arrived while this update runs."""
        desired = self.desired()
        if desired is None:
            return False
        target = self.rec.target or {}
        action = reconcile(dict(desired.model), self.current_sha(), self.rec.state, target.get("sha256"),
                           self.rec.rejected_pairs(), getattr(desired, "rollout_id", None))
        return action is Action.SUPERSEDE

    def check_superseded(self) -> None:
        if self.superseded():
            raise Superseded("a newer desired model arrived")

    def clean_up(self) -> list[str]:
        """Store down to current + previous; partial downloads of the finished update go too."""
        try:
            removed = self.store.gc()
        except EdgekitError as exc:
            log.warning("store GC failed: %s", exc.message)
            removed = []
        if self.paths.downloads.exists():
            for p in self.paths.downloads.iterdir():
                p.unlink(missing_ok=True)
        return removed
