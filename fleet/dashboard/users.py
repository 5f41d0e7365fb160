"""Dashboard accounts: users with a role, browser sessions and API tokens (migration ``0003_dashboard``), and
the login limiter's failures (``0005_dashboard_login_failures``).

- Passwords are hashed with Argon2id (``argon2-cffi``, its default parameters); a hash made with older parameters
  is replaced on the next successful login.
- Session cookies and API tokens are random secrets; the database keeps only their SHA-256, so a copy of the
  database does not let anyone in. Each session carries its own CSRF token.
- Users are not devices: device credentials (certificates, MQTT passwords) live in the broker's files and the
  device registry, never here, so they cannot log in to the dashboard.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Double, ForeignKey, Index, Integer, String, delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from edgekit.errors import UsageError
from edgekit.extras import require
from fleet.db import Base, session_factory
from fleet.errors import FleetError

ROLES = ("viewer", "operator")
SESSION_SECONDS = 12 * 3600
TOKEN_PREFIX = "ekt_"
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,26}$")  # the audit log records "user:NAME" in 32 characters
MIN_PASSWORD = 8


class AuthError(FleetError):
    """Wrong user name or password, or an unknown, expired or revoked session or token."""

    default_hint = "log in again, or ask an operator for an account ('edgekit fleet user add')"


class UserRow(Base):
    __tablename__ = "dashboard_users"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class SessionRow(Base):
    __tablename__ = "dashboard_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(32), ForeignKey("dashboard_users.name", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)


class TokenRow(Base):
    __tablename__ = "dashboard_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(32), ForeignKey("dashboard_users.name", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Double)
    last_used: Mapped[float | None] = mapped_column(Double)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a user, their role, and (for a browser session) the session's CSRF token."""

    user: str
    role: str
    csrf: str | None = None   # None: an API token (no cookie, so no CSRF)
    via: str = "session"      # "session" | "token"

    @property
    def can_act(self) -> bool:
        return self.role == "operator"

    @property
    def actor(self) -> str:
        return f"user:{self.user}"


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UsageError(f"user name {name!r} is not valid",
                         hint="use 1-27 characters: a lower-case letter, then letters, digits, '_', '.' or '-'")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}", hint=f"use one of: {', '.join(ROLES)}")
    return role


class LoginFailureRow(Base):
    """One failed login, under two keys (``user:NAME`` and ``addr:CLIENT``), shared by every dashboard process."""

    __tablename__ = "dashboard_login_failures"
    __table_args__ = (Index("ix_dashboard_login_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    key: Mapped[str] = mapped_column(String(96))
    at: Mapped[float] = mapped_column(Double)


class StoredFailures:
    """The login limiter's failures in the fleet store (wall-clock times), so that replicas of the dashboard on
    one store share the limit. Rows older than ``keep`` seconds are deleted as new failures arrive."""

    def __init__(self, engine: Engine, keep: float = 3600.0):
        self.engine, self.keep = engine, keep

    def times(self, key: str, since: float) -> list[float]:
        t = LoginFailureRow
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.at).where(t.key == key[:96], t.at > since).order_by(t.at)).scalars())

    def add(self, keys: tuple[str, ...], at: float) -> None:
        t = LoginFailureRow
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.at < at - self.keep))
            conn.execute(insert(t), [{"key": k[:96], "at": at} for k in keys])

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(LoginFailureRow).where(LoginFailureRow.key == key[:96]))


