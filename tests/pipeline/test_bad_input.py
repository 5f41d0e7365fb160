"""Bad input through the real CLI (a subprocess): one line, its exit code, and nothing run or written."""

from __future__ import annotations

import json


from edgekit.errors import ExitCode

from .conftest import edgekit, project

BASE = """\
[pipeline]
name = "digits"
workdir = "work"
{fleet}
[data]
source = "digits.npz"

[train]
function = "train_digits:fit"
params = {{ epochs = 1 }}

[convert]
mode = "int8"

[evaluate]

[gate]
min_accuracy = 0.5

[sign]
version = "1.0.0"
key = "fleet.key"
{extra}"""


def refused(tmp_path, text: str, code: int, *words: str, data=None) -> str:
    path = project(tmp_path, text, data)
    res = edgekit("pipeline", "run", str(path))
    assert res.returncode == code, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:"), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not (tmp_path / "work").exists()  # refused before any step ran: no run, no cache
    return lines[0]


def test_unknown_key_with_its_line(tmp_path, digits_npz):
    text = BASE.format(fleet="", extra="").replace('mode = "int8"', 'mode = "int8"\nmodee = "fp16"')
    line = text.splitlines().index('modee = "fp16"') + 1
    refused(tmp_path, text, ExitCode.USAGE, f"pipeline.toml:{line}:", "unknown key 'modee' in [convert]",
            data=digits_npz)


def test_unknown_step_with_its_line(tmp_path, digits_npz):
    text = BASE.format(fleet="", extra="\n[deploy]\n")
    line = text.splitlines().index("[deploy]") + 1
    refused(tmp_path, text, ExitCode.USAGE, f"pipeline.toml:{line}:", "unknown step [deploy]", data=digits_npz)


def test_a_cycle(tmp_path, digits_npz):
    text = BASE.format(fleet="", extra="").replace("[evaluate]\n", '[evaluate]\nfrom = "sign"\n')
    refused(tmp_path, text, ExitCode.USAGE, "cycle", data=digits_npz)


def test_a_missing_data_path(tmp_path):
    refused(tmp_path, BASE.format(fleet="", extra=""), ExitCode.USAGE, "[data] source digits.npz does not exist")


def test_a_budget_the_parser_cannot_read(tmp_path, digits_npz):
    text = BASE.format(fleet="", extra="").replace('[convert]\nmode = "int8"',
                                                   '[optimize]\nbudget = "size<<120KB"')
    refused(tmp_path, text, ExitCode.USAGE, "budget", "size<<120KB", data=digits_npz)


def test_a_rollout_target_matching_no_device(tmp_path, digits_npz):
    from fleet.setup import init_fleet
    from tests.support.procs import free_port

    init_fleet(tmp_path / "fleet", fleet_id="t", tls_port=free_port(), artifacts_port=free_port())
    text = BASE.format(fleet='fleet = "fleet"', extra='\n[publish]\n\n[rollout]\ntarget = "tag:site=nowhere"\n')
    refused(tmp_path, text, ExitCode.USAGE, "[rollout] target tag:site=nowhere matches no device of fleet t",
            data=digits_npz)


def test_publish_without_a_fleet(tmp_path, digits_npz):
    text = BASE.format(fleet="", extra="\n[publish]\n")
    refused(tmp_path, text, ExitCode.USAGE, "needs a fleet", data=digits_npz)


def test_json_errors_and_unknown_runs(tmp_path, digits_npz):
    path = project(tmp_path, BASE.format(fleet="", extra="\n[deploy]\n"), digits_npz)
    res = edgekit("pipeline", "run", str(path), "--json")
    assert res.returncode == ExitCode.USAGE
    assert json.loads(res.stdout)["error"]["exit_code"] == ExitCode.USAGE
    res = edgekit("pipeline", "show", "p2000", "-f", str(path))
    assert res.returncode == ExitCode.ERROR and "no run 'p2000'" in res.stderr
    res = edgekit("pipeline", "run", str(tmp_path / "absent.toml"))
    assert res.returncode == ExitCode.USAGE and "does not exist" in res.stderr


def test_one_step_for_other_orchestrators(tmp_path, digits_npz):
    """``pipeline step data``: only that step runs (the rest of the file is not touched); its key is written."""
    path = project(tmp_path, BASE.format(fleet="", extra=""), digits_npz)
    res = edgekit("pipeline", "step", "data", str(path), "--key-out", str(tmp_path / "key"))
    assert res.returncode == 0, res.stderr
    key = (tmp_path / "key").read_text()
    assert (tmp_path / "work" / "cache" / "data" / key / "train.npz").is_file()
    assert sorted(p.name for p in (tmp_path / "work" / "cache").iterdir()) == ["data"]
    again = edgekit("pipeline", "step", "data", str(path))
    assert again.returncode == 0 and again.stdout.startswith("data: cached")
