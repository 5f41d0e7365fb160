"""Errors of the fleet manager, rooted in the shared :mod:`edgekit.errors` tree."""

from __future__ import annotations

from edgekit.errors import ConfigError, EdgekitError


class FleetError(EdgekitError):
    """Base for fleet-manager failures."""


class FleetNotInitialized(FleetError):
    default_hint = "create it with 'edgekit fleet init' or pass --data-dir / set EDGEKIT_FLEET_DIR"


class FleetConfigError(ConfigError):
    """fleet.toml is invalid; ``key`` names the offending key."""


class BrokerError(FleetError):
    """Mosquitto could not be configured, started, stopped or reached."""


class BrokerNotInstalled(BrokerError):
    default_hint = "install the Debian package 'mosquitto' (apt-get install mosquitto)"


class UnknownDeviceError(FleetError):
    default_hint = "list devices with 'edgekit fleet devices' or provision it with 'edgekit fleet provision'"

    def __init__(self, device_id: str, message: str | None = None, **kw):
        super().__init__(message or f"device {device_id!r} is not provisioned in this fleet", **kw)
        self.device_id = device_id


class DeviceExistsError(FleetError):
    default_hint = "pass --force to issue new credentials, or revoke it first"

    def __init__(self, device_id: str, message: str | None = None, **kw):
        super().__init__(message or f"device {device_id!r} is already provisioned", **kw)
        self.device_id = device_id


class TargetError(FleetError):
    default_hint = "use tag:KEY=VALUE, group:NAME or devices:ID1,ID2"


class StoreError(FleetError):
    """The database cannot be opened, migrated or written."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached right now (server down or restarting, connection lost, SQLite locked).
    Always ``retryable``: nothing was written, and the same call can succeed later."""

    default_hint = "check that the database server runs (the --db url / store.url in fleet.toml); retry when it is back"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint, code="store_unavailable", retryable=True)


class StoreConflictError(StoreError):
    """A write conflicts with a row already in the database (a unique key or a foreign key)."""

    default_hint = "another process changed the same rows; look at the current state and retry"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint, code="store_conflict")


class ArtifactError(FleetError):
    """A bundle cannot be published or served."""


class LinkError(FleetError):
    """The fleet's MQTT connection failed."""

    default_hint = "check that the broker runs ('edgekit fleet broker status') and the service credentials exist"


class LeaseLostError(FleetError):
    """This replica no longer holds the lease its write was fenced with (another replica took over)."""

    default_hint = "nothing to do: the replica that holds the lease now carries on"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint, code="lease_lost")
