"""A whole fleet on one machine: the fleet's Mosquitto, ``edgekit fleet serve`` and N device agents, each a real
process, for the demo (``examples/demo.py``) and the end-to-end rollout tests. A harness, not part of the product
packages (an import-linter contract keeps them from importing it).

Every process is started in its own session with its output in ``<workdir>/logs`` and stopped by its PID
(:meth:`LocalFleet.close`, also on errors). Agents are installed from the device packages ``fleet provision``
writes (``edgekit agent install --from``) and talk mTLS to the broker; a :class:`LoadGenerator` sends inferences to
their local APIs so their telemetry carries real per-model latency figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from edgekit.errors import EdgekitError
from edgekit.procs import free_port, stop_pid


class LocalFleetError(EdgekitError):
    """A process of the local fleet did not start or did not become ready."""


@dataclass
class LocalAgent:
    device_id: str
    root: Path
    config: Path
    api_port: int
    proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalFleet:
    workdir: Path
    fleet_id: str = "demo"
    python: str = sys.executable             # runs the fleet service and the edgekit CLI
    agent_python: str | None = None          # runs the agents (e.g. a venv with only edgekit[agent]); default python
    telemetry_interval: float = 1.0
    agent_env: dict[str, str] = field(default_factory=dict)  # extra EDGEKIT_AGENT__* overrides (update policy, ...)
    service_interval: float = 0.5
    db_url: str = ""                         # the fleet store (default: SQLite in the fleet directory)
    ctx: Any = None
    service: subprocess.Popen | None = None
    agents: dict[str, LocalAgent] = field(default_factory=dict)
    _broker_started: bool = False

    # --- set-up --------------------------------------------------------------------------------------------------

    def init(self) -> "LocalFleet":
        from fleet.setup import init_fleet

        self.workdir = Path(self.workdir).absolute()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.ctx = init_fleet(self.workdir / "fleet", fleet_id=self.fleet_id, tls_port=free_port(),
                              artifacts_port=free_port(), db_url=self.db_url)
        return self

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKIT_AGENT__")}
        env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", "EDGEKIT_FLEET_DIR": str(self.ctx.data_dir)})
        env.update(extra or {})
        return env

    def _edgekit(self, *args: str, check: bool = True, python: str | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run([python or self.python, "-m", "edgekit.cli", *args], capture_output=True, text=True,
                             env=self._env(), timeout=120)
        if check and res.returncode != 0:
            raise LocalFleetError(f"edgekit {' '.join(args[:3])} failed: {res.stderr.strip()[-500:]}")
        return res

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / "logs" / f"{name}.log", "ab")
        try:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self._env(env), start_new_session=True)
        finally:
            log.close()

    def start_broker(self) -> None:
        from fleet import broker

        broker.start(self.ctx)
        self._broker_started = True

    def start_service(self, timeout: float = 30.0) -> int:
        """``edgekit fleet serve`` as a subprocess; returns its PID once the artifact server answers."""
        self.service = self._spawn("fleet-serve", [self.python, "-m", "edgekit.cli", "fleet", "--data-dir",
                                                   str(self.ctx.data_dir), "serve", "-v"])
        url = self.ctx.artifact_url + "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise LocalFleetError(f"the fleet service exited with code {self.service.returncode}",
                                      hint=f"see {self.workdir / 'logs' / 'fleet-serve.log'}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return self.service.pid
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise LocalFleetError(f"the fleet service did not answer on {url} within {timeout:.0f}s")

    def stop_service(self, sig: int = signal.SIGTERM) -> None:
        if self.service is not None:
            stop_pid(self.service.pid, sig=sig)
            self.service = None

    def add_devices(self, ids: Iterable[str], bundle: Path | None = None, tags: dict[str, str] | None = None) -> None:
        """Provision each device and install its agent (from the device package) under ``<workdir>/devices``;
        with ``bundle`` the agent starts serving it, without one it waits for the fleet's first rollout."""
        from fleet.provision import provision

        for d in ids:
            res = provision(self.ctx, d, tags=tags or {})
            root = self.workdir / "devices" / d
            port = free_port()
            extra = ["--bundle", str(bundle)] if bundle is not None else []
            out = self._edgekit("agent", "install", "--root", str(root), "--from", str(res.package), *extra,
                                "--api-port", str(port), "--json", python=self.agent_python)
            cfg = Path(json.loads(out.stdout)["config"])
            self.agents[d] = LocalAgent(d, root, cfg, port)

    def start_agent(self, device_id: str) -> None:
        a = self.agents[device_id]
        env = {"EDGEKIT_AGENT__TELEMETRY__INTERVAL": str(self.telemetry_interval), **self.agent_env}
        argv = [self.agent_python or self.python, "-m", "device_agent", "run", "--config", str(a.config)]
        a.proc = self._spawn(f"agent-{device_id}", argv, env)

    def stop_agent(self, device_id: str, sig: int = signal.SIGTERM) -> None:
        a = self.agents[device_id]
        if a.proc is not None:
            stop_pid(a.proc.pid, sig=sig)
            a.proc = None

    def wait_api(self, ids: Iterable[str], timeout: float = 60.0) -> None:
        for d in ids:
            a = self.agents[d]
            wait_for(lambda: _get_json(a.api + "/v1/health") is not None or not a.running, timeout,
                     f"agent {d}'s local API")
            if not a.running:
                raise LocalFleetError(f"agent {d} exited with code {a.proc.returncode if a.proc else '?'}",
                                      hint=f"see {self.workdir / 'logs' / f'agent-{d}.log'}")

    # --- queries -------------------------------------------------------------------------------------------------

    def devices(self) -> dict[str, Any]:
        from fleet.registry import Registry

        return {d.id: d for d in Registry(self.ctx.engine(), self.fleet_id).list()}

    def wait_online(self, ids: Iterable[str], timeout: float = 60.0) -> None:
        ids = list(ids)
        wait_for(lambda: all(getattr(self.devices().get(d), "online", False) for d in ids), timeout,
                 f"{len(ids)} device(s) online in the registry")

    # --- teardown ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process this fleet started, by PID: agents, the service, the broker."""
        for d in list(self.agents):
            try:
                self.stop_agent(d)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
        self.stop_service()
        if self._broker_started and self.ctx is not None:
            from fleet import broker

            broker.stop(self.ctx)
            self._broker_started = False

    def __enter__(self) -> "LocalFleet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise LocalFleetError(f"timed out after {timeout:.0f}s waiting for {what}")


