"""Pure pieces of the dashboard's authentication: the login rate limiter, loopback checks, the TLS decision."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

SESSION_COOKIE = "edgekit_session"
CSRF_HEADER = "x-csrf-token"


class MemoryFailures:
    """Failed-login times kept in this process (tests, and a limiter without a store)."""

    def __init__(self) -> None:
        self._fails: dict[str, deque] = {}

    def times(self, key: str, since: float) -> list[float]:
        """The failures of ``key`` after ``since``, oldest first."""
        q = self._fails.get(key)
        while q and q[0] <= since:
            q.popleft()
        return list(q or ())

    def add(self, keys: tuple[str, ...], at: float) -> None:
        for key in keys:
            self._fails.setdefault(key, deque()).append(at)
        if len(self._fails) > 10000:  # bounded memory under a spray of names
            for key in [k for k, q in self._fails.items() if not q]:
                del self._fails[key]

    def clear(self, key: str) -> None:
        self._fails.pop(key, None)


class FailureLog(Protocol):
    def times(self, key: str, since: float) -> list[float]: ...
    def add(self, keys: tuple[str, ...], at: float) -> None: ...
    def clear(self, key: str) -> None: ...


@dataclass
class LoginLimiter:
    """At most ``attempts`` failed logins per ``window`` seconds for one user name and for one client address;
    past that every login (right or wrong) is refused until the oldest failure leaves the window. The failures
    live in ``failures``: this process's memory by default; the dashboard keeps them in the fleet store
    (:class:`fleet.dashboard.users.StoredFailures`, wall-clock times) so every replica counts the same."""

    attempts: int = 5
    window: float = 300.0
    clock: Callable[[], float] = time.monotonic
    failures: FailureLog = field(default_factory=MemoryFailures)

    def _keys(self, user: str, client: str) -> tuple[str, str]:
        return f"user:{user}", f"addr:{client}"

    def retry_after(self, user: str, client: str) -> float:
        """Seconds until a login may be tried again (0: now)."""
        now = self.clock()
        wait = 0.0
        for key in self._keys(user, client):
            times = self.failures.times(key, now - self.window)
            if len(times) >= self.attempts:
                wait = max(wait, self.window - (now - times[0]))
        return wait

    def failed(self, user: str, client: str) -> None:
        self.failures.add(self._keys(user, client), self.clock())

    def succeeded(self, user: str, client: str) -> None:
        self.failures.clear(f"user:{user}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TlsPlan:
    tls: bool
    warning: str | None = None


def plan_tls(host: str, *, tls: bool | None, insecure: bool) -> TlsPlan:
    """TLS is on by default beyond loopback; plain HTTP there needs ``insecure`` and carries a loud warning."""
    from edgekit.errors import UsageError

    local = is_loopback(host)
    if tls is None:
        tls = not local
    if not tls and not local:
        if not insecure:
            raise UsageError(f"refusing to serve the dashboard on {host} without TLS",
                             hint="drop --no-tls (TLS with the fleet's CA), or pass --insecure if you really mean it")
        return TlsPlan(False, f"WARNING: the dashboard on {host} is served WITHOUT TLS (--insecure): passwords, "
                              "session cookies and API tokens cross the network in clear text")
    return TlsPlan(tls)
