"""The durable, bounded outbox: telemetry samples and events wait in SQLite until the broker acknowledges them.

* :meth:`Spool.append` assigns the next sequence number of the item's channel (persisted, so it never repeats, also
  across restarts) and commits the item before returning.
* :meth:`Spool.pending` lists items not yet handed to the broker; the link marks them in flight with the MQTT
  message id (:meth:`mark_inflight`) and deletes them only on PUBACK (:meth:`ack`). A reconnect or a restart makes
  every unacknowledged item pending again (:meth:`requeue`), so nothing is lost within the cap.
* Past ``max_items`` the oldest items are deleted and counted in ``dropped``; telemetry reports that count and it is
  cleared only once the report itself is acknowledged (:meth:`settle_dropped`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass
class Item:
    id: int
    channel: str
    seq: int
    body: dict[str, Any]


class Spool:
    def __init__(self, path: str | os.PathLike, max_items: int = 100_000, synchronous: str = "FULL"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(SCHEMA)
        self._inflight: set[int] = set()   # item ids handed to the broker, awaiting PUBACK

    # --- counters ----------------------------------------------------------------------------------------------

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set_counter(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES(?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (name, value))

    # --- producing ---------------------------------------------------------------------------------------------

    def append(self, channel: str, body: dict[str, Any]) -> int:
        """Store one item durably; returns its sequence number (``body['seq']`` is set to it)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._counter(f"seq:{channel}")
                self._set_counter(f"seq:{channel}", seq + 1)
                body = dict(body, seq=seq)
                body.setdefault("ts", time.time())
                self._db.execute("INSERT INTO items(channel, seq, body, created) VALUES(?, ?, ?, ?)",
                                 (channel, seq, json.dumps(body, separators=(",", ":")), time.time()))
                self._enforce_cap()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return seq

    def _enforce_cap(self) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
        excess = count - self.max_items
        if excess > 0:
            ids = [r[0] for r in self._db.execute("SELECT id FROM items ORDER BY id LIMIT ?", (excess,))]
            self._db.executemany("DELETE FROM items WHERE id=?", [(i,) for i in ids])
            self._inflight.difference_update(ids)
            self._set_counter("dropped", self._counter("dropped") + len(ids))
            self._set_counter("dropped_total", self._counter("dropped_total") + len(ids))

    # --- consuming ---------------------------------------------------------------------------------------------

    def pending(self, limit: int = 100, channel: str | None = None) -> list[Item]:
        """Oldest items not in flight, in order."""
        with self._lock:
            sql = "SELECT id, channel, seq, body FROM items"
            args: list[Any] = []
            if channel is not None:
                sql += " WHERE channel=?"
                args.append(channel)
            sql += " ORDER BY id LIMIT ?"
            args.append(limit + len(self._inflight))
            rows = self._db.execute(sql, args).fetchall()
            out = [Item(r[0], r[1], r[2], json.loads(r[3])) for r in rows if r[0] not in self._inflight]
            return out[:limit]

    def mark_inflight(self, ids: list[int]) -> None:
        with self._lock:
            self._inflight.update(ids)

    def ack(self, ids: list[int]) -> None:
        """The broker acknowledged these items: delete them."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM items WHERE id=?", [(i,) for i in ids])
            (acked,) = (self._counter("acked"),)
            self._set_counter("acked", acked + len(ids))
            self._db.execute("COMMIT")
            self._inflight.difference_update(ids)

    def requeue(self) -> None:
        """Forget what was in flight (after a disconnect): every stored item is pending again."""
        with self._lock:
            self._inflight.clear()

    def dropped(self) -> int:
        """Items dropped by the cap and not yet reported in an acknowledged telemetry message."""
        with self._lock:
            return self._counter("dropped")

    def settle_dropped(self, reported: int) -> None:
        """A telemetry message carrying ``dropped=reported`` was acknowledged."""
        if reported <= 0:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._set_counter("dropped", max(0, self._counter("dropped") - reported))
            self._db.execute("COMMIT")

    def next_seq(self, channel: str) -> int:
        with self._lock:
            return self._counter(f"seq:{channel}")

    def stats(self) -> dict[str, int]:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
            return {"items": int(count), "inflight": len(self._inflight), "max_items": self.max_items,
                    "dropped_unreported": self._counter("dropped"), "dropped_total": self._counter("dropped_total"),
                    "acked_total": self._counter("acked")}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
