"""Layout of the agent's data directory. Every path the agent and its local commands use is named here.

```
<data_dir>/
  store/                     content-addressed model store: <sha256>/ entries, current and previous links
  store/.downloads/          partial downloads of the update in progress (<sha256>.part)
  spool.sqlite               durable outbox of events and telemetry (device_agent.spool)
  api.port                   the local API's port, written at start (api.port = 0 picks a free one)
  update/state.json          the update record (device_agent.update.persist)
  update/history.jsonl       one line per update transition
  update/lock                flock held by the running agent's updater
  update/rollback.request    written by 'edgekit agent rollback', taken by the running updater
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "lock"
ROLLBACK_REQUEST = "rollback.request"


@dataclass(frozen=True)
class AgentPaths:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def downloads(self) -> Path:
        return self.store / ".downloads"

    def partial_download(self, sha256: str) -> Path:
        return self.downloads / f"{sha256}.part"

    @property
    def spool(self) -> Path:
        return self.root / "spool.sqlite"

    @property
    def api_port(self) -> Path:
        return self.root / "api.port"

    # the updater's files
    @property
    def update_dir(self) -> Path:
        return self.root / "update"

    @property
    def update_state(self) -> Path:
        return self.update_dir / STATE_FILE

    @property
    def update_history(self) -> Path:
        return self.update_dir / HISTORY_FILE

    @property
    def update_lock(self) -> Path:
        return self.update_dir / LOCK_FILE

    @property
    def rollback_request(self) -> Path:
        return self.update_dir / ROLLBACK_REQUEST