class UserStore:
    def __init__(self, engine: Engine, clock=time.time):
        require("argon2", "fleet")
        from argon2 import PasswordHasher

        self.engine = engine
        self.Session = session_factory(engine)
        self.clock = clock
        self.hasher = PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_hex(16))  # verified on unknown users: same time either way

    # --- users ---------------------------------------------------------------------------------------------------

    def add(self, name: str, role: str, password: str, *, replace: bool = False) -> dict[str, Any]:
        check_name(name)
        check_role(role)
        if len(password) < MIN_PASSWORD:
            raise UsageError(f"the password is shorter than {MIN_PASSWORD} characters", hint="choose a longer one")
        now = self.clock()
        pw_hash = self.hasher.hash(password)
        with self.Session.begin() as s:
            row = s.get(UserRow, name)
            if row is not None and not replace:
                raise FleetError(f"user {name!r} already exists",
                                 hint="pass --force to set a new password and role")
            if row is None:
                s.add(UserRow(name=name, role=role, password_hash=pw_hash, created_at=now, updated_at=now))
            else:
                row.role, row.password_hash, row.updated_at = role, pw_hash, now
                s.execute(delete(SessionRow).where(SessionRow.user == name))  # a new password ends old sessions
        return {"name": name, "role": role, "created_at": now}

    def remove(self, name: str) -> None:
        with self.Session.begin() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise FleetError(f"no user {name!r}", hint="list them with 'edgekit fleet user list'")
            s.execute(delete(SessionRow).where(SessionRow.user == name))
            s.execute(delete(TokenRow).where(TokenRow.user == name))
            s.delete(row)

    def list(self) -> list[dict[str, Any]]:
        with self.Session() as s:
            return [{"name": u.name, "role": u.role, "created_at": u.created_at}
                    for u in s.scalars(select(UserRow).order_by(UserRow.name))]

    def verify(self, name: str, password: str) -> str:
        """The user's role if ``password`` is theirs; AuthError otherwise (the same for an unknown user)."""
        from argon2.exceptions import InvalidHashError, VerificationError

        with self.Session() as s:
            row = s.get(UserRow, name) if isinstance(name, str) and _NAME.match(name) else None
        try:
            self.hasher.verify(row.password_hash if row else self._dummy, password)
        except (VerificationError, InvalidHashError):
            row = None
        if row is None:
            raise AuthError("wrong user name or password")
        if self.hasher.check_needs_rehash(row.password_hash):
            with self.Session.begin() as s:
                fresh = s.get(UserRow, name)
                if fresh is not None:
                    fresh.password_hash = self.hasher.hash(password)
        return row.role

    # --- browser sessions ----------------------------------------------------------------------------------------

    def open_session(self, name: str, seconds: float = SESSION_SECONDS) -> tuple[str, Principal]:
        """A new session for ``name``: (cookie value, principal with its CSRF token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = self.clock()
        with self.Session.begin() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise AuthError(f"no user {name!r}")
            s.execute(delete(SessionRow).where(SessionRow.expires_at < now))
            s.add(SessionRow(token_sha256=_sha(token), user=name, csrf=csrf, created_at=now,
                             expires_at=now + seconds))
            role = row.role
        return token, Principal(name, role, csrf, "session")

    def session(self, token: str) -> Principal | None:
        now = self.clock()
        with self.Session() as s:
            row = s.get(SessionRow, _sha(token))
            if row is None or row.expires_at < now:
                return None
            user = s.get(UserRow, row.user)
            return Principal(user.name, user.role, row.csrf, "session") if user else None

    def close_session(self, token: str) -> None:
        with self.Session.begin() as s:
            s.execute(delete(SessionRow).where(SessionRow.token_sha256 == _sha(token)))

    # --- API tokens ----------------------------------------------------------------------------------------------

    def create_token(self, user: str, name: str) -> str:
        """A new API token for ``user`` (shown once; only its hash is stored)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.Session.begin() as s:
            if s.get(UserRow, user) is None:
                raise FleetError(f"no user {user!r}", hint="create it first with 'edgekit fleet user add'")
            s.add(TokenRow(token_sha256=_sha(token), user=user, name=name[:64], prefix=token[:12],
                           created_at=self.clock(), last_used=None))
        return token

    def token(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self.Session.begin() as s:
            row = s.get(TokenRow, _sha(token))
            if row is None:
                return None
            user = s.get(UserRow, row.user)
            row.last_used = self.clock()
            return Principal(user.name, user.role, None, "token") if user else None

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.Session() as s:
            return [{"user": t.user, "name": t.name, "prefix": t.prefix, "created_at": t.created_at,
                     "last_used": t.last_used} for t in s.scalars(select(TokenRow).order_by(TokenRow.created_at))]

    def revoke_token(self, prefix: str) -> int:
        with self.Session.begin() as s:
            rows = list(s.scalars(select(TokenRow).where(TokenRow.prefix == prefix)))
            for r in rows:
                s.delete(r)
            return len(rows)
