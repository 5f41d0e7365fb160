"""The JSON API serves what the CLI views show (same store, same functions), filtered and sorted, and streams it
live over server-sent events."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from .conftest import feed

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def populated(dash_ctx):
    from fleet.provision import provision

    for i, (site, version, p95) in enumerate([("lab", "1.0.0", 3.0), ("lab", "2.0.0", 2.0), ("field", "1.0.0", 9.0)]):
        provision(dash_ctx, f"d{i}", tags={"site": site}, groups=["g-odd"] if i % 2 else ["g-even"])
        feed(dash_ctx, f"d{i}", version=version, p95=p95, online=i != 2)
    return dash_ctx


def test_devices_match_the_cli_and_filter_and_sort(populated, client):
    client.login("vic")
    api = client.get("/api/v1/devices?limit=1000").json()
    cli = subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(populated.data_dir),
                          "devices", "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert cli.returncode == 0, cli.stderr
    drop = lambda rows: [{k: v for k, v in r.items() if k != "last_seen"} for r in rows]  # noqa: E731
    assert drop(api["devices"]) == drop(json.loads(cli.stdout))
    ids = lambda q: [d["id"] for d in client.get("/api/v1/devices?" + q).json()["devices"]]  # noqa: E731
    assert ids("tag=site=lab") == ["d0", "d1"]
    assert ids("group=g-odd") == ["d1"]
    assert ids("online=no") == ["d2"]
    assert ids("version=1.0.0") == ["d0", "d2"] and ids("model=digits&version=2.0.0") == ["d1"]
    assert ids("sort=p95_ms") == ["d1", "d0", "d2"] and ids("sort=p95_ms&order=desc") == ["d2", "d0", "d1"]
    assert ids("q=1") == ["d1"]
    assert client.get("/api/v1/devices?sort=nope").status == 400
    assert client.get("/api/v1/devices?tag=site").status == 400
    assert client.get("/api/v1/devices?limit=x").json()["error"] == "limit must be a whole number, got 'x'"


def test_overview_device_and_telemetry(populated, client):
    client.login("vic")
    o = client.get("/api/v1/overview?range=1h").json()
    assert (o["devices"], o["online"], o["offline"]) == (3, 2, 1)
    assert o["by_version"] == {"digits 1.0.0": 2, "digits 2.0.0": 1} and o["by_update_state"] == {"IDLE": 3}
    versions = {p["model_version"] for p in o["series"]}
    assert versions == {"digits@1.0.0", "digits@2.0.0"}
    v2 = [p for p in o["series"] if p["model_version"] == "digits@2.0.0"]
    assert all(p["p95_ms"] == pytest.approx(2.0) for p in v2) and sum(p["count"] for p in v2) == 500
    assert sum(p["errors"] for p in v2) == 2
    d = client.get("/api/v1/devices/d0").json()
    assert d["capabilities"]["runtime"]["delegates"] == ["xnnpack"] and d["capabilities"]["hardware"]["cores"] == 4
    t = client.get("/api/v1/devices/d0/telemetry?range=1h").json()["metrics"]
    assert t["cpu"]["n"] == 5 and t["temp"]["max"] == 54.0
    assert {p["model_version"] for p in t["p99_ms"]["points"]} == {"digits@1.0.0"}
    assert client.get("/api/v1/devices/nope").status == 404
    assert client.get("/api/v1/devices/d0/telemetry?metrics=bogus").status == 400
    assert client.get("/api/v1/overview?range=90d").status == 400
    assert client.get("/api/v1/nothing-here").status == 404


def test_stream_pushes_changes_without_polling_the_page(populated, client):
    """An SSE client gets the devices page again as soon as the registry changes (a device goes offline)."""
    client.login("vic")
    cookie = "; ".join(f"{c.name}={c.value}" for c in client.jar)
    req = urllib.request.Request(client.base + "/api/v1/stream?path=/api/v1/overview",
                                 headers={"cookie": cookie, "accept": "text/event-stream"})
    updates: list[dict] = []
    resp = urllib.request.urlopen(req, timeout=30)
    assert resp.headers["content-type"].startswith("text/event-stream")

    def read():
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                updates.append(json.loads(line[6:]))
                if len(updates) >= 2:
                    return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not updates and time.monotonic() < deadline:
        time.sleep(0.05)
    assert updates and updates[0]["online"] == 2
    feed(populated, "d0", online=False)
    t.join(20)
    resp.close()
    assert len(updates) == 2 and updates[1]["online"] == 1
