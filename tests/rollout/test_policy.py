"""Parsing rollout options: good inputs give exact values, bad ones a PolicyError with a hint."""

from __future__ import annotations

import pytest

from fleet.rollout.errors import PolicyError
from fleet.rollout.policy import (Policy, Stage, build_policy, parse_duration, parse_fraction, parse_ratio,
                                  parse_stages, stage_sizes)


@pytest.mark.parametrize("text,seconds", [("5m", 300), ("30s", 30), ("1h30m", 5400), ("500ms", 0.5), ("90", 90),
                                          ("0", 0), ("2.5s", 2.5), ("1d", 86400), ("1w", 604800), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "-5s", "5 m", "1h 2m", "abc"])
def test_bad_durations(text):
    with pytest.raises(PolicyError) as e:
        parse_duration(text, "--soak")
    assert "--soak" in e.value.message and e.value.hint


@pytest.mark.parametrize("text,value", [("95%", 0.95), ("0.95", 0.95), ("0%", 0.0), ("100%", 1.0), ("5%", 0.05)])
def test_fractions(text, value):
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("text,hint", [("95", "95%"), ("101%", "95%"), ("x%", "percentage"), ("-1%", "95%")])
def test_bad_fractions(text, hint):
    with pytest.raises(PolicyError) as e:
        parse_fraction(text)
    assert hint in e.value.hint


@pytest.mark.parametrize("text,value", [("20%", 0.2), ("250%", 2.5), ("0.2", 0.2), ("0%", 0.0), (0.2, 0.2)])
def test_ratios(text, value):
    assert parse_ratio(text) == pytest.approx(value)


@pytest.mark.parametrize("text,hint", [("20", "20%"), ("2.5", "2.5%"), ("x", "20%"), ("-5%", "20%")])
def test_bare_ratio_above_one_is_refused_not_taken_as_a_fraction(text, hint):
    # "--max-p95-regression 20" used to become 2000%: a bare number above 1 must be written as a percentage
    with pytest.raises(PolicyError) as e:
        parse_ratio(text, "--max-p95-regression")
    assert hint in e.value.hint and "--max-p95-regression" in e.value.message
    with pytest.raises(PolicyError):
        build_policy(max_p95_regression=text)


def test_stages_and_sizes():
    stages = parse_stages("1,10%,50%,100%")
    assert stages == (Stage(count=1), Stage(percent=0.1), Stage(percent=0.5), Stage(percent=1.0))
    assert stage_sizes(stages, 10) == [1, 1, 5, 10]
    assert stage_sizes(stages, 200) == [1, 20, 100, 200]
    assert stage_sizes(parse_stages("5,100%"), 3) == [3, 3]
    assert stage_sizes(parse_stages("33%,100%"), 3) == [1, 3]


@pytest.mark.parametrize("text", ["", "1,,100%", "0,100%", "1,50%", "50%,10%,100%", "1,150%", "a,100%", "0%,100%"])
def test_bad_stages(text):
    with pytest.raises(PolicyError) as e:
        parse_stages(text)
    assert e.value.hint and e.value.exit_code == 2


def test_policy_round_trip_and_overlap():
    p = build_policy(stages="1,50%,100%", success_threshold="90%", failure_threshold="10%",
                     max_p95_regression="250%", soak="5s", device_timeout="1m", on_failure="abort")
    assert p.max_p95_regression == 2.5 and p.on_failure == "abort" and p.soak == 5
    assert Policy.from_dict(p.to_dict()) == p
    assert "abort" in p.describe()
    with pytest.raises(PolicyError, match="overlap"):
        build_policy(success_threshold="96%", failure_threshold="5%")
    with pytest.raises(PolicyError, match="on-failure"):
        build_policy(on_failure="retry")
