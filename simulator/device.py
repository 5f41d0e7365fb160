"""One virtual device on the event loop: an MQTT 5 session (aiomqtt over paho), an outbox, telemetry, updates.

* Session: client id = device id, ``clean_start=False`` with a session expiry (a persistent session, as the agent),
  the retained Last Will ``offline``; on every connect it subscribes to ``desired`` and ``cmd`` and publishes the
  retained birth ``state``. It reconnects with exponential backoff and jitter.
* Outbox: events and telemetry samples get contiguous per-channel ``seq`` numbers when they are produced and stay
  queued until the broker's PUBACK (telemetry samples batched into one message), so a dropped connection loses
  nothing and reorders nothing.
* Updates follow the agent's flow: downloading → downloaded → verified → self_test → self_test_passed → switched →
  committed → idle, each reported as an event; a faulty device fails its self-test (``golden_mismatch``) and rejects
  that (model, rollout) pair; a desired state naming the previous model during probation rolls back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import ProtocolError
from edgekit.extras import require
from edgekit.protocol import (CommandMessage, CommandReply, DesiredMessage, EventMessage, StateMessage,
                              TelemetryMessage, Topic, decode)

from .behaviour import (AGENT_VERSION, SIM_CAPABILITIES, STATE_REFRESH, Latency, Traits, UpdateRecord, model_ref,
                        new_update_id, telemetry_sample, wants_update)
from .download import DownloadError, fetch
from .package import DevicePackage

log = logging.getLogger("edgekit.simulate")


@dataclass
class DeviceOptions:
    telemetry_interval: float = 10.0
    inference_rate: float = 5.0        # simulated inferences per second on the serving model
    self_test_s: float = 0.5
    probation_s: float = 2.0
    download_parts: int = 2
    faulty_versions: tuple[str, ...] = ()  # the faulty share fails these model versions only (empty: every new one)
    batch_max: int = 50
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    latency: Latency = field(default_factory=Latency)


@dataclass
class Counters:
    """Fleet-wide figures of the simulation (one instance shared by every device of a process)."""

    connected: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    published: int = 0
    events: int = 0
    samples: int = 0
    desired_received: int = 0
    malformed: int = 0
    commands: int = 0
    downloads: int = 0
    download_bytes: int = 0
    download_requests: int = 0
    download_retries: int = 0
    download_failures: int = 0
    updates_started: int = 0
    committed: int = 0
    self_test_failed: int = 0
    rolled_back: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "outcomes"}
        d["outcomes"] = dict(self.outcomes)
        return d


class VirtualDevice:
    def __init__(self, pkg: DevicePackage, traits: Traits, opts: DeviceOptions, counters: Counters,
                 model: dict[str, Any] | None = None, seed: int = 0):
        self.pkg = pkg
        self.id = pkg.device_id
        self.traits = traits
        self.opts = opts
        self.c = counters
        self.rng = random.Random(f"{seed}:{pkg.device_id}")
        self.model = dict(model) if model else None        # serving (name, version, sha256)
        self.first_sha = self.model["sha256"] if self.model else None
        self.store: set[str] = {self.first_sha} if self.first_sha else set()
        self.rec = UpdateRecord()
        self.desired: DesiredMessage | None = None
        self._desired_changed = asyncio.Event()
        self._outbox: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._outbox_ready = asyncio.Event()
        self._seq = {"events": 0, "telemetry": 0}
        self._state_wanted = asyncio.Event()
        self._client = None
        self._stop = asyncio.Event()
        self._drop = asyncio.Event()
        self.online = False
        self.commits: list[str] = []  # sha256 of every model committed here, in order
        self.desired_seen: list[str] = []  # sha256 of every desired model received

    def topic(self, channel: str) -> str:
        return str(Topic(self.pkg.fleet, self.id, channel))

    # --- producing (like the agent's spool: seq assigned at append, removed after PUBACK) -------------------

    def _append(self, channel: str, body: dict[str, Any]) -> int:
        seq = self._seq[channel]
        self._seq[channel] = seq + 1
        self._outbox.append((channel, dict(body, seq=seq)))
        self._outbox_ready.set()
        return seq

    def _event(self, fields: dict[str, Any]) -> None:
        EventMessage.from_dict({"device_id": self.id, "seq": 0, **fields})  # a malformed event is a bug: say so now
        self._append("events", fields)

    def state_message(self, status: str) -> StateMessage:
        return StateMessage(device_id=self.id, status=status, agent_version=AGENT_VERSION,
                            runtime={"backend": "simulated", "threads": 1, "delegates": [], "cpu_fallback": False,
                                     # a LiteRT device that reads multi-payload bundles (edgekit/payloads.py)
                                     "capabilities": SIM_CAPABILITIES},
                            hardware={"machine": "sim", "system": "Linux", "cpus": 1},
                            model=model_ref(self.model), update=self.rec.summary())

    def request_state(self) -> None:
        self._state_wanted.set()
        self._outbox_ready.set()

    # --- lifecycle -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._outbox_ready.set()

    def drop_connection(self) -> bool:
        """Break the connection as a network failure would (the broker publishes the Last Will)."""
        if self._client is None or not self.online:
            return False
        self._drop.set()
        return True

    async def run(self, connect_gate: asyncio.Semaphore, started: asyncio.Event | None = None) -> None:
        tasks = [asyncio.create_task(self._telemetry()), asyncio.create_task(self._updates())]
        delay = self.opts.backoff_initial
        try:
            first = True
            while not self._stop.is_set():
                try:
                    async with connect_gate:  # bounds the TLS handshakes in flight at start and after churn
                        client = await self._connect()
                except Exception as exc:  # noqa: BLE001 - any connect failure: back off and retry
                    self.c.connect_failures += 1
                    log.debug("%s: connect failed: %s", self.id, exc)
                    if first and started is not None:
                        started.set()
                    await self._sleep(delay / 2 + self.rng.uniform(0, delay / 2))
                    delay = min(delay * 2, self.opts.backoff_max)
                    first = False
                    continue
                if first and started is not None:
                    started.set()
                first = False
                delay = self.opts.backoff_initial
                await self._session(client)
                if self.traits.offline:
                    break
                if not self._stop.is_set():
                    await self._sleep(delay / 2 + self.rng.uniform(0, delay / 2))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sleep(self, s: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), s)
        except asyncio.TimeoutError:
            pass

    async def _connect(self):
        aiomqtt = require("aiomqtt", "fleet")
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.pkg.session_expiry)
        client = aiomqtt.Client(
            self.pkg.host, self.pkg.port, identifier=self.id, username=self.pkg.username,
            password=self.pkg.password, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props,
            will=aiomqtt.Will(self.topic("state"), self.state_message("offline").encode(), qos=1, retain=True),
            tls_context=self.pkg.tls_context(), keepalive=self.pkg.keepalive, timeout=30,
            max_inflight_messages=20)
        await client.__aenter__()
        return client

    async def _session(self, client) -> None:
        aiomqtt = require("aiomqtt", "fleet")

        self._client = client
        self.c.connects += 1
        self.c.connected += 1
        self.online = True
        self._drop.clear()
        pub = None
        graceful = False
        try:
            await client.subscribe([(self.topic("desired"), 1), (self.topic("cmd"), 1)])
            await client.publish(self.topic("state"), self.state_message("online").encode(), qos=1, retain=True)
            if self.traits.offline:  # says hello once, then goes away for good
                await client.publish(self.topic("state"), self.state_message("offline").encode(), qos=1,
                                     retain=True)
                graceful = True
                return
            pub = asyncio.create_task(self._publisher(client))
            recv = asyncio.create_task(self._receiver(client))
            stop = asyncio.create_task(self._stop.wait())
            drop = asyncio.create_task(self._drop.wait())
            done, _ = await asyncio.wait({pub, recv, stop, drop}, return_when=asyncio.FIRST_COMPLETED)
            for t in (recv, stop, drop):
                t.cancel()
            if stop in done:
                pub.cancel()
                await asyncio.gather(pub, return_exceptions=True)
                pub = None
                await client.publish(self.topic("state"), self.state_message("offline").encode(), qos=1,
                                     retain=True, timeout=5)
                graceful = True
            elif drop in done:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.reasoncodes import ReasonCode

                # MQTT 5 "disconnect with will message": the broker publishes the Last Will, as after a crash
                client._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
            else:
                for t in done:
                    t.result()  # re-raise what ended the session
        except (aiomqtt.MqttError, asyncio.TimeoutError) as exc:
            log.debug("%s: session ended: %s", self.id, exc)
        finally:
            if pub is not None:
                pub.cancel()
                await asyncio.gather(pub, return_exceptions=True)
            self.online = False
            self._client = None
            self.c.connected -= 1
            self.c.disconnects += 1
            try:
                if graceful or not self._drop.is_set():
                    await client.__aexit__(None, None, None)
                else:
                    await asyncio.wait_for(client.__aexit__(None, None, None), 2)
            except (aiomqtt.MqttError, asyncio.TimeoutError, OSError):
                pass

    async def _publisher(self, client) -> None:
        while True:
            if self._state_wanted.is_set():
                self._state_wanted.clear()
                await client.publish(self.topic("state"), self.state_message("online").encode(), qos=1, retain=True)
            if not self._outbox:
                self._outbox_ready.clear()
                if self._state_wanted.is_set():
                    continue
                await self._outbox_ready.wait()
                continue
            channel, body = self._outbox[0]
            if channel == "telemetry":
                n = 0
                while n < len(self._outbox) and n < self.opts.batch_max and self._outbox[n][0] == "telemetry":
                    n += 1
                samples = [self._outbox[i][1] for i in range(n)]
                await client.publish(self.topic("telemetry"), TelemetryMessage(self.id, samples).encode(), qos=1)
                for _ in range(n):
                    self._outbox.popleft()
                self.c.samples += n
            else:
                await client.publish(self.topic("events"), EventMessage.from_dict(
                    {"device_id": self.id, **body}).encode(), qos=1)
                self._outbox.popleft()
                self.c.events += 1
            self.c.published += 1

    async def _receiver(self, client) -> None:
        async for message in client.messages:
            try:
                t = Topic.parse(str(message.topic))
                if t.device_id != self.id or t.fleet != self.pkg.fleet:
                    raise ProtocolError(f"message on a foreign topic {message.topic}")
                msg = decode(t.channel, message.payload)
            except ProtocolError:
                self.c.malformed += 1  # e.g. a cleared (empty) retained desired state
                continue
            if isinstance(msg, DesiredMessage):
                self.c.desired_received += 1
                self.desired_seen.append(msg.model.get("sha256", ""))
                self.desired = msg
                self._desired_changed.set()
            elif isinstance(msg, CommandMessage):
                self.c.commands += 1
                reply = self._command(msg)
                await client.publish(self.topic("cmd/reply"), reply.encode(), qos=1)

    # --- commands --------------------------------------------------------------------------------------------

    def _command(self, msg: CommandMessage) -> CommandReply:
        if msg.name == "ping":
            return CommandReply(id=msg.id, ok=True, result={"pong": time.time(), "health": {
                "status": "ok" if self.model else "no_model", "device_id": self.id, "agent_version": AGENT_VERSION,
                "model": model_ref(self.model), "update": self.rec.summary()}})
        if msg.name in ("update_status", "status"):
            return CommandReply(id=msg.id, ok=True, result=self.rec.summary())
        if msg.name == "rollback":
            if self.rec.state != "IDLE" or self.rec.previous is None:
                return CommandReply(id=msg.id, ok=False, error="there is no previous model to roll back to"
                                    if self.rec.state == "IDLE" else f"cannot roll back while an update is in "
                                    f"{self.rec.state}")
            self._rollback("manual", self.model, self.rec.previous)
            self.rec.rejected.append({"sha256": self.rec.target["sha256"], "rollout_id": "*", "reason": "manual"})
            return CommandReply(id=msg.id, ok=True, result={"accepted": True, "state": self.rec.state})
        return CommandReply(id=msg.id, ok=False, error=f"unknown command {msg.name!r}")

    # --- telemetry -------------------------------------------------------------------------------------------

    async def _telemetry(self) -> None:
        interval = self.opts.telemetry_interval
        await asyncio.sleep(self.rng.uniform(0, interval))  # devices do not sample in lockstep
        while True:
            n = int(self.opts.inference_rate * interval)
            slow = self.traits.slow and self.model is not None and self.model["sha256"] != self.first_sha
            self._append("telemetry", telemetry_sample(interval, self.model, n, slow, self.opts.latency, self.rng))
            await asyncio.sleep(interval)

    # --- updates ---------------------------------------------------------------------------------------------

    def _step(self, src: str, dst: str, name: str, reason: str | None = None, **detail: Any) -> None:
        self._event(self.rec.transition(src, dst, name, reason, detail))
        if dst in STATE_REFRESH:
            self.request_state()

    def _current_sha(self) -> str | None:
        return self.model["sha256"] if self.model else None

    async def _updates(self) -> None:
        while True:
            await self._desired_changed.wait()
            self._desired_changed.clear()
            d = self.desired
            if d is None:
                continue
            rollout = d.rollout_id
            if not wants_update(d.model, self._current_sha(), self.rec, rollout):
                continue
            try:
                await self._update(dict(d.model), rollout)
            except Exception:  # noqa: BLE001 - a bug in the simulation must not stop the device
                log.exception("%s: simulated update failed unexpectedly", self.id)
            if self.desired is not None and self.desired.model.get("sha256") != self._current_sha():
                self._desired_changed.set()  # something newer arrived meanwhile: look again

    def _superseded(self, sha: str) -> bool:
        return self.desired is not None and self.desired.model.get("sha256") != sha

    def _fail(self, src: str, reason: str, rollout: str | None, sha: str, **detail: Any) -> None:
        self._step(src, "FAILED", "failed", reason, **detail)
        if reason != "superseded":
            self.rec.rejected.append({"sha256": sha, "rollout_id": rollout, "reason": reason})
        self.c.outcomes[reason] += 1
        self._step("FAILED", "IDLE", "idle")

    async def _update(self, target: dict[str, Any], rollout: str | None) -> None:
        sha = target["sha256"]
        rec = self.rec
        self.c.updates_started += 1
        rec.update_id, rec.rollout_id, rec.reason = new_update_id(sha), rollout, None
        rec.target = {k: target.get(k) for k in ("name", "version", "sha256", "url", "size")}
        rec.previous = model_ref(self.model)
        self._step("IDLE", "DOWNLOADING", "downloading")
        if sha in self.store:
            self._step("DOWNLOADING", "VERIFYING", "downloaded", skipped="already in the store")
        else:
            try:
                got = await fetch(target["url"], target.get("size"), sha, parts=self.opts.download_parts, rng=self.rng)
            except DownloadError as exc:
                self.c.download_failures += 1
                return self._fail("DOWNLOADING", exc.reason, rollout, sha, message=str(exc))
            self.c.downloads += 1
            self.c.download_bytes += got.size
            self.c.download_requests += got.requests
            self.c.download_retries += got.retries
            self.store.add(sha)
            self._step("DOWNLOADING", "VERIFYING", "downloaded", bytes=got.size, requests=got.requests,
                       attempts=got.retries + 1)
        self._step("VERIFYING", "STAGED", "verified", **{"from": "download"})
        if self._superseded(sha):
            return self._fail("STAGED", "superseded", rollout, sha, message="a newer desired model arrived")
        self._step("STAGED", "SELF_TEST", "self_test")
        await asyncio.sleep(self.opts.self_test_s)
        if self.traits.faulty and (not self.opts.faulty_versions or target.get("version") in self.opts.faulty_versions):
            self.c.self_test_failed += 1
            return self._fail("SELF_TEST", "golden_mismatch", rollout, sha,
                              message="golden outputs outside the tolerance",
                              self_test={"ok": False, "reason": "golden_mismatch"})
        lat = self.opts.latency.figures(self.traits.slow and sha != self.first_sha, self.rng)
        self._step("SELF_TEST", "SWITCHING", "self_test_passed", self_test={"ok": True, "latency": {"new": lat}})
        previous = self.model
        self.model = model_ref(target)
        self.request_state()
        self._step("SWITCHING", "PROBATION", "switched", probation_s=self.opts.probation_s)
        deadline = time.monotonic() + self.opts.probation_s
        while time.monotonic() < deadline:
            if previous and self.desired is not None and self.desired.model.get("sha256") == previous["sha256"]:
                # the fleet went back (an aborted rollout): roll back without waiting for the end of probation
                self._rollback("superseded", previous, previous, src="PROBATION")
                return
            await asyncio.sleep(min(0.25, max(deadline - time.monotonic(), 0.01)))
        self._step("PROBATION", "COMMITTED", "committed")
        self.commits.append(sha)
        self.c.committed += 1
        self.c.outcomes["committed"] += 1
        self._step("COMMITTED", "IDLE", "idle")

    def _rollback(self, reason: str, serving_before: dict | None, restore: dict | None, src: str = "IDLE") -> None:
        self._step(src, "ROLLING_BACK", "rollback_requested", reason)
        self.model = model_ref(restore)
        self.request_state()
        self._step("ROLLING_BACK", "FAILED", "rolled_back", reason, restored=model_ref(restore))
        self.c.rolled_back += 1
        self.c.outcomes["rolled_back"] += 1
        self._step("FAILED", "IDLE", "idle")
