"""Prometheus metrics of the fleet service: the exposition on /metrics, bounded labels, and a real Prometheus
(Debian package) scraping the service and answering a query through its HTTP API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from edgekit.protocol import TelemetryMessage, Topic
from tests.support.procs import free_port, stop_pid, wait_port

from .conftest import REPO, spawn, wait_for


def _families(url: str) -> dict[str, dict]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: dict[str, dict] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name + ("_total" if fam.type == "counter" else ""), {})  # also when it has no samples
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def service(fleet, tmp_path, digits_fp32_tflite):
    from edgekit.bundle import create_bundle
    from fleet.service import FleetService, ServiceOptions

    pkgs = {d: fleet.provision(d, tags={"site": "lab"}).package for d in ("d1", "d2")}
    bundle = create_bundle(digits_fp32_tflite, tmp_path / "v2.ekb", name="digits", version="2.0.0",
                           key=fleet.ctx.signing_key_path)
    svc = FleetService(fleet.ctx, ServiceOptions(replica="m", rollouts=True,
                                                 rollout_interval=0.2)).start(wait_connected=10)
    svc.pkgs, svc.bundle = pkgs, bundle
    yield svc
    svc.stop()


def test_metrics_cover_ingest_devices_rollouts_artifacts_and_the_broker(fleet, service):
    from fleet.link import FleetLink
    from fleet.rollout.service import create_rollout, open_store

    svc = service
    p = spawn(["-m", "tests.fleet.devsim", str(svc.pkgs["d1"]), "--messages", "20", "--samples", "1",
               "--stay", "30"])
    try:
        wait_for(lambda: _families(svc.http.url).get("edgekit_devices_online", {}).get(()) == 1,
                 what="d1 online in the metrics")
        link = FleetLink.from_context(fleet.ctx).connect()
        try:
            link.publish(str(Topic(fleet.ctx.fleet_id, "d1", "telemetry")), b"{not json")
            link.publish(str(Topic(fleet.ctx.fleet_id, "ghost", "telemetry")),
                         TelemetryMessage("ghost", [{"seq": 0, "ts": time.time()}]).encode())
        finally:
            link.close()
        wait_for(lambda: svc.stored >= 21, what="devsim's messages stored")
        r = create_rollout(fleet.ctx, open_store(fleet.ctx), svc.bundle, "all", stages="1,100%", soak="1h")
        wait_for(lambda: len(open_store(fleet.ctx).get(r.id).assignments) == 1, what="the canary assigned")
        with urllib.request.urlopen(r.bundle.url, timeout=10) as resp:  # one bundle download
            size = len(resp.read())
        m = wait_for(lambda: (lambda f: f if f["edgekit_ingest_messages_rejected_total"].get(
            (("reason", "telemetry"),)) == 1 else None)(_families(svc.http.url)), what="rejections counted")
    finally:
        stop_pid(p.pid)
    assert m["edgekit_ingest_messages_received_total"][()] >= 23
    assert m["edgekit_ingest_messages_stored_total"][()] >= 21
    assert m["edgekit_ingest_messages_rejected_total"][(("reason", "unknown_device"),)] == 1
    assert 0 <= m["edgekit_ingest_lag_seconds"][()] < 60
    assert m["edgekit_devices"] == {(("status", "online"),): 1, (("status", "offline"),): 1}
    assert m["edgekit_devices_by_model"][(("model", "digits"), ("version", "1.0.0"))] == 1
    assert m["edgekit_devices_by_update_state"][(("state", "IDLE"),)] == 1
    assert m["edgekit_rollout_state"] == {(("rollout", r.id), ("state", "running")): 1}
    assert m["edgekit_rollout_stage"][(("rollout", r.id),)] == 1
    assert m["edgekit_rollout_stage_devices"][(("rollout", r.id), ("stage", "1"), ("status", "pending"))] == 1
    assert m["edgekit_artifact_downloads_total"][()] == 1 and m["edgekit_artifact_bytes_total"][()] == size
    assert m["edgekit_broker_connected"][()] == 1 and m["edgekit_broker_connects_total"][()] >= 1
    # bounded cardinality: no per-device label unless asked for
    assert not any(dict(labels).get("device") for fam in m.values() for labels in fam)
    from fleet.metrics import Metrics

    body, _ = Metrics(fleet.ctx, svc.stats, per_device=True).render()
    assert b'edgekit_device_online{device="d2"} 0.0' in body and b'edgekit_device_online{device="d1"}' in body


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="the Debian package 'prometheus' is not installed")
def test_a_real_prometheus_scrapes_the_service(fleet, service, tmp_path):
    svc = service
    port = free_port()
    target = svc.http.url.removeprefix("http://")
    conf = tmp_path / "prometheus.yml"
    conf.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                    f"  - job_name: edgekit\n    static_configs:\n      - targets: ['{target}']\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    p = spawn(["-m", "tests.fleet.devsim", str(svc.pkgs["d2"]), "--messages", "15", "--samples", "1",
               "--stay", "60"])
    try:
        wait_port(port, timeout=60)
        wait_for(lambda: svc.stored >= 16, what="devsim's messages stored")
        want = svc.ingest.stats.received

        def query(expr: str, raw: bool = False):
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    data = json.loads(r.read())
            except urllib.error.HTTPError as exc:  # 400: the expression does not parse
                try:
                    data = json.loads(exc.read())
                except ValueError:  # 503 'Service Unavailable' while its storage starts
                    return None
            except OSError:
                return None
            if raw:
                return data
            res = data["data"]["result"] if data.get("status") == "success" else []
            return float(res[0]["value"][1]) if res else None

        wait_for(lambda: _ready(port), 60, what="Prometheus ready")
        wait_for(lambda: (query('edgekit_ingest_messages_received_total{job="edgekit"}') or 0) >= want, 60,
                 what="Prometheus to have scraped the received counter")
        assert query('edgekit_devices_online{job="edgekit"}') == 1.0
        assert query('up{job="edgekit"}') == 1.0
        assert query('edgekit_devices{job="edgekit",status="offline"}') == 1.0
        # every query of docs/grafana-dashboard.json is valid PromQL over metrics this service exports
        names = set(_families(svc.http.url))
        dash = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
        for panel in dash["panels"]:
            for t in panel["targets"]:
                expr = t["expr"].replace("$job", ".*")
                assert query(expr, raw=True)["status"] == "success", expr
                for name in re.findall(r"\bedgekit_[a-z_]+", expr):
                    assert name in names, f"{panel['title']}: {name} is not exported"
    finally:
        stop_pid(p.pid)
        stop_pid(proc.pid)
