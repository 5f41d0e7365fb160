"""The contract between the updater and the process it runs in.

:class:`UpdateHost` is everything the updater and its steps use of the agent (:class:`device_agent.agent.Agent`
implements it); the offline ``edgekit agent rollback`` runs the same steps on :class:`OfflineHost`, which has no
serving slot: a rollback there moves the store pointers only, and the next agent start serves the restored model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import RollbackError

if TYPE_CHECKING:
    from ..config import AgentConfig
    from ..paths import AgentPaths
    from ..runtime import Runner
    from ..serving import ModelSlot
    from ..spool import Spool
    from ..stats import InferenceStats
    from ..store import ModelStore, StoreEntry


class UpdateHost(Protocol):
    @property
    def config(self) -> "AgentConfig": ...

    @property
    def paths(self) -> "AgentPaths": ...

    @property
    def store(self) -> "ModelStore": ...

    @property
    def slot(self) -> "ModelSlot | None":
        """The serving slot; None where nothing serves (the offline rollback)."""

    @property
    def stats(self) -> "InferenceStats": ...

    @property
    def backend_name(self) -> str:
        """The runtime backend the agent serves with (the self-test loads models with the same one)."""

    def verify_entry(self, entry: "StoreEntry") -> None:
        """Check a stored bundle's signature and hashes again; raises an EdgekitError."""

    def load_entry(self, entry: "StoreEntry") -> "Runner":
        """Verify a stored bundle again and load it into a new interpreter."""

    def publish_event(self, **fields: Any) -> int:
        """Queue an event (EventMessage fields) durably."""

    def publish_state(self) -> None:
        """Republish the retained birth message (its update summary changed)."""


@dataclass
class OfflineHost:
    """The host of an offline rollback: the agent's data directory, no serving slot, events into the spool (opened
    when the first event is written, so a refused rollback writes nothing)."""

    config: "AgentConfig"
    paths: "AgentPaths"
    store: "ModelStore"
    stats: "InferenceStats" = field(default=None)  # type: ignore[assignment]  # nothing serves, nothing is judged
    slot: "ModelSlot | None" = None
    _spool: "Spool | None" = field(default=None, repr=False)

    @property
    def backend_name(self) -> str:
        return self.config.runtime.backend

    def verify_entry(self, entry: "StoreEntry") -> None:
        raise RollbackError("verifying a model needs the running agent")

    def load_entry(self, entry: "StoreEntry") -> "Runner":
        raise RollbackError("loading a model needs the running agent")

    def publish_event(self, **fields: Any) -> int:
        if self._spool is None:
            from ..spool import Spool

            self._spool = Spool(self.paths.spool, max_items=self.config.spool.max_items)
        return self._spool.append("events", dict(fields, detail=dict(fields.get("detail") or {}, offline=True)))

    def publish_state(self) -> None:
        """Nothing to republish: the agent sends its birth message when it starts."""

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
