"""The persisted record (real files), the history log, and the policy verdicts."""

from __future__ import annotations

import json

import pytest

from device_agent.update.machine import Event, InvalidTransition, Reason
from device_agent.update.persist import MAX_REJECTED, Record, StateFile, advance, check_consistent, read_history
from device_agent.update.policy import Policy, latency_verdict, probation_verdict
from edgekit.errors import ConfigError

A, B = "a" * 64, "b" * 64
TARGET = {"name": "digits", "version": "2.0.0", "sha256": B, "url": "http://x/b.ekb", "size": 10}
PREV = {"name": "digits", "version": "1.0.0", "sha256": A}


def test_advance_follows_the_table_and_clears_on_idle():
    rec = Record()
    rec, t = advance(rec, Event.START, now=1.0, update_id="u1", target=TARGET, previous=PREV, rollout_id="r1")
    assert (rec.state, t.src, t.dst, t.name, t.seq) == ("DOWNLOADING", "IDLE", "DOWNLOADING", "downloading", 1)
    assert t.target == TARGET and t.update_id == "u1"
    rec, t = advance(rec, Event.FAIL, reason=Reason.HASH_MISMATCH, now=2.0)
    assert (rec.state, rec.reason, t.name, t.reason) == ("FAILED", "hash_mismatch", "failed", "hash_mismatch")
    assert rec.rejected_pairs() == {(B, "r1")}
    rec, t = advance(rec, Event.DONE, now=3.0)
    assert rec.state == "IDLE" and rec.target is None and rec.update_id is None and rec.crashes == 0
    assert t.update_id == "u1" and t.target == TARGET  # the event still names the update it ends
    assert rec.rejected_pairs() == {(B, "r1")}  # remembered beyond the update
    with pytest.raises(InvalidTransition):
        advance(rec, Event.VERIFIED)


def test_superseded_is_not_rejected_and_rejections_are_bounded():
    rec, _ = advance(Record(), Event.START, target=TARGET, rollout_id="r")
    rec, _ = advance(rec, Event.FAIL, reason=Reason.SUPERSEDED)
    assert rec.rejected == []
    rec = Record(rejected=[{"sha256": f"{i:064x}", "rollout_id": None, "reason": "x", "ts": 0}
                           for i in range(MAX_REJECTED)])
    rec, _ = advance(rec, Event.START, target=TARGET)
    rec, _ = advance(rec, Event.FAIL, reason=Reason.GOLDEN_MISMATCH)
    assert len(rec.rejected) == MAX_REJECTED and rec.rejected[-1]["sha256"] == B


def test_state_file_round_trip_and_atomic_replace(tmp_path):
    sf = StateFile(tmp_path / "update")
    assert sf.load() == Record()
    rec, t = advance(Record(), Event.START, target=TARGET, previous=PREV, update_id="u")
    sf.save(rec)
    sf.append_history(t)
    assert sf.load() == rec
    # no temp files are left behind
    assert sorted(p.name for p in (tmp_path / "update").iterdir()) == ["history.jsonl", "state.json"]
    assert [h["dst"] for h in sf.history()] == ["DOWNLOADING"]


def test_corrupt_state_is_moved_aside(tmp_path):
    sf = StateFile(tmp_path)
    sf.path.write_text("{not json")
    rec = sf.load()
    assert rec.state == "IDLE" and "recovered_from" in rec.detail
    assert not sf.path.exists() and any(p.name.startswith("state.json.corrupt-") for p in tmp_path.iterdir())
    sf.path.write_text(json.dumps({"version": 1, "state": "WEIRD"}))
    assert sf.load().state == "IDLE"


def test_history_survives_a_torn_line(tmp_path):
    sf = StateFile(tmp_path)
    _, t1 = advance(Record(), Event.START, target=TARGET)
    sf.append_history(t1)
    with open(sf.history_path, "ab") as f:
        f.write(b'{"seq": 2, "dst": "VERIF')  # a crash in the middle of an append
    rec2, t2 = advance(Record(state="DOWNLOADING", target=TARGET, seq=1), Event.DOWNLOADED)
    sf.append_history(t2)
    assert [h["dst"] for h in read_history(sf.history_path)] == ["DOWNLOADING", "VERIFYING"]
    assert sf.history(limit=1)[0]["dst"] == "VERIFYING"


