"""How local commands reach the updater of a running agent: a lock file and a request file.

The running updater holds an exclusive ``flock`` on ``<data_dir>/update/lock`` for its whole life, so a command can
tell whether an agent runs. ``edgekit agent rollback`` writes ``update/rollback.request`` atomically; the updater
polls for it (in IDLE and during probation), removes it and acts, and writes the outcome to the history.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from edgekit.fsutil import atomic_write

from ..paths import LOCK_FILE, ROLLBACK_REQUEST



def try_lock(directory: str | os.PathLike) -> int | None:
    """Take the update lock without waiting: its fd, or None when another process (a running agent) holds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def post_rollback_request(directory: str | os.PathLike) -> None:
    atomic_write(Path(directory) / ROLLBACK_REQUEST, f"{time.time()}\n".encode())


def take_rollback_request(directory: str | os.PathLike) -> bool:
    """True (once) when a rollback was requested; the request file is removed."""
    try:
        os.unlink(Path(directory) / ROLLBACK_REQUEST)
    except FileNotFoundError:
        return False
    return True


def withdraw_rollback_request(directory: str | os.PathLike) -> None:
    (Path(directory) / ROLLBACK_REQUEST).unlink(missing_ok=True)
