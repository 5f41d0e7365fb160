"""The model slot: which (runner, entry) serves requests, swapped atomically under load.

A request takes a consistent pair with ``with slot.acquire() as (runner, entry):``. ``swap`` replaces the pair in one
reference assignment under a lock; requests already running keep the pair they took, so none fails. The replaced
pair becomes ``slot.previous`` and stays loaded for an instant rollback; the pair it pushes out is closed once the
last request using it has finished.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import NoModelError


@dataclass(eq=False)
class Loaded:
    runner: Any
    entry: Any
    users: int = 0
    retired: bool = field(default=False)

    def pair(self) -> tuple[Any, Any]:
        return self.runner, self.entry


class ModelSlot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Loaded | None = None
        self._previous: Loaded | None = None
        self.swaps = 0

    # --- reading ---------------------------------------------------------------------------------------------

    @contextmanager
    def acquire(self) -> Iterator[tuple[Any, Any]]:
        """A consistent (runner, entry) for one request; raises NoModelError when nothing is loaded."""
        loaded = self.enter()
        try:
            yield loaded.runner, loaded.entry
        finally:
            self.leave(loaded)

    def enter(self) -> Loaded:
        """The low-level half of :meth:`acquire` (for hot paths): pair every ``enter`` with one ``leave``."""
        with self._lock:
            loaded = self._current
            if loaded is None:
                raise NoModelError("no model is loaded")
            loaded.users += 1
        return loaded

    def leave(self, loaded: Loaded) -> None:
        with self._lock:
            loaded.users -= 1
            close = loaded.retired and loaded.users == 0
        if close:
            _close(loaded)

    def peek(self) -> Loaded | None:
        """The serving pair without taking a reference (one attribute read, so runner and entry belong together).

        For hot paths that retry on :class:`~device_agent.errors.RunnerClosedError`: a runner is closed only after
        two swaps have pushed it out, and then only between calls (``close`` takes the runner's lock).
        """
        return self._current

    @property
    def current(self) -> tuple[Any, Any] | None:
        cur = self._current
        return cur.pair() if cur else None

    @property
    def previous(self) -> tuple[Any, Any] | None:
        prev = self._previous
        return prev.pair() if prev else None

    @property
    def entry(self) -> Any:
        cur = self._current
        return cur.entry if cur else None

    @property
    def runner(self) -> Any:
        cur = self._current
        return cur.runner if cur else None

    # --- changing --------------------------------------------------------------------------------------------

    def swap(self, runner: Any, entry: Any) -> tuple[Any, Any] | None:
        """Serve (runner, entry) from now on; the old pair becomes ``previous`` (returned). No request fails."""
        new = Loaded(runner, entry)
        with self._lock:
            old, dropped = self._current, self._previous
            self._current, self._previous = new, old
            self.swaps += 1
            close = self._retire(dropped, keep=(new, old))
        if close:
            _close(dropped)
        return old.pair() if old else None

    def rollback(self) -> tuple[Any, Any]:
        """Serve ``previous`` again (current and previous trade places)."""
        with self._lock:
            if self._previous is None:
                raise NoModelError("no previous model is loaded")
            self._current, self._previous = self._previous, self._current
            self.swaps += 1
            return self._current.pair()

    def drop_previous(self) -> None:
        """Unload ``previous`` (e.g. after an update is committed), once its requests finish."""
        with self._lock:
            dropped, self._previous = self._previous, None
            close = self._retire(dropped, keep=(self._current,))
        if close:
            _close(dropped)

    def clear(self) -> None:
        with self._lock:
            items = [x for x in (self._current, self._previous) if x is not None]
            self._current = self._previous = None
            to_close = [x for x in items if self._retire(x, keep=())]
        for x in to_close:
            _close(x)

    @staticmethod
    def _retire(loaded: Loaded | None, keep: tuple) -> bool:
        if loaded is None or any(loaded is k for k in keep) or any(
                k is not None and loaded.runner is k.runner for k in keep):
            return False
        loaded.retired = True
        return loaded.users == 0


def _close(loaded: Loaded) -> None:
    close = getattr(loaded.runner, "close", None)
    if close is not None:
        close()
