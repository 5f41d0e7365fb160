"""One duration grammar for every time option: what --since reads, --soak reads, and the reverse."""

from __future__ import annotations

import pytest

from edgekit.durations import ago, format_duration, parse_duration
from edgekit.errors import UsageError

SPELLINGS = ["90", "500ms", "30s", "2.5s", "5m", "1.5h", "1h30m", "2d", "1w", "1d12h", "1w2d"]


@pytest.mark.parametrize("text", SPELLINGS)
def test_since_and_soak_read_the_same_spellings(text):
    # --since used to take 1w but not 1h30m, --soak 1h30m but not 1w
    from fleet.rollout.policy import parse_duration as soak
    from fleet.views import parse_duration as since

    assert since(text) == soak(text) == parse_duration(text)


@pytest.mark.parametrize("text,seconds", [("1w", 604800), ("1h30m", 5400), ("1d12h", 129600), ("500ms", 0.5)])
def test_values(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "1y", "-1h", "soon", "5 m", "1h 2m", "m5"])
def test_bad_spellings_name_the_option(text):
    with pytest.raises(UsageError) as e:
        parse_duration(text, "--since")
    assert "--since" in e.value.message and "1h30m" in e.value.hint and e.value.exit_code == 2


@pytest.mark.parametrize("seconds", [0, 0.25, 1, 59, 61, 3600, 5400, 86400 + 61])
def test_format_reads_back(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_ago_is_one_formatter_for_every_view():
    from fleet.rollout import cli as rollout_cli
    from fleet.views import ago as views_ago

    assert views_ago is ago
    assert ago(None, 100.0) == "never" and ago(None, 1.0, never="-") == "-"
    assert [ago(100.0 - d, 100.0) for d in (5, 90, 7200, 3 * 86400)] == ["5s ago", "2m ago", "2h ago", "3d ago"]
    assert ago(200.0, 100.0) == "0s ago"  # a clock slightly ahead is "just now", never negative
    assert rollout_cli._ago(None) == "-"
