"""The typed artifacts steps pass to each other: each a frozen dataclass of file paths inside the producing step's
cache entry. A step's output kind is one of :data:`KINDS`; the runner hands the same objects to the steps after it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Data:
    """The split data as ``.npz`` files (``x``, ``y``) and the statistics of the whole set."""

    train: Path
    val: Path
    test: Path
    stats: Path


@dataclass(frozen=True)
class KerasModel:
    model: Path


@dataclass(frozen=True)
class TFLiteModel:
    model: Path
    report: Path


@dataclass(frozen=True)
class Evaluation:
    evaluation: Path


@dataclass(frozen=True)
class Blessing:
    blessing: Path


@dataclass(frozen=True)
class Bundle:
    bundle: Path


@dataclass(frozen=True)
class Published:
    published: Path


@dataclass(frozen=True)
class RolloutEnd:
    rollout: Path


KINDS: dict[str, type] = {"data": Data, "keras": KerasModel, "tflite": TFLiteModel, "evaluation": Evaluation,
                          "blessing": Blessing, "bundle": Bundle, "published": Published, "rollout": RolloutEnd}


def files_of(artifact: Any) -> dict[str, Path]:
    """Field name → path of an artifact."""
    return {f.name: getattr(artifact, f.name) for f in dataclasses.fields(artifact)}


def from_files(kind: str, root: Path, names: dict[str, str]) -> Any:
    """Rebuild an artifact of ``kind`` from the file names recorded in a cache entry."""
    cls = KINDS[kind]
    return cls(**{f.name: root / names[f.name] for f in dataclasses.fields(cls)})
