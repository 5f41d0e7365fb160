"""A device stand-in for fleet tests: a real paho MQTT 5 client in its own process that publishes protocol messages
(birth, telemetry with contiguous seq numbers, events) with a device package's credentials.

    python -m tests.fleet.devsim PACKAGE --messages 100 --samples 2 [--rate 200] [--auth cert] [--stay 0]

It prints one JSON line at the end: {"device": ..., "published": n, "acked": n}.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from edgekit.protocol import EventMessage, StateMessage, TelemetryMessage, Topic


def sample(seq: int, ts: float, version: str = "1.0.0") -> dict:
    return {"seq": seq, "ts": ts, "interval_s": 1.0,
            "system": {"cpu_percent": 10 + seq % 50, "mem_percent": 40.0, "disk_percent": 55.5,
                       "temperature_c": {"cpu-thermal": 45.0 + seq % 10}, "load": [0.5, 0.4, 0.3],
                       "agent_rss": 50_000_000},
            "inference": {version: {"count": 100, "errors": seq % 3 == 0, "p50_ms": 2.0, "p95_ms": 3.0 + seq % 5,
                                    "p99_ms": 4.5}}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("package", type=Path)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0, help="messages per second (0: as fast as possible)")
    ap.add_argument("--auth", default="cert")
    ap.add_argument("--events", type=int, default=0)
    ap.add_argument("--stay", type=float, default=0, help="seconds to stay connected after publishing")
    ap.add_argument("--seq-start", type=int, default=0)
    ap.add_argument("--model-version", default="1.0.0")
    ap.add_argument("--reconnect-min", type=float, default=0.1, help="first reconnect delay (an agent's backoff)")
    args = ap.parse_args(argv)

    cfg = tomllib.loads((args.package / "agent.toml").read_text())
    dev, fleet = cfg["device_id"], cfg["fleet"]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(args.package / "ca.pem"))
    if args.auth == "cert":
        ctx.load_cert_chain(str(args.package / "client.pem"), str(args.package / "client.key"))
    else:
        c.username_pw_set(dev, (args.package / "password").read_text())
    c.tls_set_context(ctx)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(args.reconnect_min, max(1.0, args.reconnect_min * 2))
    state_t = str(Topic(fleet, dev, "state"))
    c.will_set(state_t, StateMessage(dev, "offline").encode(), qos=1, retain=True)
    connected = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: connected.set() if not rc.is_failure else None
    c.on_disconnect = lambda cl, u, f, rc, p: connected.clear()
    acked_mids: set[int] = set()
    c.on_publish = lambda cl, u, mid, rc, p: acked_mids.add(mid)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect_async(cfg["mqtt"]["host"], cfg["mqtt"]["port"], clean_start=False, properties=props)
    c.loop_start()
    if not connected.wait(20):
        print(json.dumps({"device": dev, "error": "no connection"}))
        return 1
    model = {"name": "digits", "version": args.model_version, "sha256": "ab" * 32}
    infos = [c.publish(state_t, StateMessage(dev, "online", agent_version="sim", runtime={"backend": "sim"},
                                             hardware={"machine": "x86_64", "cores": 2}, model=model,
                                             update={"state": "IDLE"}).encode(), qos=1, retain=True)]
    tel_t = str(Topic(fleet, dev, "telemetry"))
    seq = args.seq_start
    start = time.monotonic()
    for i in range(args.messages):
        samples = []
        for _ in range(args.samples):
            samples.append(sample(seq, time.time(), args.model_version))
            seq += 1
        infos.append(c.publish(tel_t, TelemetryMessage(dev, samples).encode(), qos=1))
        if args.rate:
            delay = start + (i + 1) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    ev_t = str(Topic(fleet, dev, "events"))
    for i in range(args.events):
        infos.append(c.publish(ev_t, EventMessage(dev, i, "committed", model=model).encode(), qos=1))
    deadline = time.monotonic() + 120
    # a message published while the broker was away is queued by paho and sent on reconnect: wait for every PUBACK
    mids = {i.mid for i in infos}
    while not mids <= acked_mids and time.monotonic() < deadline:
        time.sleep(0.01)
    acked = len(mids & acked_mids)
    if args.stay:
        time.sleep(args.stay)
    c.publish(state_t, StateMessage(dev, "offline").encode(), qos=1, retain=True).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"device": dev, "published": len(infos), "acked": acked, "samples": seq - args.seq_start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
