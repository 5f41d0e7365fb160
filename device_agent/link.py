"""The MQTT link (paho-mqtt 2.x, MQTT 5): one thread owns the client; producers only write to the spool.

* Connects with ``clean_start=False`` and a ``SessionExpiryInterval`` (a persistent session), TLS / mTLS /
  username+password, and a retained Last Will that marks the device ``offline``.
* On every CONNACK: publishes the retained birth ``state`` message and subscribes to ``desired`` and ``cmd``.
* Drains the :class:`~device_agent.spool.Spool` in order (telemetry samples batched into one message) with at most
  ``inflight_max`` messages awaiting PUBACK; items are deleted only in ``on_publish`` for their message id. paho
  retransmits unacknowledged messages itself after a reconnect; after a restart the spool resends them.
* Reconnects with exponential backoff and jitter (:class:`Backoff`).
* Inbound payloads are parsed with :func:`edgekit.protocol.decode`; malformed ones are counted and ignored.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edgekit.errors import ProtocolError
from edgekit.extras import require
from edgekit.protocol import Channel, DeviceStatus, EventMessage, StateMessage, TelemetryMessage, Topic, decode

from .config import AgentConfig
from .spool import Item, Spool

log = logging.getLogger("edgekit.agent.link")

STABLE_AFTER = 10.0  # seconds a connection must hold before the reconnect backoff starts from its minimum again


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": the n-th delay lies in [d/2, d] with d = min(max, initial·2ⁿ)."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        d = min(self.maximum, self.initial * self.factor ** self.attempt)
        self.attempt += 1
        return d / 2 + self.rng.uniform(0, d / 2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class LinkCounters:
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    malformed: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def batch_items(items: list[Item], batch_max: int) -> list[list[Item]]:
    """Group consecutive telemetry items into batches of at most ``batch_max``; every other item goes alone."""
    batches: list[list[Item]] = []
    for item in items:
        if (item.channel == Channel.TELEMETRY and batches and batches[-1][0].channel == Channel.TELEMETRY
                and len(batches[-1]) < batch_max):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


class MqttLink:
    def __init__(self, cfg: AgentConfig, spool: Spool, *, state: Callable[[str], StateMessage],
                 on_message: Callable[[str, Any], None], batch_max: int = 50):
        self.cfg = cfg
        self.spool = spool
        self._state = state
        self._on_message = on_message
        self.batch_max = batch_max
        self.counters = LinkCounters()
        self.backoff = Backoff(cfg.mqtt.backoff_initial, cfg.mqtt.backoff_max)
        self._stop = threading.Event()
        self._state_wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight: dict[int, tuple[list[int], int]] = {}  # mid -> (spool ids, dropped count reported)
        self._reporting_dropped = False
        self._socket_open = False
        self._next_attempt = 0.0
        self._connected_at = 0.0
        self._connected = threading.Event()
        self._client = self._make_client()

    # --- topics ------------------------------------------------------------------------------------------------

    def topic(self, channel: str) -> str:
        return str(Topic(self.cfg.fleet, self.cfg.device_id, channel))

    # --- client ------------------------------------------------------------------------------------------------

    def _make_client(self):
        mqtt = require("paho.mqtt.client", "agent")
        props_mod = require("paho.mqtt.properties", "agent")
        packettypes = require("paho.mqtt.packettypes", "agent")
        self._mqtt = mqtt
        m = self.cfg.mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                             protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        client.max_inflight_messages_set(max(m.inflight_max, 1) + 10)
        client.max_queued_messages_set(0)
        will = self._state(DeviceStatus.OFFLINE)
        client.will_set(self.topic(Channel.STATE), will.encode(), qos=1, retain=True)
        if m.username:
            password = m.password
            if m.password_file:
                with open(m.password_file, encoding="utf-8") as f:
                    password = f.read().strip()
            client.username_pw_set(m.username, password or None)
        if m.tls:
            client.tls_set(ca_certs=m.ca_file or None, certfile=m.cert_file or None, keyfile=m.key_file or None)
        self._connect_props = props_mod.Properties(packettypes.PacketTypes.CONNECT)
        self._connect_props.SessionExpiryInterval = int(m.session_expiry)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def request_state(self) -> None:
        """Publish the birth message again (e.g. after a model switch); done by the link thread."""
        self._state_wanted.set()

    # --- callbacks (run in the link thread) ----------------------------------------------------------------------

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            self.counters.connect_failures += 1
            return
        self.counters.connects += 1
        self._connected_at = time.monotonic()  # the backoff resets once the connection has held for a while
        self._connected.set()
        log.info("connected to %s:%s (session present: %s)", self.cfg.mqtt.host, self.cfg.mqtt.port,
                 getattr(flags, "session_present", None))
        client.subscribe([(self.topic(Channel.DESIRED), 1), (self.topic(Channel.CMD), 1)])
        self._publish_state()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set():
            self.counters.disconnects += 1
        self._connected.clear()
        self._socket_open = False
        # also when the broker ends the session cleanly (e.g. another client took over this client id):
        # never reconnect without a delay
        self._next_attempt = time.monotonic() + self.backoff.next()

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        ids, dropped = entry
        if getattr(reason_code, "is_failure", False):
            self.counters.rejected += 1
            log.warning("broker rejected %d spooled item(s): %s; dropping them", len(ids), reason_code)
        else:
            self.counters.acked += 1
        self.spool.ack(ids)
        if dropped:
            self._reporting_dropped = False
            self.spool.settle_dropped(dropped)

    def _handle_message(self, client, userdata, message) -> None:
        try:
            topic = Topic.parse(message.topic)
            if topic.device_id != self.cfg.device_id or topic.fleet != self.cfg.fleet:
                raise ProtocolError(f"message on a foreign topic {message.topic}")
            msg = decode(topic.channel, message.payload)
        except ProtocolError as exc:
            self.counters.malformed += 1
            log.warning("ignoring malformed message on %s: %s", message.topic, exc.message)
            return
        try:
            self._on_message(topic.channel, msg)
        except Exception:  # noqa: BLE001 - a handler bug must not kill the link
            log.exception("handler for %s failed", topic.channel)

    # --- publishing --------------------------------------------------------------------------------------------

    def _publish_state(self) -> None:
        self._state_wanted.clear()
        try:
            payload = self._state(DeviceStatus.ONLINE).encode()
        except Exception:  # noqa: BLE001
            log.exception("cannot build the state message")
            return
        self._client.publish(self.topic(Channel.STATE), payload, qos=1, retain=True)

    def publish_reply(self, payload: bytes) -> None:
        self._client.publish(self.topic(Channel.CMD_REPLY), payload, qos=1)

    def _encode(self, batch: list[Item]) -> tuple[str, bytes, int]:
        first = batch[0]
        if first.channel == Channel.TELEMETRY:
            dropped = 0
            if not self._reporting_dropped:
                dropped = self.spool.dropped()
            msg = TelemetryMessage(device_id=self.cfg.device_id, samples=[i.body for i in batch], dropped=dropped)
            return self.topic(Channel.TELEMETRY), msg.encode(), dropped
        if first.channel == Channel.EVENTS:
            body = dict(first.body, device_id=self.cfg.device_id)
            msg = EventMessage.from_dict(body)
            return self.topic(Channel.EVENTS), msg.encode(), 0
        raise ProtocolError(f"spool holds an item for unknown channel {first.channel!r}")

    def pump(self) -> int:
        """Hand pending spool items to paho while the in-flight window has room; returns messages sent."""
        if not self._connected.is_set():
            return 0
        room = self.cfg.mqtt.inflight_max - len(self._inflight)
        if room <= 0:
            return 0
        items = self.spool.pending(limit=room * self.batch_max)
        sent = 0
        for batch in batch_items(items, self.batch_max)[:room]:
            ids = [i.id for i in batch]
            try:
                topic, payload, dropped = self._encode(batch)
            except ProtocolError as exc:
                log.error("dropping unpublishable spool item(s) %s: %s", ids, exc.message)
                self.spool.ack(ids)
                continue
            info = self._client.publish(topic, payload, qos=1)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS and info.rc != self._mqtt.MQTT_ERR_NO_CONN:
                log.warning("publish failed: %s", info.rc)
                break
            self._inflight[info.mid] = (ids, dropped)
            if dropped:
                self._reporting_dropped = True
            self.spool.mark_inflight(ids)
            self.counters.published += 1
            sent += 1
        return sent

    # --- the thread ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def _try_connect(self, first: bool) -> bool:
        m = self.cfg.mqtt
        try:
            if first:
                self._client.connect(m.host, m.port, keepalive=m.keepalive, clean_start=False,
                                     properties=self._connect_props)
            else:
                self._client.reconnect()
        except (OSError, ValueError) as exc:
            self.counters.connect_failures += 1
            log.debug("connect to %s:%s failed: %s", m.host, m.port, exc)
            return False
        self._socket_open = True
        return True

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            if not self._socket_open:
                now = time.monotonic()
                if now < self._next_attempt:
                    self._stop.wait(min(0.2, self._next_attempt - now))
                    continue
                if self._try_connect(first):
                    first = False
                else:
                    self._next_attempt = time.monotonic() + self.backoff.next()
                    continue
            rc = self._client.loop(timeout=0.05)
            if rc != self._mqtt.MQTT_ERR_SUCCESS:
                if self._socket_open:  # (on_disconnect already scheduled the next attempt otherwise)
                    self._next_attempt = time.monotonic() + self.backoff.next()
                self._connected.clear()
                self._socket_open = False
                continue
            if self._connected.is_set():
                if self._connected_at and time.monotonic() - self._connected_at > STABLE_AFTER:
                    self.backoff.reset()
                    self._connected_at = 0.0
                if self._state_wanted.is_set():
                    self._publish_state()
                self.pump()

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``offline`` (when connected), flush what is in flight, disconnect cleanly."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._connected.is_set():
            try:
                offline = self._state(DeviceStatus.OFFLINE).encode()
                info = self._client.publish(self.topic(Channel.STATE), offline, qos=1,
                                            retain=True)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and (not info.is_published() or self._inflight):
                    if self._client.loop(timeout=0.05) != self._mqtt.MQTT_ERR_SUCCESS:
                        break
                self._client.disconnect()
                self._client.loop(timeout=0.1)
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("clean disconnect failed", exc_info=True)
        self._connected.clear()
