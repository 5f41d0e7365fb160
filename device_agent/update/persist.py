"""The update record and history: what the updater writes before every side effect.

``state.json`` holds one :class:`Record` and is replaced atomically (temp → fsync → ``os.replace`` → fsync the
directory, :func:`edgekit.fsutil.atomic_write`), so after a power cut it holds either the old or the new record,
never a torn one. ``history.jsonl`` is append-only, one JSON line per transition, each line fsynced; a line torn by a
crash is skipped when reading. :func:`advance` (pure) applies a machine transition to a record.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

from edgekit.fsutil import atomic_write, fsync_dir

from ..paths import HISTORY_FILE, STATE_FILE
from .errors import UpdateStateError
from .machine import POST_SWITCH, PRE_SWITCH, Event, Reason, State, event_name, next_state

RECORD_VERSION = 1
MAX_REJECTED = 32
ANY_ROLLOUT = "*"


@dataclass
class Record:
    """The persisted update state. ``target`` is the desired model being installed (``name, version, sha256, url,
    size``); ``previous`` the model that served when the update began (``name, version, sha256``) and the one a
    rollback returns to."""

    state: str = State.IDLE.value
    update_id: str | None = None
    target: dict[str, Any] | None = None
    rollout_id: str | None = None
    previous: dict[str, Any] | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    crashes: int = 0
    seq: int = 0
    entered_at: float = 0.0
    probation_until: float | None = None
    self_test: dict[str, Any] | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)
    clean_stop: bool = False
    version: int = RECORD_VERSION

    @property
    def state_enum(self) -> State:
        return State(self.state)

    def rejected_pairs(self) -> set[tuple[str, str | None]]:
        """(sha256, rollout id) pairs not to install again; rollout id ``*`` (a manual rollback) matches any."""
        return {(r["sha256"], r.get("rollout_id")) for r in self.rejected}

    def is_rejected(self, sha256: str, rollout_id: str | None) -> dict[str, Any] | None:
        for r in reversed(self.rejected):
            if r["sha256"] == sha256 and r.get("rollout_id") in (rollout_id, ANY_ROLLOUT):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            found = data.get("version") if isinstance(data, dict) else None
            raise UpdateStateError(f"update record has version {found!r}, expected {RECORD_VERSION}")
        names = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in data.items() if k in names})
        try:
            State(rec.state)
        except ValueError:
            raise UpdateStateError(f"update record has unknown state {rec.state!r}") from None
        if rec.target is not None and not isinstance(rec.target.get("sha256") if isinstance(rec.target, dict)
                                                      else None, str):
            raise UpdateStateError("update record has a target without a sha256")
        return rec


@dataclass(frozen=True)
class Transition:
    """One applied transition, as written to the history and published as an event."""

    seq: int
    ts: float
    update_id: str | None
    src: str
    event: str
    dst: str
    name: str
    reason: str | None
    target: dict[str, Any] | None
    previous: dict[str, Any] | None
    rollout_id: str | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def advance(rec: Record, event: Event, *, reason: Reason | str | None = None, now: float | None = None,
            detail: dict[str, Any] | None = None, **changes: Any) -> tuple[Record, Transition]:
    """Apply ``event`` to ``rec`` (pure): the table decides the next state; ``changes`` update record fields.

    Reaching FAILED from a real failure remembers (target sha256, rollout id) as rejected so the same desired model
    is not retried in a loop; a superseded update is not rejected. Reaching IDLE clears the per-update fields.
    """
    now = time.time() if now is None else now
    src = rec.state_enum
    dst = next_state(src, event)
    reason_s = str(reason) if reason is not None else None
    if reason_s is None and src is State.ROLLING_BACK:
        reason_s = rec.reason  # `rolled_back` carries the reason the rollback began with
    new = replace(rec, state=dst.value, seq=rec.seq + 1, entered_at=now, clean_stop=False, **changes)
    if reason_s is not None or Event(event) is Event.START:
        new.reason = reason_s  # a failure's reason stays visible in IDLE until the next update starts
    new.detail = dict(detail or {})
    if Event(event) is Event.START:  # a manual rollback holds its model back until another model is desired
        new.rejected = [r for r in new.rejected if r.get("rollout_id") != ANY_ROLLOUT]
    if dst is State.FAILED and new.target and new.reason not in (None, Reason.SUPERSEDED.value):
        rollout = ANY_ROLLOUT if new.reason == Reason.MANUAL.value else new.rollout_id
        entry = {"sha256": new.target["sha256"], "rollout_id": rollout, "reason": new.reason, "ts": now}
        new.rejected = ([r for r in new.rejected
                         if (r["sha256"], r.get("rollout_id")) != (entry["sha256"], entry["rollout_id"])]
                        + [entry])[-MAX_REJECTED:]
    if dst is State.IDLE:
        new = replace(new, update_id=None, target=None, rollout_id=None, previous=None, crashes=0,
                      probation_until=None, self_test=None)
    t = Transition(seq=new.seq, ts=now, update_id=rec.update_id or new.update_id, src=src.value,
                   event=Event(event).value, dst=dst.value, name=event_name(src, Event(event), dst), reason=reason_s,
                   target=rec.target or new.target, previous=rec.previous or new.previous,
                   rollout_id=rec.rollout_id or new.rollout_id, detail=dict(detail or {}))
    return new, t


def check_consistent(rec: Record, current_sha: str | None, store_shas: set[str]) -> list[str]:
    """Invariants between the record and the model store; returns the violations (empty when consistent).

    Used by ``edgekit agent status``-style checks and by the crash tests: a device always has a current model that
    is in the store; in IDLE that model is not one the record still treats as in flight; in a post-switch state both
    the target and the previous model are in the store, so either can serve.
    """
    problems = []
    state = rec.state_enum
    if current_sha is None:
        problems.append("no current model")
    elif current_sha not in store_shas:
        problems.append(f"current model {current_sha[:12]} is not in the store")
    if state is not State.IDLE and rec.target is None and state not in (State.ROLLING_BACK, State.FAILED):
        problems.append(f"{state.value} without a target")
    if state in POST_SWITCH or state is State.COMMITTED:
        if rec.target and rec.target["sha256"] not in store_shas:
            problems.append(f"{state.value}: target {rec.target['sha256'][:12]} is not in the store")
    if state in POST_SWITCH or state is State.ROLLING_BACK:
        if rec.previous and rec.previous["sha256"] not in store_shas:
            problems.append(f"{state.value}: previous {rec.previous['sha256'][:12]} is not in the store")
    if state in PRE_SWITCH and rec.target and current_sha == rec.target["sha256"] and rec.previous \
            and rec.previous["sha256"] != current_sha:
        problems.append(f"{state.value}: the target is current before the switch")
    return problems


class StateFile:
    """``<dir>/state.json`` (atomic replace) and ``<dir>/history.jsonl`` (append + fsync)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.path = self.dir / STATE_FILE
        self.history_path = self.dir / HISTORY_FILE

    def load(self) -> Record:
        """The persisted record; a fresh IDLE record when there is none. An unreadable file is moved aside (the
        store's current pointer still says what serves) and reported as ``recovered_from`` in the detail."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Record()
        try:
            return Record.from_dict(json.loads(raw))
        except (ValueError, TypeError, UpdateStateError) as exc:
            aside = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            fsync_dir(self.dir)
            return Record(detail={"recovered_from": str(aside), "error": str(exc)[:200]})

    def save(self, rec: Record) -> None:
        data = json.dumps(rec.to_dict(), sort_keys=True, indent=1).encode()
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            raise UpdateStateError(f"cannot write the update state {self.path}: {exc.strerror or exc}",
                                   hint="check free space and permissions of the agent's data directory") from exc

    def append_history(self, t: Transition) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(t.to_dict(), sort_keys=True, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.history_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # close a line torn by a crash so this one stays readable
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        items = list(read_history(self.history_path))
        return items[-limit:] if limit else items


def read_history(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Transitions in order; lines that do not parse (a crash mid-append) are skipped."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and "dst" in item:
                yield item
