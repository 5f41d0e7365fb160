"""The pipeline file: TOML parsing and validation, pure (no files read but the TOML text, nothing imported from
TensorFlow or the fleet's I/O).

```toml
[pipeline]
name = "digits"
fleet = "fleet"          # optional: the fleet's data directory (gate against its release, publish, rollout)
[data]
source = "digits.npz"
[train]
function = "train_digits:fit"
[convert]
mode = "int8"
...
```

Each table is a step (``[pipeline]`` aside); a step's keys are its ``Config`` fields plus ``from = "STEP"``, which
names the step its main input comes from (by default the nearest step before it, in the canonical order, that
produces what it needs). Unknown tables and keys are refused with their line; so are a ``from`` that forms a
cycle, names an absent step, or names one that produces the wrong kind of artifact.
"""

from __future__ import annotations

import dataclasses
import graphlib
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError
from .steps import ORDER, STEPS

PIPELINE_KEYS = ("name", "workdir", "fleet")
DEFAULT_WORKDIR = ".edgekit-pipeline"
_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')\s*(\.\s*[A-Za-z0-9_\-]+\s*)*=")


@dataclass(frozen=True)
class StepSpec:
    name: str
    config: Any                         # the step's Config instance
    raw: dict[str, Any]                 # the keys as written (for the cache key)
    line: int                           # the line of its [table]
    sources: dict[str, str] = field(default_factory=dict)  # input field -> producing step


@dataclass(frozen=True)
class PipelineSpec:
    path: Path | None
    name: str
    workdir: str
    fleet: str | None
    steps: dict[str, StepSpec]          # in run order (a topological order of the inputs)

    @property
    def order(self) -> list[str]:
        return list(self.steps)

    def downstream(self, step: str) -> list[str]:
        """``step`` and every step that depends on it, in run order."""
        hit = {step}
        for name, s in self.steps.items():
            if any(src in hit for src in s.sources.values()):
                hit.add(name)
        return [n for n in self.steps if n in hit]

    def upstream(self, step: str) -> list[str]:
        """``step`` and every step it depends on, in run order."""
        need = {step}
        for name in reversed(self.order):
            if name in need:
                need.update(self.steps[name].sources.values())
        return [n for n in self.steps if n in need]

    @property
    def model_name(self) -> str:
        sign = self.steps.get("sign")
        return (sign.config.name if sign and sign.config.name else None) or self.name


