"""CLI registration: every command group loads, none can vanish silently, and the CLI modules form no cycle."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import click
import grimp
import pytest

from edgekit.cli import CORE_COMMANDS, LAZY_COMMANDS, cli
from edgekit.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
# the subcommands each group must have: a group that lost one (e.g. to a swallowed ImportError) fails here
EXPECTED = {
    "fleet": {"init", "broker", "provision", "serve", "devices", "telemetry", "rollout"},
    "agent": {"install", "run", "status", "infer", "rollback", "history"},
    "bundle": {"create", "inspect", "verify"},
    "keys": {"generate"},
    "pipeline": {"run", "runs", "show", "compile", "step"},
}


@pytest.mark.parametrize("name", sorted({**LAZY_COMMANDS, **CORE_COMMANDS}))
def test_every_command_module_imports_and_holds_its_command(name):
    module, attr, _ = {**LAZY_COMMANDS, **CORE_COMMANDS}[name]
    cmd = getattr(importlib.import_module(module), attr)  # a broken import raises here: a failure, not a skip
    assert isinstance(cmd, click.Command)
    assert cli.get_command(click.Context(cli), name) is cmd
    if name in EXPECTED:
        assert EXPECTED[name] <= set(cmd.commands), sorted(cmd.commands)


def _cli_modules(graph) -> set[str]:
    return {m for m in graph.modules if re.search(r"(^|\.)cli(_\w+)?$", m)}


def test_cli_modules_import_each_other_in_one_direction_only():
    graph = grimp.build_graph("edgekit", "converters", "device_agent", "fleet", "pipelines")
    mods = _cli_modules(graph)
    assert {"fleet.cli", "fleet.rollout.cli", "device_agent.cli", "device_agent.update.cli"} <= mods
    cycles = sorted((a, b) for a in mods for b in mods
                    if a < b and graph.find_shortest_chain(a, b) and graph.find_shortest_chain(b, a))
    assert cycles == [], f"CLI modules that import each other (directly or through others): {cycles}"


def test_no_import_error_is_swallowed_where_commands_are_registered():
    pattern = re.compile(r"except\s+(ImportError|ModuleNotFoundError)\s*(as\s+\w+)?:\s*\n\s*pass\b")
    offenders = [str(p.relative_to(REPO)) for pkg in ("edgekit", "converters", "device_agent", "fleet")
                 for p in (REPO / pkg).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_python_m_device_agent_reports_errors_like_edgekit():
    # one error boundary: the same one-line message and exit code through both entry points
    args = ["status", "--url", "http://127.0.0.1:9/"]
    a = subprocess.run([sys.executable, "-m", "device_agent", *args], capture_output=True, text=True, cwd=REPO)
    b = subprocess.run([str(Path(sys.executable).with_name("edgekit")), "agent", *args], capture_output=True,
                       text=True, cwd=REPO)
    assert a.returncode == b.returncode == ExitCode.ERROR, (a.stderr, b.stderr)
    assert a.stderr == b.stderr and a.stderr.startswith("edgekit: error: ") and "Traceback" not in a.stderr
    assert len(a.stderr.strip().splitlines()) == 1


def test_exit_codes_are_one_table_documented_in_the_readme():
    from converters.errors import AccuracyBudgetError, OptionError
    from edgekit.errors import EdgekitError, MissingExtraError, UsageError

    readme = (REPO / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert documented == {int(c) for c in ExitCode}
    assert len({int(c) for c in ExitCode}) == len(ExitCode)  # no two meanings share a code
    assert (EdgekitError.exit_code, UsageError.exit_code, MissingExtraError.exit_code, OptionError.exit_code,
            AccuracyBudgetError.exit_code) == (ExitCode.ERROR, ExitCode.USAGE, ExitCode.MISSING_EXTRA,
                                               ExitCode.USAGE, ExitCode.BUDGET_NOT_MET)
    # every exit code in the product code is a member of the table, never a bare number
    bare = [f"{p.relative_to(REPO)}: {ln.strip()}" for pkg in ("edgekit", "converters", "device_agent", "fleet")
            for p in (REPO / pkg).rglob("*.py") for ln in p.read_text().splitlines()
            if re.search(r"(exit_code\s*=|SystemExit\(|ctx\.exit\()\s*\d", ln)]
    assert bare == []


def test_no_error_class_name_is_defined_twice():
    import converters.errors
    import device_agent.errors
    import device_agent.update.errors
    import edgekit.errors
    import fleet.errors
    import fleet.rollout.errors
    from edgekit.errors import EdgekitError

    seen: dict[str, str] = {}
    dupes = []
    for mod in (edgekit.errors, converters.errors, device_agent.errors, device_agent.update.errors, fleet.errors,
                fleet.rollout.errors):
        for name, obj in vars(mod).items():
            if isinstance(obj, type) and issubclass(obj, EdgekitError) and obj.__module__ == mod.__name__:
                if name in seen:
                    dupes.append((name, seen[name], mod.__name__))
                seen[name] = mod.__name__
    assert dupes == []
    assert issubclass(fleet.rollout.errors.RolloutError, fleet.errors.FleetError)


def test_cli_defaults_are_the_dataclasses_defaults():
    from converters.cli import convert
    from converters.pipeline import ConvertOptions
    from fleet.cli import fleet
    from fleet.config import ArtifactsConfig, BrokerConfig
    from fleet.rollout.policy import Policy
    from fleet.service_options import ServiceOptions

    def defaults(cmd):
        return {p.name: p.default for p in cmd.params}

    conv, opts = defaults(convert), {f.name: f.default for f in __import__("dataclasses").fields(ConvertOptions)}
    for name in ("target", "calibration_samples", "scale", "offset", "max_float_layers", "threads", "runs", "version"):
        assert conv[name] == opts[name], name
    serve, init = defaults(fleet.commands["serve"]), defaults(fleet.commands["init"])
    so = ServiceOptions()
    assert (serve["replica"], serve["batch_size"], serve["flush_interval"]) == (so.replica, so.batch_size,
                                                                              so.flush_interval)
    broker, artifacts = BrokerConfig(), ArtifactsConfig()
    assert (init["tls_port"], init["broker_host"], init["artifacts_port"]) == (broker.tls_port, broker.host,
                                                                             artifacts.port)
    create = {p.name: p.help for p in fleet.commands["rollout"].commands["create"].params}
    assert "(default 95%)" in create["success_threshold"] and Policy().success_threshold == 0.95
    assert "(default 5m)" in create["soak"] and Policy().soak == 300