def _get_json(url: str, timeout: float = 2.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


class LoadGenerator:
    """Sends inferences (zeros of each model's input dtype and shape) to the agents' local APIs at ``rate`` per
    second per agent, so telemetry carries per-version latency; refreshes an agent's input spec when its model
    changes. Counts successes and failures per agent."""

    def __init__(self, agents: Callable[[], list[LocalAgent]], rate: float = 10.0):
        self.agents = agents
        self.rate = rate
        self.ok: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self._specs: dict[str, tuple[str, bytes]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self, a: LocalAgent) -> bytes | None:
        """Zeros in the model's input shapes, as a JSON list (not by tensor name) of integers: valid for a float
        and an int8 model of the same shapes alike, so a model switch does not turn the load into bad requests."""
        info = _get_json(a.api + "/v1/model")
        if not info or not info.get("inputs"):
            return None
        inputs = []
        for spec in info["inputs"]:
            shape = [int(x) for x in spec["shape"]]
            n = 1
            for x in shape:
                n *= x
            inputs.append(_reshape([0] * n, shape))
        return json.dumps({"inputs": inputs}).encode()

    def _one(self, a: LocalAgent) -> None:
        body = self._specs.get(a.device_id)
        if body is None:
            body = self._body(a)
            if body is None:
                return
            self._specs[a.device_id] = body
        req = urllib.request.Request(a.api + "/v1/infer", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
            self.ok[a.device_id] = self.ok.get(a.device_id, 0) + 1
        except urllib.error.HTTPError as exc:
            if exc.code == 400:  # the model (and its input spec) changed: ask again
                self._specs.pop(a.device_id, None)
            else:
                self.failed[a.device_id] = self.failed.get(a.device_id, 0) + 1
        except (urllib.error.URLError, OSError):
            self._specs.pop(a.device_id, None)

    def _run(self) -> None:
        period = 1.0 / self.rate
        while not self._stop.is_set():
            t0 = time.monotonic()
            for a in self.agents():
                if a.running:
                    self._one(a)
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))

    def start(self) -> "LoadGenerator":
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def _reshape(flat: list, shape: list[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat[:shape[0]]
    step = len(flat) // shape[0]
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
