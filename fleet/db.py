"""Database plumbing: one declarative ``Base``, engines for SQLite (WAL) and PostgreSQL, sessions, migrations.

Migrations live in ``fleet/migrations/versions`` as one normal alembic chain; :func:`upgrade` runs them
programmatically (``alembic upgrade heads``). Other fleet packages add their own revision files to the same chain.

A new migration sets ``down_revision`` to the newest head at the time (``alembic heads`` names it; the chain starts
at ``0001_fleet_core``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from edgekit.extras import require

require("sqlalchemy", "fleet")

from sqlalchemy import MetaData, create_engine, event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, StatementError  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker  # noqa: E402

from .errors import StoreConflictError, StoreError, StoreUnavailableError  # noqa: E402

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()
_SHARED: dict[str, Engine] = {}


def shared_engine(url: str) -> Engine:
    """One engine (and connection pool) per url for the whole process."""
    if url not in _SHARED:
        _SHARED[url] = make_engine(url)
    return _SHARED[url]


def dispose_all() -> None:
    """Close the pooled connections of every engine this process made (they reconnect on next use)."""
    for engine in list(_ENGINES):
        engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str, **kw) -> Engine:
    """An engine for ``sqlite:///PATH`` (WAL, foreign keys on) or ``postgresql+psycopg://…``."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)
        _ENGINES.add(engine)
        return engine
    if url.startswith("postgresql"):
        if not url.startswith("postgresql+psycopg"):
            raise StoreError(f"unsupported PostgreSQL driver in {url!r}",
                             hint="use a postgresql+psycopg://USER@HOST:PORT/DB url (psycopg 3)")
        require("psycopg", "fleet")
        engine = create_engine(url, pool_pre_ping=True, **kw)
        _ENGINES.add(engine)
        return engine
    raise StoreError(f"unsupported database url {url!r}",
                     hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB")


# --- the error boundary of every store ------------------------------------------------------------------------------


def _cause(exc: StatementError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return (text.splitlines() or ["?"])[0][:300]


@contextlib.contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy's errors into the fleet's, once, where a store talks to the database.

    ``OperationalError``/``InterfaceError`` (server down, connection dropped, SQLite locked) become a retryable
    :class:`StoreUnavailableError`, ``IntegrityError`` a :class:`StoreConflictError`, any other driver error a
    :class:`StoreError` (as does a value the driver cannot bind). Errors of SQLAlchemy's own usage (a bug, not the
    database) pass through unchanged."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailableError(f"the database is unavailable ({what}): {_cause(exc)}") from exc
    except IntegrityError as exc:
        raise StoreConflictError(f"the database refused a conflicting write ({what}): {_cause(exc)}") from exc
    except StatementError as exc:
        raise StoreError(f"the database refused the request ({what}): {_cause(exc)}") from exc


F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


def store_call(fn: F) -> F:
    """Decorate a store function so that its database errors leave it as fleet errors (see :func:`db_errors`)."""
    if inspect.isgeneratorfunction(fn):  # pragma: no cover - stores return lists, never generators
        raise TypeError(f"{fn.__qualname__}: a generator would leave db_errors before it runs")
    what = fn.__name__.strip("_").replace("_", " ")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with db_errors(what):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def store_boundary(cls: C) -> C:
    """Class decorator: every public method of a store maps its database errors (see :func:`db_errors`)."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, store_call(member))
    return cls


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str):
    require("alembic", "fleet")
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | Engine, revision: str = "heads") -> None:
    """Bring the database at ``url`` (or an engine) to the newest schema."""
    from alembic import command

    engine = url if isinstance(url, Engine) else make_engine(url)
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailableError(f"cannot migrate the database {engine.url!r}: {_cause(exc)}",
                                    hint="check the --db url and that the database server runs") from exc
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def current_revisions(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())
