"""Errors of the rollout package: :class:`RolloutError` is a :class:`~fleet.errors.FleetError`."""

from __future__ import annotations

from edgekit.errors import UsageError
from fleet.errors import FleetError


class PolicyError(UsageError):
    """A rollout option (stages, threshold, duration, target) is malformed."""


class RolloutError(FleetError):
    """Base for problems with a rollout that exists (or should)."""


class RolloutNotFoundError(RolloutError):
    default_hint = "list rollouts with 'edgekit fleet rollout list'"


class RolloutStateError(RolloutError):
    """An operator command that the rollout's current state does not allow (e.g. resume a completed rollout)."""

    default_hint = "check the rollout's state with 'edgekit fleet rollout status ID'"


class NoTargetDevicesError(RolloutError):
    default_hint = "check the target with 'edgekit fleet devices' (tags, groups and ids must match provisioned devices)"


class NoFittingPayloadError(RolloutError):
    """Some target devices can run no payload of the bundle (found before anything is published)."""

    default_hint = ("add a payload they can run (edgekit convert --target cpu,edgetpu,gpu), upgrade their agent, "
                    "or pass --skip-unfit to roll out to the others")
