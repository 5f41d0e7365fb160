"""The fleet's own MQTT connection (paho-mqtt 2.x, MQTT 5, mTLS with the fleet service certificate).

Used by the ingest service (persistent session; a shared telemetry subscription with ``--share-telemetry``) and
by the rollout engine (:meth:`FleetLink.publish_desired`: retained, QoS 1, waits for the PUBACK).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from edgekit.extras import require
from edgekit.protocol import Channel, CommandMessage, DesiredMessage, Topic

from .errors import LinkError

log = logging.getLogger("edgekit.fleet.link")

MessageHandler = Callable[[str, bytes], None]


class FleetLink:
    def __init__(self, host: str, port: int, fleet: str, *, ca: Path, cert: Path | None = None,
                 key: Path | None = None, username: str | None = None, password: str | None = None,
                 client_id: str | None = None, clean_start: bool = True, session_expiry: int = 0,
                 subscriptions: Iterable[tuple[str, int]] = (), on_message: MessageHandler | None = None,
                 on_connect: Callable[[], None] | None = None, on_mqtt_message: Callable[[Any], None] | None = None,
                 manual_ack: bool = False, receive_maximum: int | None = None):
        mqtt = require("paho.mqtt.client", "fleet")
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        self.host, self.port, self.fleet = host, port, fleet
        self.client_id = client_id or f"edgekit-fleet-{uuid.uuid4().hex[:12]}"
        self.clean_start = clean_start
        self.subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connect_cb = on_connect
        self._on_mqtt_message = on_mqtt_message
        self.connected = threading.Event()
        self.connects = 0
        self.disconnects = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key))
        c.tls_set_context(ctx)
        if username is not None:
            c.username_pw_set(username, password)
        if manual_ack:
            c.manual_ack_set(True)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.1, 1)  # rejoin fast: a shared group member that is away misses messages
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        self._props = Properties(PacketTypes.CONNECT)
        if session_expiry:
            self._props.SessionExpiryInterval = session_expiry
        if receive_maximum:
            self._props.ReceiveMaximum = receive_maximum
        self.client = c

    @classmethod
    def from_context(cls, ctx, **kw) -> "FleetLink":
        """A link authenticated as the fleet service (full access in the broker ACL)."""
        p = ctx.paths
        return cls(ctx.broker_host, ctx.broker_port, ctx.fleet_id, ca=p.ca_cert, cert=p.service_cert,
                   key=p.service_key, **kw)

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0, wait: bool = True) -> "FleetLink":
        try:
            self.client.connect_async(self.host, self.port, keepalive=30, clean_start=self.clean_start,
                                      properties=self._props)
        except (OSError, ValueError) as exc:
            raise LinkError(f"cannot connect to the broker at {self.host}:{self.port}: {exc}", retryable=True) from exc
        self.client.loop_start()
        if wait and not self.connected.wait(timeout):
            self.close()
            raise LinkError(f"no connection to the broker at {self.host}:{self.port} within {timeout:.0f}s",
                            retryable=True)
        return self

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        if self.subscriptions:  # also after a broker restart that lost the session (session_present == 0)
            client.subscribe([(t, qos) for t, qos in self.subscriptions])
        self.connected.set()
        if self._on_connect_cb:
            self._on_connect_cb()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.disconnects += 1
        log.info("disconnected from the broker (%s); paho reconnects", reason_code)

    def _handle_message(self, client, userdata, message) -> None:
        if self._on_mqtt_message is not None:
            self._on_mqtt_message(message)
        elif self._on_message is not None:
            self._on_message(message.topic, message.payload)

    # --- publishing ----------------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                timeout: float = 10.0) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise LinkError(f"publishing to {topic} failed: {exc}", retryable=True) from exc
        if qos and not info.is_published():
            raise LinkError(f"the broker did not acknowledge {topic} within {timeout:.0f}s", retryable=True)

    def publish_desired(self, device_id: str, desired: DesiredMessage, timeout: float = 10.0) -> None:
        """Set what ``device_id`` should run: retained, QoS 1; returns after the broker's PUBACK."""
        desired.validate()
        self.publish(str(Topic(self.fleet, device_id, Channel.DESIRED)), desired.encode(), retain=True, timeout=timeout)

    def publish_desired_many(self, items: list[tuple[str, DesiredMessage | None]], timeout: float = 10.0) -> int:
        """Put every (device, desired or None to clear) in flight at once, then wait for the PUBACKs; returns how
        many leading items were acknowledged (the caller retries the rest, in order)."""
        infos = []
        for device_id, desired in items:
            if desired is not None:
                desired.validate()
            payload = desired.encode() if desired is not None else b""
            info = self.client.publish(str(Topic(self.fleet, device_id, "desired")), payload, qos=1, retain=True)
            if info.rc != 0:  # not connected: what is queued so far still counts
                break
            infos.append(info)
        deadline = time.monotonic() + timeout + len(infos) / 1000.0
        done = 0
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            done += 1
        return done

    def clear_desired(self, device_id: str, timeout: float = 10.0) -> None:
        self.publish(str(Topic(self.fleet, device_id, Channel.DESIRED)), b"", retain=True, timeout=timeout)

    def send_command(self, device_id: str, command: CommandMessage, timeout: float = 10.0) -> None:
        self.publish(str(Topic(self.fleet, device_id, Channel.CMD)), command.encode(), timeout=timeout)
