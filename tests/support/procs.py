"""Starting and stopping real server processes for tests (always on 127.0.0.1, always stopped by PID)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from edgekit.procs import find_mosquitto, free_port, stop_pid, wait_port  # noqa: F401 (re-exported for tests)


class Mosquitto:
    """A real Mosquitto broker on 127.0.0.1 with a plain (anonymous) listener and persistence in ``workdir``.

    ``stop()``/``kill()``/``start()`` let outage tests take it down and bring it back on the same port.
    """

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = ""):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "mosquitto.conf"
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
            # persistence file into pytest's private (0700) directories; stay root so sessions survive restarts.
            + ("user root\n" if os.geteuid() == 0 else "")
            + extra_conf
        )

    def start(self) -> "Mosquitto":
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)
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

    @staticmethod
    def _bin(name: str) -> str:
        for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (base / name).exists():
                return str(base / name)
        found = shutil.which(name)
        if not found:
            raise RuntimeError(f"{name} not found: apt-get install postgresql")
        return found

    def _run_as(self, argv: list[str]) -> None:
        # initdb/postgres refuse to run as root; use the 'postgres' system user when we are root
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            argv = ["runuser", "-u", "postgres", "--"] + argv
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _relocate_for_postgres_user(self) -> None:
        # As root the server runs as 'postgres', which cannot traverse pytest's 0700 temp dirs: keep the cluster in
        # a private directory of its own under the system temp dir (removed again by stop()).
        import tempfile

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
        own = getattr(self, "_own_dir", None)
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
            self._own_dir = None
