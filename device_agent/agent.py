"""The agent process: wires config, store, runtime, slot, stats, spool, MQTT link, local API and telemetry.

The agent is the updater's host: it implements :class:`device_agent.update.host.UpdateHost` (config, paths, store,
slot, stats, backend_name, verify_entry, load_entry, publish_event, publish_state), and ``agent.updater``
(:class:`~device_agent.update.updater.Updater`) receives ``desired`` messages, the updater's commands, and is
started and stopped with the agent; its ``state_summary()`` fills ``state.update``.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.fsutil import atomic_write
from edgekit.protocol import (Channel, CommandMessage, CommandName, CommandReply, DesiredMessage, EventMessage,
                              EventName, StateMessage)

from . import verifier
from .config import AgentConfig
from .paths import AgentPaths
from .errors import NoModelError, RunnerClosedError
from .runtime import Runner, available_backends, choose_backend, load_runner
from .serving import ModelSlot
from .spool import Spool
from .stats import InferenceStats
from .store import ModelStore, StoreEntry
from .update.updater import Updater

log = logging.getLogger("edgekit.agent")

RETRIES = 5  # a request retries on the current model when the one it picked was unloaded under it


def _load_updater(agent: "Agent") -> "Updater | None":
    try:
        return Updater(agent)
    except Exception:  # noqa: BLE001 - a broken updater must not stop the device from serving its model
        log.exception("the updater failed to start; serving without model updates")
        return None


#: seconds after start before the capability probe runs (unless a multi-payload bundle needs it sooner)
CAPABILITY_PROBE_DELAY_S = 3.0


class Agent:
    def __init__(self, config: AgentConfig, *, with_updater: bool = True):
        self.config = config
        self.paths = AgentPaths(config.data_path)
        self.data_dir = self.paths.root
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(self.paths.store, capabilities=self.capabilities)
        self._caps: dict[str, Any] | None = None
        self._caps_lock = threading.Lock()
        self.slot = ModelSlot()
        self.stats = InferenceStats()
        self.spool = Spool(self.paths.spool, max_items=config.spool.max_items)
        self.backend = choose_backend(config.runtime.backend)
        self.started_at = time.time()
        self.link = None
        self.api = None
        self.unix_api = None
        self.sampler = None
        self.updater: Updater | None = None
        self.last_desired: DesiredMessage | None = None
        self._stop = threading.Event()
        self._with_updater = with_updater
        self._closed = False

    # --- models ------------------------------------------------------------------------------------------------

    @functools.cached_property
    def pubkey(self):
        """The fleet's Ed25519 public key (loading it imports the signature code into this process)."""
        from edgekit import keys as keys_mod

        return keys_mod.load_public_key(self.config.fleet_public_key)

    def capabilities(self) -> dict[str, Any]:
        """What this device can run (runtimes, delegates, execution providers), probed once in a child process."""
        with self._caps_lock:
            if self._caps is None:
                from . import capabilities as caps_mod

                self._caps = caps_mod.probe(self.config.runtime.allow_cpu_fallback)
            return self._caps

    def _probe_capabilities(self) -> None:
        """Soon after start, in the background: probe, then republish the birth certificate with the result. It
        waits a few seconds first, so that the probe's child process does not compete with the first requests."""
        if self._stop.wait(CAPABILITY_PROBE_DELAY_S):
            return
        try:
            self.capabilities()
        except Exception:  # noqa: BLE001 - describing the device must never stop it
            log.exception("probing the device's capabilities failed")
            return
        self.publish_state()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def verify_entry(self, entry: StoreEntry) -> None:
        """Check a stored bundle's signature and hashes: in this process when the signature code is already
        loaded, otherwise in a short-lived child (see :mod:`device_agent.verifier`)."""
        if "cryptography" in sys.modules:
            entry.verify(self.pubkey)
        else:
            verifier.verify(entry.dir, self.config.fleet_public_key)

    def load_entry(self, entry: StoreEntry, *, threads: int | None = None, verified: bool = False) -> Runner:
        """Verify a stored bundle again (signature, hashes) and load it into a new interpreter."""
        if not verified:
            self.verify_entry(entry)
        rt = self.config.runtime
        return load_runner(entry.model_path, backend=self.backend.name, threads=threads or rt.threads,
                           target=entry.target, allow_cpu_fallback=rt.allow_cpu_fallback)

    def load_initial_model(self) -> None:
        """At start: serve the store's current model (or install ``model.bundle`` from the config).

        When the current model no longer verifies or loads, the previous one is served instead: the pointers are
        swapped back and a ``load_failed`` event says why; only when both fail does the agent stop.
        """
        entry = self.store.current()
        if entry is None and self.config.model.bundle:
            entry = self.store.install(self.config.model.bundle, self.pubkey)
            self.store.set_current(entry.sha256)
        if entry is None:
            log.warning("no model installed yet; waiting for one from the fleet")
            return
        try:
            runner = self._verified_runner(entry)
        except EdgekitError as exc:
            prev = self.store.previous()
            if prev is None or prev.sha256 == entry.sha256:
                raise
            log.error("current model %s cannot be served (%s); falling back to %s", entry.sha256[:12],
                      exc.one_line(), prev.sha256[:12])
            runner = self._verified_runner(prev)
            self.store.rollback()
            self.publish_event(event=EventName.LOAD_FAILED, reason=exc.code, model=entry.model_ref(),
                               detail={"error": exc.one_line(), "serving": prev.model_ref()})
            entry = prev
        self.slot.swap(runner, entry)
        log.info("serving %s %s (%s)", entry.name, entry.version, entry.sha256[:12])

    def _verified_runner(self, entry: StoreEntry) -> Runner:
        if "cryptography" in sys.modules:
            entry.verify(self.pubkey)
            return self.load_entry(entry, verified=True)
        # the child verifies while this process loads the interpreter; nothing serves before it agrees
        pending = verifier.start(entry.dir, self.config.fleet_public_key)
        try:
            runner = self.load_entry(entry, verified=True)
        except BaseException:
            pending.cancel()
            raise
        try:
            pending.result()
        except BaseException:
            runner.close()
            raise
        return runner

    # --- inference ---------------------------------------------------------------------------------------------

    def infer(self, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], StoreEntry, float]:
        """Run one inference on the serving model: (outputs, entry that served it, seconds)."""
        for _ in range(RETRIES):
            loaded = self.slot.peek()
            if loaded is None:
                raise NoModelError("no model is loaded")
            try:
                return self._run(loaded.runner, loaded.entry, inputs)
            except RunnerClosedError:
                continue  # swapped out twice while this call was on its way: take the current model
        raise NoModelError("the serving model kept changing under this request")

    def _run(self, runner: Runner, entry: StoreEntry, inputs: Sequence[np.ndarray]):
        clock = time.perf_counter  # also the stats' clock: the end time doubles as the record's timestamp
        t0 = clock()
        try:
            out = runner.invoke(inputs)
        except RunnerClosedError:
            raise
        except Exception:
            t1 = clock()
            self.stats.record(entry.stats_key, t1 - t0, False, t1)
            raise
        t1 = clock()
        self.stats.record(entry.stats_key, t1 - t0, True, t1)
        return out, entry, t1 - t0

    def infer_body(self, decoder, body: bytes):
        """For the local API: decode against the serving model's inputs and run, on one consistent model."""
        for _ in range(RETRIES):
            loaded = self.slot.peek()
            if loaded is None:
                raise NoModelError("no model is loaded")
            runner = loaded.runner
            inputs = decoder(body, runner.inputs)
            try:
                out, entry, dt = self._run(runner, loaded.entry, inputs)
            except RunnerClosedError:
                continue
            return out, runner, entry, dt
        raise NoModelError("the serving model kept changing under this request")

    @property
    def max_body(self) -> int:
        return self.config.api.max_body_bytes

    def health(self) -> dict[str, Any]:
        cur = self.slot.current
        doc: dict[str, Any] = {"status": "ok" if cur else "no_model", "device_id": self.config.device_id,
                               "agent_version": __version__, "backend": self.backend.name,
                               "uptime_s": round(time.time() - self.started_at, 3),
                               "mqtt_connected": bool(self.link and self.link.connected),
                               "model": cur[1].model_ref() if cur else None,
                               "spool": self.spool.stats()}
        if self.link is not None:
            doc["link"] = self.link.counters.to_dict()
        if self.updater is not None:
            doc["update"] = self.updater.state_summary()
        return doc

    def model_info(self) -> dict[str, Any]:
        cur = self.slot.current
        if cur is None:
            raise NoModelError("no model is loaded")
        runner, entry = cur
        m = entry.manifest
        return {**entry.model_ref(), "target": entry.target, "labels": m.labels,
                "preprocessing": m.preprocessing, "created_at": m.created_at,
                "runtime": runner.describe(), "inputs": [s.to_dict() for s in runner.inputs],
                "outputs": [s.to_dict() for s in runner.outputs]}

    # --- messages ----------------------------------------------------------------------------------------------

    def state_message(self, status: str) -> StateMessage:
        cur = self.slot.current
        update: dict[str, Any] = {}
        if self.updater is not None:
            try:
                update = dict(self.updater.state_summary() or {})
            except Exception:  # noqa: BLE001 - the birth message must not fail on the updater
                log.exception("updater.state_summary failed")
        runner = cur[0] if cur else None
        return StateMessage(
            device_id=self.config.device_id, status=status, agent_version=__version__,
            runtime={"backend": self.backend.name, "backend_version": self.backend.version(),
                     "available": available_backends(), "threads": self.config.runtime.threads,
                     "delegates": list(runner.delegates) if runner else [],
                     "cpu_fallback": bool(runner.cpu_fallback) if runner else False,
                     **self._capability_fields()},
            hardware=hardware_class(), model=cur[1].model_ref() if cur else None, update=update)

    def _capability_fields(self) -> dict[str, Any]:
        """Birth-certificate fields from the capability probe, once it has answered (edgekit/payloads.py)."""
        cur = self.slot.current
        runner = cur[0] if cur else None
        out: dict[str, Any] = {"serving_backend": getattr(runner, "backend", None),
                               "serving_execution_providers": list(getattr(runner, "providers", []) or [])}
        caps = self._caps
        if caps is not None:
            from edgekit.payloads import device_targets

            out.update(capabilities=caps, execution_providers=list(caps.get("execution_providers") or []),
                       targets=device_targets(caps))
        return out

    def publish_event(self, **kwargs: Any) -> int:
        """Queue an event (EventMessage fields except device_id/seq) durably; returns its sequence number."""
        kwargs.pop("device_id", None)
        kwargs.pop("seq", None)
        # a malformed event is the caller's bug: say so now, not when the link finds it unpublishable
        EventMessage.from_dict({"device_id": self.config.device_id, "seq": 0, **kwargs})
        return self.spool.append(Channel.EVENTS, kwargs)

    def publish_state(self) -> None:
        if self.link is not None:
            self.link.request_state()

    def on_message(self, channel: str, msg: Any) -> None:
        if channel == Channel.DESIRED:
            self.on_desired(msg)
        elif channel == Channel.CMD:
            self.on_command(msg)

    def on_desired(self, msg: DesiredMessage) -> None:
        self.last_desired = msg
        if self.updater is not None:
            self.updater.submit(msg)
        else:
            log.info("desired model %s %s received; no updater installed", msg.model.get("name"),
                     msg.model.get("version"))

    def on_command(self, msg: CommandMessage) -> None:
        handler = self.updater.handle_command if self.updater is not None else None
        if msg.name == CommandName.PING:
            reply = CommandReply(id=msg.id, ok=True, result={"pong": time.time(), "health": self.health()})
        elif handler is not None:
            try:
                reply = CommandReply(id=msg.id, ok=True, result=handler(msg) or {})
            except Exception as exc:  # noqa: BLE001 - the reply carries the error
                reply = CommandReply(id=msg.id, ok=False, error=str(exc))
        else:
            reply = CommandReply(id=msg.id, ok=False, error=f"unknown command {msg.name!r}")
        if self.link is not None:
            self.link.publish_reply(reply.encode())

    def telemetry_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"spool": self.spool.stats()}
        if self.link is not None:
            extra["link"] = self.link.counters.to_dict()
        return extra

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        from .telemetry import SystemProbe, TelemetrySampler

        cfg = self.config
        if self._with_updater:
            self.updater = _load_updater(self)
        self.load_initial_model()
        if cfg.api.enabled:
            from .api import ApiServer

            self.api = ApiServer(self, cfg.api.host, cfg.api.port).start()
            atomic_write(self.paths.api_port, f"{self.api.port}\n".encode())
            log.info("local API on http://%s:%d", cfg.api.host, self.api.port)
            if cfg.api.unix_socket:
                from .api import UnixApiServer

                self.unix_api = UnixApiServer(self, cfg.api.unix_socket).start()
                log.info("local API on unix://%s", cfg.api.unix_socket)
        threading.Thread(target=self._probe_capabilities, name="capabilities", daemon=True).start()
        if cfg.mqtt.enabled:
            from .link import MqttLink

            self.link = MqttLink(cfg, self.spool, state=self.state_message, on_message=self.on_message,
                                 batch_max=cfg.telemetry.batch_max)
            self.link.start()
        if cfg.telemetry.enabled:
            self.sampler = TelemetrySampler(lambda s: self.spool.append(Channel.TELEMETRY, s), self.stats,
                                            SystemProbe(self.data_dir), cfg.telemetry.interval,
                                            extra=self.telemetry_extra)
            self.sampler.start()
        if self.updater is not None:
            self.updater.start()
        log.info("agent %s started (pid %d)", cfg.device_id, os.getpid())

    def stop(self) -> None:
        self._stop.set()
        if self.updater is not None:
            try:
                self.updater.stop()
            except Exception:  # noqa: BLE001
                log.exception("updater.stop failed")
        if self.sampler is not None:
            self.sampler.stop()
        for server in (self.api, self.unix_api):
            if server is not None:
                server.stop()
        if self.link is not None:
            self.link.stop()
        self.slot.clear()
        if not self._closed:
            self._closed = True
            self.spool.close()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM/SIGINT; stop cleanly."""
        def _signal(signum, frame):
            self._stop.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()


def hardware_class() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(),
                            "cpus": os.cpu_count() or 1}
    try:
        with open("/proc/device-tree/model", "rb") as f:
            info["model"] = f.read().rstrip(b"\x00").decode(errors="replace")
    except OSError:
        pass
    return info