CONSISTENCY = [
    ("idle ok", Record(), A, {A}, []),
    ("no model", Record(), None, set(), ["no current model"]),
    ("dangling current", Record(), A, {B}, ["not in the store"]),
    ("probation ok", Record(state="PROBATION", target=TARGET, previous=PREV), B, {A, B}, []),
    ("probation without previous", Record(state="PROBATION", target=TARGET, previous=PREV), B, {B},
     ["previous"]),
    ("target current too early", Record(state="STAGED", target=TARGET, previous=PREV), B, {A, B},
     ["before the switch"]),
]


@pytest.mark.parametrize("name,rec,current,store,problems", CONSISTENCY, ids=[c[0] for c in CONSISTENCY])
def test_check_consistent(name, rec, current, store, problems):
    found = check_consistent(rec, current, store)
    assert len(found) == len(problems)
    for want, got in zip(problems, found):
        assert want in got


def test_policy_from_mapping_names_the_bad_key():
    p = Policy.from_mapping({"probation_s": 5, "crash_limit": 2, "self_test_latency": False})
    assert (p.probation_s, p.crash_limit, p.self_test_latency) == (5.0, 2, False)
    for bad, key in [({"probation": 1}, "update.probation"), ({"crash_limit": "x"}, "update.crash_limit"),
                     ({"crash_limit": 0}, "update.crash_limit"), ({"max_error_rate": -1}, "update.max_error_rate"),
                     ({"self_test_latency": 1}, "update.self_test_latency"),
                     ({"latency_ratio": 0.5}, "update.latency_ratio")]:
        with pytest.raises(ConfigError) as exc:
            Policy.from_mapping(bad)
        assert exc.value.key == key


POL = Policy(latency_ratio=1.5, latency_slack_ms=1.0, min_requests=10, max_error_rate=0.1)
VERDICTS = [
    ("faster", {"count": 50, "errors": 0, "p95_ms": 1.0}, {"count": 50, "errors": 0, "p95_ms": 2.0}, None),
    ("within ratio", {"count": 50, "errors": 0, "p95_ms": 14.0}, {"count": 50, "errors": 0, "p95_ms": 10.0}, None),
    ("beyond ratio", {"count": 50, "errors": 0, "p95_ms": 16.0}, {"count": 50, "errors": 0, "p95_ms": 10.0},
     Reason.LATENCY_REGRESSION),
    ("tiny model within slack", {"count": 50, "errors": 0, "p95_ms": 0.9}, {"count": 50, "errors": 0, "p95_ms": 0.1},
     None),
    ("errors", {"count": 50, "errors": 6, "p95_ms": 1.0}, {"count": 50, "errors": 0, "p95_ms": 1.0},
     Reason.ERROR_RATE),
    ("errors at the limit", {"count": 50, "errors": 5, "p95_ms": 1.0}, None, None),
    ("too few requests", {"count": 5, "errors": 5, "p95_ms": 99.0}, {"count": 50, "errors": 0, "p95_ms": 1.0},
     None),
    ("no previous figures", {"count": 50, "errors": 0, "p95_ms": 99.0}, {"count": 3, "errors": 0, "p95_ms": 1.0},
     None),
]


@pytest.mark.parametrize("name,new,prev,reason", VERDICTS, ids=[v[0] for v in VERDICTS])
def test_probation_verdict(name, new, prev, reason):
    assert probation_verdict(new, prev, POL) is reason


def test_latency_verdict_missing_figures():
    assert latency_verdict(None, 1.0, POL) is None and latency_verdict(5.0, None, POL) is None
    assert latency_verdict(5.0, 1.0, POL) is Reason.LATENCY_REGRESSION
