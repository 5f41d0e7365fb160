"""Updates end to end: a real agent process, real bundles, a real Mosquitto with a retained desired, an HTTP server."""

from __future__ import annotations

import threading
import time

import numpy as np

from .harness import expected_output

HAPPY = ["downloading", "downloaded", "verified", "self_test", "self_test_passed", "switched", "committed", "idle"]


def is_subsequence(wanted: list[str], names: list[str]) -> bool:
    it = iter(names)
    return all(any(n == w for n in it) for w in wanted)


def serving_check(rig, allowed: dict[str, str]) -> str:
    """The agent serves one of ``allowed`` ({sha: bundle key}), and its output is bit-exact to LiteRT's."""
    dtype = rig.agent.get("/v1/model")["inputs"][0]["dtype"]
    x = rig.bundles["sample"] if dtype == "int8" else rig.bundles["sample_f32"]
    status, out, sha = rig.agent.infer(x)
    assert status == 200, f"inference failed with HTTP {status}"
    assert sha in allowed, f"serving {sha}, expected one of {sorted(allowed.values())}"
    np.testing.assert_array_equal(out, expected_output(rig.bundles[allowed[sha]], x))
    health = rig.agent.get("/v1/health")
    assert health["status"] == "ok" and health["model"]["sha256"] == sha
    return allowed[sha]


class LoadLoop(threading.Thread):
    """Local-API requests back to back on one keep-alive connection; records every status and answering model."""

    def __init__(self, agent, x):
        super().__init__(daemon=True)
        self.agent, self.x = agent, x
        self.results: list[tuple[int, str | None, np.ndarray | None]] = []
        self.stop_flag = threading.Event()

    def run(self):
        conn = self.agent._conn()
        try:
            while not self.stop_flag.is_set():
                try:
                    status, out, sha = self.agent.infer(self.x, conn)
                except OSError as exc:
                    status, out, sha = -1, None, repr(exc)
                    conn.close()
                    conn = self.agent._conn()
                self.results.append((status, sha, out))
        finally:
            conn.close()

    def stop(self):
        self.stop_flag.set()
        self.join(10)

    def wait_answers(self, n: int, timeout: float = 30.0, sha: str | None = None) -> None:
        """Wait until ``n`` more requests (answered by model ``sha``, when given) have been made from now on."""
        start = len(self.results)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for r in self.results[start:] if sha is None or r[1] == sha) >= n:
                return
            if not self.is_alive():
                break
            time.sleep(0.01)
        raise TimeoutError(f"fewer than {n} more answers{' from ' + sha[:12] if sha else ''} within {timeout}s")


def test_update_commits_and_a_live_swap_fails_no_request(rig_factory):
    rig = rig_factory({"probation_s": 2.0})
    v1, v2 = rig.sha("v1"), rig.sha("v2")
    store = rig.agent.store()  # v1 already installed (as after the first boot), so the agent starts lean
    store.set_current(store.install(rig.bundles["v1"], rig.bundles["pub"]).sha256)
    rig.agent.start()
    assert rig.agent.wait_ready()
    assert "cryptography" not in open(f"/proc/{rig.agent.proc.pid}/maps").read()
    assert serving_check(rig, {v1: "v1"}) == "v1"
    loop = LoadLoop(rig.agent, rig.bundles["sample"])
    loop.start()
    try:
        rig.events.publish_desired(rig.desired("v2"))
        rig.agent.wait_history(lambda h: any(i["name"] == "idle" and i["src"] == "COMMITTED" for i in h),
                               timeout=60, what="commit")
        loop.wait_answers(20, sha=v2)  # requests keep being answered, by v2, after the commit
    finally:
        loop.stop()
    statuses = [s for s, _, _ in loop.results]
    assert len(statuses) > 50
    assert all(s == 200 for s in statuses), f"{sum(s != 200 for s in statuses)} failed requests"
    seen = [sha for _, sha, _ in loop.results]
    assert seen[0] == v1 and seen[-1] == v2
    switch_at = seen.index(v2)
    assert set(seen[switch_at:]) == {v2}, "the swap must be one-way and atomic"
    exp = {v1: expected_output(rig.bundles["v1"], rig.bundles["sample"]),
           v2: expected_output(rig.bundles["v2"], rig.bundles["sample"])}
    for _, sha, out in loop.results:
        np.testing.assert_array_equal(out, exp[sha])
    assert serving_check(rig, {v2: "v2"}) == "v2"

    names = rig.events.wait(lambda ev: "idle" in [e["event"] for e in ev] and [e["event"] for e in ev],
                            what="idle event")
    assert is_subsequence(HAPPY, rig.events.names()), rig.events.names()
    committed = next(e for e in rig.events.events() if e["event"] == "committed")
    assert committed["model"]["sha256"] == v2 and committed["rollout_id"] == "r1"
    rec = rig.agent.record()
    assert rec["state"] == "IDLE" and rec["seq"] == len(HAPPY)
    assert {e.sha256 for e in rig.agent.store().entries()} == {v1, v2}
    assert rig.agent.store().previous().sha256 == v1
    assert names
    # verification ran in child processes: the signature code never became resident in the agent
    maps = open(f"/proc/{rig.agent.proc.pid}/maps").read()
    assert "cryptography" not in maps


def test_a_model_already_in_the_store_is_not_downloaded_again(rig_factory):
    rig = rig_factory({"probation_s": 0.5})
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("v2"), rollout_id="r1")
    rig.agent.wait_history(lambda h: [i for i in h if i["name"] == "committed"], what="commit of v2")
    # back to v1 in a new rollout: v1 is still in the store (previous), so no byte is fetched
    rig.events.publish_desired(rig.desired("v1"), rollout_id="r2")
    rig.agent.wait_history(lambda h: [i for i in h if i["name"] == "committed" and i["rollout_id"] == "r2"],
                           what="commit of v1")
    assert rig.server.requests_for("v1.ekb") == []
    skipped = [i for i in rig.agent.history() if i["name"] == "downloaded" and i["rollout_id"] == "r2"]
    assert skipped[0]["detail"] == {"skipped": "already in the store"}
    verified = [i for i in rig.agent.history() if i["name"] == "verified" and i["rollout_id"] == "r2"]
    assert verified[0]["detail"] == {"from": "store"}  # the stored copy was checked again on disk
    assert serving_check(rig, {rig.sha("v1"): "v1"}) == "v1"
    assert rig.agent.store().previous().sha256 == rig.sha("v2")


def test_update_in_an_agent_only_venv(rig_factory, agent_python):
    """The updater and its self-test child need nothing beyond ``edgekit[agent]`` (no TensorFlow)."""
    import subprocess

    probe = subprocess.run([agent_python, "-c", "import importlib.util as u; print(u.find_spec('tensorflow'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None"
    rig = rig_factory({"probation_s": 0.5}, python=agent_python)
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("v2"))
    rig.agent.wait_history(lambda h: [i for i in h if i["name"] == "committed"], what="commit")
    passed = next(i for i in rig.agent.history() if i["name"] == "self_test_passed")
    assert passed["detail"]["self_test"]["runtime"]["backend"] == "ai-edge-litert"
    assert serving_check(rig, {rig.sha("v2"): "v2"}) == "v2"
