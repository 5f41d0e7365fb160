"""Which payload of a bundle each device of a rollout gets, decided before the rollout starts (pure).

The device's birth certificate (stored in ``Device.capabilities["runtime"]``) carries what it can run; the choice is
:func:`edgekit.payloads.choose_payload`, the very function the agent applies, so the plan is what the devices do. A
device that sends no capabilities is an agent from before multi-payload bundles: schema 1, LiteRT on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from edgekit.payloads import LEGACY_CAPABILITIES, choose_payload, why_none


@dataclass(frozen=True)
class PayloadPlan:
    assign: dict[str, str] = field(default_factory=dict)   # device id -> payload target
    unfit: dict[str, str] = field(default_factory=dict)    # device id -> why it can run no payload

    def to_dict(self) -> dict[str, Any]:
        return {"payloads": dict(self.assign), "unfit": dict(self.unfit)}


def device_capabilities(stored: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The capabilities of a device from its stored birth certificate ({"runtime": {...}, "hardware": {...}})."""
    runtime = (stored or {}).get("runtime") or {}
    caps = runtime.get("capabilities")
    return caps if isinstance(caps, Mapping) else LEGACY_CAPABILITIES


def plan_payloads(bundle_targets: Sequence[str], schema_version: int,
                  devices: Mapping[str, Mapping[str, Any] | None]) -> PayloadPlan:
    """``devices``: id -> stored capabilities column. Every device is either assigned a payload or named unfit."""
    plan = PayloadPlan()
    for device_id in sorted(devices):
        caps = device_capabilities(devices[device_id])
        chosen = choose_payload(bundle_targets, caps, schema_version)
        if chosen is None:
            plan.unfit[device_id] = why_none(bundle_targets, caps, schema_version)
        else:
            plan.assign[device_id] = chosen
    return plan
