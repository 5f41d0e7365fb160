"""Rollout/command targets as registered objects: ``tag:k=v``, ``group:g``, ``devices:a,b`` (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edgekit.errors import ProtocolError
from edgekit.protocol import check_id

from .errors import TargetError


class DeviceLike(Protocol):
    id: str
    tags: dict[str, Any]
    groups: list[str]


@dataclass(frozen=True)
class Target:
    kind: ClassVar[str] = ""

    def matches(self, device: DeviceLike) -> bool:
        raise NotImplementedError

    @classmethod
    def parse_value(cls, value: str) -> "Target":
        raise NotImplementedError


@dataclass(frozen=True)
class TagTarget(Target):
    kind: ClassVar[str] = "tag"
    key: str
    value: str

    def matches(self, device: DeviceLike) -> bool:
        return str((device.tags or {}).get(self.key, "\0")) == self.value

    @classmethod
    def parse_value(cls, value: str) -> "TagTarget":
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise TargetError(f"tag target {value!r} is not KEY=VALUE")
        return cls(key, val)

    def __str__(self) -> str:
        return f"tag:{self.key}={self.value}"


@dataclass(frozen=True)
class GroupTarget(Target):
    kind: ClassVar[str] = "group"
    group: str

    def matches(self, device: DeviceLike) -> bool:
        return self.group in (device.groups or [])

    @classmethod
    def parse_value(cls, value: str) -> "GroupTarget":
        if not value:
            raise TargetError("group target needs a group name")
        return cls(value)

    def __str__(self) -> str:
        return f"group:{self.group}"


@dataclass(frozen=True)
class DevicesTarget(Target):
    kind: ClassVar[str] = "devices"
    ids: tuple[str, ...]

    def matches(self, device: DeviceLike) -> bool:
        return device.id in self.ids

    @classmethod
    def parse_value(cls, value: str) -> "DevicesTarget":
        ids = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
        if not ids:
            raise TargetError("devices target needs at least one device id")
        for i in ids:
            try:
                check_id(i, "device id")
            except ProtocolError as exc:
                raise TargetError(exc.message) from None
        return cls(ids)

    def __str__(self) -> str:
        return "devices:" + ",".join(self.ids)


@dataclass(frozen=True)
class AllTarget(Target):
    kind: ClassVar[str] = "all"

    def matches(self, device: DeviceLike) -> bool:
        return True

    @classmethod
    def parse_value(cls, value: str) -> "AllTarget":
        return cls()

    def __str__(self) -> str:
        return "all"


TARGET_KINDS: dict[str, type[Target]] = {t.kind: t for t in (TagTarget, GroupTarget, DevicesTarget, AllTarget)}


def parse_target(text: str) -> Target:
    if text == "all":
        return AllTarget()
    kind, sep, value = text.partition(":")
    cls = TARGET_KINDS.get(kind)
    if not sep or cls is None:
        raise TargetError(f"cannot read target {text!r}")
    return cls.parse_value(value)
