"""Errors of the rollout package, rooted at the core exception tree."""

from __future__ import annotations

from edgekit.errors import EdgekitError, UsageError


class PolicyError(UsageError):
    """A rollout option (stages, threshold, duration, target) is malformed."""


class RolloutError(EdgekitError):
    """Base for problems with a rollout that exists (or should)."""


class RolloutNotFoundError(RolloutError):
    default_hint = "list rollouts with 'edgekit fleet rollout list'"


class RolloutStateError(RolloutError):
    """An operator command that the rollout's current state does not allow (e.g. resume a completed rollout)."""

    default_hint = "check the rollout's state with 'edgekit fleet rollout status ID'"


class NoTargetDevicesError(RolloutError):
    default_hint = "check the target with 'edgekit fleet devices' (tags, groups and ids must match provisioned devices)"
