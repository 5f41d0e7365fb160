"""Throwaway local servers for benchmarks and tests: a plain Mosquitto broker and a PostgreSQL cluster.

Both bind 127.0.0.1 on a free port, keep their state in a directory the caller gives, and are stopped by PID. A
server that exits during start-up raises :class:`ServerStartError` with the tail of its own output (e.g. a config
line Mosquitto refuses), instead of a bare timeout waiting for its port.

(The fleet's own broker, with TLS and per-device ACLs, is ``fleet.broker``; this one is an anonymous listener.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import EdgekitError
from .procs import free_port, stop_pid, wait_port


class ServerStartError(EdgekitError):
    """A local server process did not come up."""


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` executable (PATH, then Debian's /usr/sbin), or None when it is not installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except FileNotFoundError:
        return ""


def _wait_listening(proc: subprocess.Popen, port: int, what: str, output: Path, timeout: float = 15.0) -> None:
    """Return once ``port`` accepts connections; ServerStartError as soon as ``proc`` exits (or after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerStartError(f"{what} exited with status {proc.returncode} during start-up: "
                                   f"{_tail(output) or '(no output)'}",
                                   hint=f"see {output}")
        try:
            wait_port(port, timeout=0.2)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                stop_pid(proc.pid)
                raise ServerStartError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s: "
                                       f"{_tail(output) or '(no output)'}", hint=f"see {output}") from None


class Mosquitto:
    """A real Mosquitto broker on 127.0.0.1 with a plain (anonymous) listener and persistence in ``workdir``.

    ``stop()``/``kill()``/``start()`` take it down and bring it back on the same port. ``extra_conf`` is appended
    to the generated config; do not repeat an option the generated part sets (Mosquitto refuses duplicates such
    as a second ``user`` line; start() then raises ServerStartError with its message).
    """

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = ""):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "mosquitto.conf"
        self.output = self.workdir / "mosquitto.out"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 0\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            # Started as root, Mosquitto drops to the 'mosquitto' user and then silently fails to write its
            # persistence file into private (0700) directories; stay root so sessions survive restarts.
            + ("user root\n" if os.geteuid() == 0 else "")
            + extra_conf
        )

    def start(self) -> "Mosquitto":
        exe = find_mosquitto()
        if exe is None:
            raise ServerStartError("mosquitto is not installed", hint="apt-get install mosquitto")
        with open(self.output, "ab") as out:  # config errors go to stderr before the log file is opened
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_listening(self.proc, self.port, "mosquitto", self.output)
        except ServerStartError:
            self.proc = None
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, sig=signal.SIGKILL)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Postgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on 127.0.0.1 and a free port."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.datadir = self.workdir / "pgdata"
        self.pid: int | None = None
        self._own_dir: Path | None = None

    @staticmethod
    def _bin(name: str) -> str:
        for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (base / name).exists():
                return str(base / name)
        found = shutil.which(name)
        if not found:
            raise ServerStartError(f"{name} not found", hint="apt-get install postgresql")
        return found

    def _run_as(self, argv: list[str]) -> None:
        # initdb/postgres refuse to run as root; use the 'postgres' system user when we are root
        what = Path(argv[0]).name
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            argv = ["runuser", "-u", "postgres", "--"] + argv
        res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            raise ServerStartError(f"{what} failed (status {res.returncode}): {res.stderr.strip()[-2000:]}",
                                   hint=f"see {self.workdir / 'pg.log'}")

    def _relocate_for_postgres_user(self) -> None:
        # As root the server runs as 'postgres', which cannot traverse private 0700 temp dirs: keep the cluster in
        # a private directory of its own under the system temp dir (removed again by stop()).
        if os.geteuid() != 0:
            return
        self._own_dir = Path(tempfile.mkdtemp(prefix="edgekit-pg-"))
        os.chmod(self._own_dir, 0o700)
        self.workdir = self._own_dir
        self.datadir = self.workdir / "pgdata"

    def start(self) -> "Postgres":
        self._relocate_for_postgres_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._run_as([self._bin("initdb"), "-D", str(self.datadir), "-U", "edgekit", "--auth=trust", "-E", "UTF8"])
        return self.start_server()

    def start_server(self) -> "Postgres":
        """Start the server on the cluster (again, after :meth:`stop_server`): same port, same data."""
        self._run_as([self._bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.workdir / "pg.log"), "-w",
                      "-o", f"-h 127.0.0.1 -p {self.port} -k {self.workdir} -F", "start"])
        pidfile = self.datadir / "postmaster.pid"
        self.pid = int(pidfile.read_text().splitlines()[0])
        wait_port(self.port)
        return self

    def stop_server(self) -> None:
        """Stop the server and keep the cluster: a fast shutdown (SIGINT) that drops every client connection."""
        if self.pid is not None:
            stop_pid(self.pid, timeout=30, sig=signal.SIGINT)
            self.pid = None

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://edgekit@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid, timeout=20)
            self.pid = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