def line_index(text: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Lines of the ``[tables]`` and of each ``key =`` within them (1-based), from the raw text."""
    tables: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    current = ""
    in_multiline = False
    for i, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = False
            continue
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("[["):
            current = m.group(1).strip().strip("\"'")
            tables.setdefault(current, i)
            continue
        k = _KEY.match(line)
        if k:
            keys.setdefault((current, k.group(1).strip("\"'")), i)
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = True
    return tables, keys


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a TOML value fits a Config field's annotation (str, int, float, bool, list[...], dict, optional)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return False


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build_config(step: str, values: dict[str, Any], keys: dict[tuple[str, str], int], where: str | None,
                  table_line: int) -> Any:
    cls = STEPS[step].config
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key == "from":
            continue
        line = keys.get((step, key), table_line)
        if key not in names:
            allowed = ", ".join(names + ["from"])
            raise SpecError(f"unknown key {key!r} in [{step}]", line=line, path=where,
                            hint=f"[{step}] takes: {allowed}")
        if not _accepts(hints[key], value):
            raise SpecError(f"[{step}] {key} = {value!r} is not {_type_name(hints[key])}", line=line, path=where)
    config = cls(**{k: v for k, v in values.items() if k != "from"})
    for key, message in config.validate():
        raise SpecError(message, line=keys.get((step, key), table_line), path=where)
    return config


def _sources(present: list[str], raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each present step's inputs → the step that produces them (``from`` or the nearest earlier producer)."""
    out: dict[str, dict[str, str]] = {}
    for name in present:
        sd = STEPS[name]
        wanted = {**sd.consumes, **sd.optional}
        out[name] = {}
        for fld, kind in wanted.items():
            if fld == sd.main_input and "from" in raw[name]:
                out[name][fld] = raw[name]["from"]
                continue
            earlier = [p for p in present if ORDER.index(p) < ORDER.index(name) and STEPS[p].produces == kind]
            if earlier:
                out[name][fld] = earlier[-1]
    return out


def parse(text: str, path: Path | None = None) -> PipelineSpec:
    where = str(path) if path else None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", path=where) from None
    tables, keys = line_index(text)
    head = doc.get("pipeline", {})
    if not isinstance(head, dict):
        raise SpecError("pipeline must be a table: [pipeline]", line=keys.get(("", "pipeline")), path=where)
    for key in head:
        if key not in PIPELINE_KEYS:
            raise SpecError(f"unknown key {key!r} in [pipeline]", line=keys.get(("pipeline", key)), path=where,
                            hint=f"[pipeline] takes: {', '.join(PIPELINE_KEYS)}")
    for key in ("name", "workdir", "fleet"):
        if key in head and not isinstance(head[key], str):
            raise SpecError(f"[pipeline] {key} must be a string", line=keys.get(("pipeline", key)), path=where)
    raw: dict[str, dict[str, Any]] = {}
    for name, value in doc.items():
        if name == "pipeline":
            continue
        if name not in STEPS:
            line = tables.get(name) or keys.get(("", name))
            raise SpecError(f"unknown step [{name}]", line=line, path=where,
                            hint=f"steps are: {', '.join(ORDER)}")
        if not isinstance(value, dict):
            raise SpecError(f"step {name} must be a table: [{name}]", line=keys.get(("", name)), path=where)
        raw[name] = value
    if not raw:
        raise SpecError("no steps: add at least [data]", path=where)
    present = [n for n in ORDER if n in raw]
    for name in present:
        frm = raw[name].get("from")
        if frm is None:
            continue
        line = keys.get((name, "from"), tables.get(name))
        if STEPS[name].main_input is None:
            raise SpecError(f"[{name}] takes no from: it reads no other step's model", line=line, path=where)
        if not isinstance(frm, str) or frm not in STEPS:
            raise SpecError(f"[{name}] from = {frm!r} is not a step", line=line, path=where,
                            hint=f"steps are: {', '.join(ORDER)}")
        if frm not in raw:
            raise SpecError(f"[{name}] from = {frm!r}, but the file has no [{frm}]", line=line, path=where)

    sources = _sources(present, raw)
    graph = {n: set(sources[n].values()) for n in present}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        first = next((n for n in cycle if "from" in raw.get(n, {})), cycle[0])
        raise SpecError(f"cycle: {' -> '.join(reversed(cycle))}", line=keys.get((first, "from"), tables.get(first)),
                        path=where, hint="remove or change a 'from' so every step reads only earlier steps") from None

    steps: dict[str, StepSpec] = {}
    for name in order:
        sd = STEPS[name]
        line = tables.get(name, 0)
        for fld, kind in sd.consumes.items():
            src = sources[name].get(fld)
            if src is None:
                producers = [n for n in ORDER if STEPS[n].produces == kind]
                raise SpecError(f"[{name}] needs a {kind} artifact from an earlier step",
                                line=line, path=where, hint=f"add one of: {', '.join(f'[{p}]' for p in producers)}")
            if STEPS[src].produces != kind:
                raise SpecError(f"[{name}] from = {src!r}: {src} produces a {STEPS[src].produces} artifact, "
                                f"[{name}] needs a {kind} one", line=keys.get((name, "from"), line), path=where)
        config = _build_config(name, raw[name], keys, where, line)
        steps[name] = StepSpec(name, config, raw[name], line, dict(sources[name]))
    if "publish" in steps or "rollout" in steps:
        if "sign" not in steps:
            raise SpecError("publish and rollout need [sign]", path=where)
        if "gate" in present and steps["sign"].sources.get("blessing") != "gate":
            raise SpecError("[sign] must come after [gate]", line=steps["sign"].line, path=where)
    name = head.get("name") or (path.stem if path else "pipeline")
    return PipelineSpec(path, name, head.get("workdir", DEFAULT_WORKDIR), head.get("fleet"), steps)


def workdir_of(path: str | Path, workdir: str | None = None) -> Path:
    """The absolute workdir of a pipeline file: ``[pipeline] workdir`` (read alone when not given), relative to the
    file's directory."""
    p = Path(path)
    if workdir is None:
        try:
            head = tomllib.loads(p.read_text()).get("pipeline", {})
        except FileNotFoundError:
            raise SpecError(f"pipeline file {p} does not exist", hint="pass the path of a pipeline.toml") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SpecError(f"cannot read {p}: {exc}") from None
        workdir = head.get("workdir") if isinstance(head, dict) and isinstance(head.get("workdir"), str) else None
    w = Path(workdir or DEFAULT_WORKDIR).expanduser()
    return (w if w.is_absolute() else p.absolute().parent / w).absolute()


def load(path: str | Path) -> PipelineSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError(f"pipeline file {p} does not exist", hint="pass the path of a pipeline.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {p}: {exc}") from None
    return parse(text, p)
