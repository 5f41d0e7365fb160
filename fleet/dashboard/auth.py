"""Pure pieces of the dashboard's authentication: the login rate limiter, loopback checks, the TLS decision."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field

SESSION_COOKIE = "edgekit_session"
CSRF_HEADER = "x-csrf-token"


@dataclass
class LoginLimiter:
    """At most ``attempts`` failed logins per ``window`` seconds for one user name and for one client address;
    past that every login (right or wrong) is refused until the oldest failure leaves the window."""

    attempts: int = 5
    window: float = 300.0
    clock: callable = time.monotonic
    _fails: dict[str, deque] = field(default_factory=dict)

    def _keys(self, user: str, client: str) -> tuple[str, str]:
        return f"user:{user}", f"addr:{client}"

    def _prune(self, key: str, now: float) -> deque:
        q = self._fails.setdefault(key, deque())
        while q and now - q[0] >= self.window:
            q.popleft()
        return q

    def retry_after(self, user: str, client: str) -> float:
        """Seconds until a login may be tried again (0: now)."""
        now = self.clock()
        wait = 0.0
        for key in self._keys(user, client):
            q = self._prune(key, now)
            if len(q) >= self.attempts:
                wait = max(wait, self.window - (now - q[0]))
        return wait

    def failed(self, user: str, client: str) -> None:
        now = self.clock()
        for key in self._keys(user, client):
            self._prune(key, now).append(now)
        if len(self._fails) > 10000:  # bounded memory under a spray of names
            for key in [k for k, q in self._fails.items() if not q]:
                del self._fails[key]

    def succeeded(self, user: str, client: str) -> None:
        self._fails.pop(f"user:{user}", None)


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
