"""Every option table in docs/*.md against the commands' ``--help``: each documented option exists on the command
it is documented for, and a documented default is the one ``--help`` shows.

Two kinds of tables are read: option tables (first column ``--option``, optionally a ``default`` column; the
command is the ``edgekit ...`` named above the table that has the most of its options) and command tables (first
column an ``edgekit ...`` synopsis; every ``--option`` in it must exist on that command)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from edgekit.cli import cli

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted((REPO / "docs").glob("*.md"))
_OPT = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")


def _tables(text: str):
    """(line index, rows) of every markdown table; rows are lists of stripped cells, header first."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| ]+\|$", lines[i + 1]):
            rows, j = [], i
            while j < len(lines) and lines[j].startswith("|"):
                if j != i + 1:
                    rows.append([c.strip() for c in re.split(r"(?<!\\)\|", lines[j].strip())[1:-1]])
                j += 1
            yield i, rows
            i = j
        else:
            i += 1


def _resolve(words: list[str]) -> tuple[click.Command, list[str]] | None:
    """The deepest command named by the leading words of ``edgekit w1 w2 ...``."""
    cmd: click.Command = cli
    path: list[str] = []
    for w in words:
        if not isinstance(cmd, click.Group):
            break
        sub = cmd.get_command(click.Context(cmd), w)
        if sub is None:
            break
        cmd, path = sub, path + [w]
    return (cmd, path) if path else None


def _help_records(cmd: click.Command) -> dict[str, str]:
    """option name -> the help text ``--help`` prints for it (click's own help record)."""
    ctx = click.Context(cmd, info_name=cmd.name)
    out: dict[str, str] = {}
    for p in cmd.get_params(ctx):
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        for name in _OPT.findall(rec[0]):
            out[name] = rec[1]
    return out


def _collect():
    cases = []
    for doc in DOCS:
        text = doc.read_text()
        lines = text.splitlines()
        for start, rows in _tables(text):
            header, body = rows[0], rows[1:]
            first = [r[0] for r in body if r]
            if first and all(c.startswith("`--") for c in first):  # an option table
                # the command documented is the one named above the table that has the most of its options
                above = [m for ln in lines[:start] for m in re.findall(r"edgekit ((?:[a-z][\w-]* ?)+)", ln)]
                named = [r for r in (_resolve(a.split()) for a in above) if r]
                opts = {o for c in first for o in _OPT.findall(c)}
                target = max(named, key=lambda t: len(opts & set(_help_records(t[0]))), default=None)
                assert target is not None, f"{doc.name}:{start + 1}: no 'edgekit ...' command above this option table"
                dcol = header.index("default") if "default" in header else None
                for r in body:
                    names = _OPT.findall(r[0])  # `--port INTEGER`, `--tls / --no-tls`: every name must exist
                    for i, name in enumerate(names):
                        cases.append((f"{doc.name}:{start + 1}", target, name, r[dcol] if dcol and i == 0 else None))
            elif first and any(c.startswith("`edgekit ") for c in first):  # a command table
                for r in body:
                    m = re.match(r"`edgekit ([^`]*)`", r[0])
                    if not m:
                        continue
                    words = m.group(1).split()
                    target = _resolve([w for w in words if not w.startswith(("-", "[", "<")) and w.islower()])
                    assert target is not None, f"{doc.name}: {r[0]} names no command"
                    for opt in sorted(set(_OPT.findall(m.group(1)))):
                        cases.append((f"{doc.name}:{start + 1}", target, opt, None))
    return cases


CASES = _collect()


def test_the_docs_have_option_tables():
    assert len(CASES) > 30 and {c[0].split(":")[0] for c in CASES} >= {"rollouts.md", "agent.md"}


@pytest.mark.parametrize("where,target,option,default", CASES,
                         ids=[f"{c[0]}:{' '.join(c[1][1])}:{c[2]}" for c in CASES])
def test_documented_option_matches_help(where, target, option, default):
    cmd, path = target
    records = _help_records(cmd)
    assert option in records, f"{where}: 'edgekit {' '.join(path)}' has no {option} (--help: {sorted(records)})"
    if default is None:
        return
    help_text = records[option]
    param = next(p for p in cmd.params if option in getattr(p, "opts", []) + getattr(p, "secondary_opts", []))
    if default == "(required)":
        assert param.required, f"{where}: {option} is documented as required"
    elif default == "none":
        assert param.get_default(click.Context(cmd)) is None, f"{where}: {option} is documented to default to none"
    elif default == "off":
        effective = param.get_default(click.Context(cmd))
        assert getattr(param, "is_flag", False) and not effective, f"{where}: {option} is documented off"
    else:
        value = default.strip("`")
        shown = re.search(r"\(default:? ([^)]*)\)|\[default: ([^\]]*)\]|^default (\S+)", help_text)
        if shown:
            assert value == next(g for g in shown.groups() if g), (
                f"{where}: {option} default {value} vs --help {help_text!r}")
        else:  # --help names no default: the option's own default is what a user gets
            effective = param.get_default(click.Context(cmd))
            assert effective is not None and _same(value, effective), (
                f"{where}: {option} default {value} vs the option's {effective!r}")


def _same(doc: str, value) -> bool:
    try:
        return float(doc) == float(value)
    except (TypeError, ValueError):
        return doc == str(value)
