"""Attacker-mutated bundles of every class, each delivered to a running agent as the rollout's desired model.

The agent verifies downloads with the same reader as ``edgekit bundle verify``; here it must reject each mutation
with a reason code while the old model answers every local-API request, bit-exact, without one failure.
"""

from __future__ import annotations

from collections import Counter

import pytest

from edgekit.errors import SignatureError
from edgekit.hashing import sha256_hex
from edgekit.keys import load_private_key
from tests.support.bundle_mutations import CLASSES, all_cases

from .test_update_flow import LoadLoop, serving_check

#: the cases driven through the agent: at least one per class, both sides of the JSON class (unsigned / signed)
CASES = ["deep-array-unsigned", "deep-array-signed", "huge-record", "non-hex-char", "other-hex-char",
         "base64-unused-bits", "alg='rsa'", "alg='ED25519'", "gnu-tar-ustar", "tarfile-gnu", "mtime"]


@pytest.mark.slow
def test_every_mutation_class_is_rejected_by_a_running_agent(rig_factory, session_key, tmp_path, capsys):
    rig = rig_factory()
    v1 = rig.sha("v1")
    chosen = {m.case: m for m in all_cases(rig.bundles["v2"].read_bytes(), load_private_key(session_key[0]),
                                           tmp_path / "repack")}
    mutations = [chosen[c] for c in CASES]
    assert {m.cls for m in mutations} == set(CLASSES)
    rig.agent.start()
    assert rig.agent.wait_ready()
    loop = LoadLoop(rig.agent, rig.bundles["sample"])
    loop.start()
    outcomes = []
    try:
        for i, mut in enumerate(mutations):
            path = tmp_path / f"mutated-{i}.ekb"
            path.write_bytes(mut.data)
            # mutations of v2: the desired state names what the rollout meant to ship (the bundle is never read here)
            desired = {"name": "digits", "version": "2.0.0", "sha256": sha256_hex(mut.data),
                       "url": rig.server.url(rig.server.add(path)), "size": len(mut.data)}
            rig.events.publish_desired(desired, rollout_id=f"attack-{i}")
            failed = rig.events.wait(lambda ev: [e for e in ev if e["event"] == "failed"
                                                 and e["model"]["sha256"] == desired["sha256"]],
                                     timeout=60, what=f"failed event for {mut.case}")
            rig.agent.wait_state(lambda r: r["state"] == "IDLE", what=f"IDLE after {mut.case}")
            outcomes.append((mut, failed[0]))
    finally:
        loop.stop()
    for mut, event in outcomes:
        want = "signature_invalid" if mut.expect is SignatureError else "bundle_invalid"
        assert event["reason"] == want, (mut.case, event)
        message = event["detail"].get("message", "")
        assert message and "\n" not in message and "Traceback" not in message, (mut.case, message)
    assert not [e for e in rig.events.events() if e["event"] == "switched"]
    # the old model answered every request during all the attempts, and still serves
    statuses = [s for s, _, _ in loop.results]
    assert len(statuses) > 50 and all(s == 200 for s in statuses), f"{sum(s != 200 for s in statuses)} failed"
    assert {sha for _, sha, _ in loop.results} == {v1}
    assert serving_check(rig, {v1: "v1"}) == "v1"
    assert {e.sha256 for e in rig.agent.store().entries()} == {v1}
    reasons = Counter(event["reason"] for _, event in outcomes)
    with capsys.disabled():
        print(f"\n[agent update path] {len(outcomes)} mutations of {len(CLASSES)} classes rejected "
              f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}); {len(statuses)} local-API requests "
              f"meanwhile, 0 failed, all answered by the old model")
