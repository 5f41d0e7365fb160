"""The one exception tree of edgekit.

Every error a user can cause is an :class:`EdgekitError`. Each carries a one-line ``message`` (what is wrong) and a
``hint`` (what to do next); the CLI prints both on one line and exits with ``exit_code``. Third-party errors are
converted once, at the boundary where they happen: ``raise BundleCorruptError(...) from exc``.

Packages add their own subclasses in their own modules (``converters.errors``, ``device_agent.errors``,
``fleet.errors``), always rooted at one of the classes here.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Every exit status an edgekit command returns; the README's "Exit codes" table lists the same."""

    OK = 0
    ERROR = 1           # an error, printed as one line with a hint; or the awaited outcome did not happen
    USAGE = 2           # a bad option, argument or combination of them
    MISSING_EXTRA = 3   # the command needs an optional dependency group that is not installed
    BUDGET_NOT_MET = 4  # convert --max-accuracy-drop, optimize --budget or a pipeline's budget could not be met
    NOT_RUNNING = 5     # 'agent status' / 'fleet broker status': the service asked about is not running
    GATE_FAILED = 6     # 'pipeline run': the gate did not bless the model; nothing was published
    STEP_FAILED = 7     # 'pipeline run': a step failed; the steps after it did not run


class EdgekitError(Exception):
    """Root of every error edgekit raises on purpose."""

    exit_code: int = ExitCode.ERROR
    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.code = code or type(self).__name__
        self.retryable = retryable

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            hint = self.hint.rstrip(".")
            return f"{text}. {hint[:1].upper()}{hint[1:]}."
        return f"{text}."


class UsageError(EdgekitError):
    """Bad command-line input or arguments."""

    exit_code = ExitCode.USAGE


class MissingExtraError(EdgekitError):
    """A command needs an optional dependency group that is not installed."""

    exit_code = ExitCode.MISSING_EXTRA

    def __init__(self, extra: str, module: str):
        super().__init__(
            f"this command needs the '{extra}' extra (could not import {module})",
            hint=f"install it with: pip install 'edgekit[{extra}]'",
            code="missing_extra",
        )
        self.extra = extra
        self.module = module


class ConfigError(EdgekitError):
    """A configuration file or value is invalid. ``key`` names the offending key."""

    def __init__(self, message: str, *, key: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint, code="config_invalid")
        self.key = key


class ArrayFileError(UsageError):
    """An ``.npy``/``.npz`` input cannot be read; ``original`` is the reader's own exception."""

    default_hint = "write it with numpy.save (one array) or numpy.savez (several, named)"

    def __init__(self, what: str, original: BaseException):
        super().__init__(f"cannot read {what} ({type(original).__name__}: {original})")
        self.original = original


class FileExistsRefusal(EdgekitError):
    """Refusing to overwrite an existing file without --force."""

    default_hint = "pass --force to overwrite it, or choose another path"


# --- keys and signatures ---------------------------------------------------------------------------------------------


class KeyFileError(EdgekitError):
    """A key file is missing, unreadable or not an Ed25519 key."""


# --- bundles ---------------------------------------------------------------------------------------------------------


class BundleError(EdgekitError):
    """Base for every problem with a model bundle (*.ekb)."""

    default_hint = "rebuild the bundle with 'edgekit bundle create' or fetch it again"


class BundleCorruptError(BundleError):
    """The archive cannot be read: truncated, not a tar, or missing a required member."""


class UnsafeMemberError(BundleError):
    """A member path is absolute, contains '..', is a link or a device, or is not a regular file."""


class BundleTooLargeError(BundleError):
    """A member (or the whole bundle) exceeds the size limits."""


class SignatureError(BundleError):
    """The manifest signature does not verify against the given public key (wrong key or tampered manifest)."""

    default_hint = "check that you pass the fleet's public key, and rebuild the bundle if it was modified"


class HashMismatchError(BundleError):
    """A payload file does not match the sha256 or size pinned by the manifest."""


class ManifestError(BundleError):
    """The manifest is not valid JSON or misses required fields."""


class SchemaVersionError(ManifestError):
    """The manifest's schema version is not one this edgekit can read."""

    default_hint = "upgrade edgekit on this machine, or rebuild the bundle with a matching edgekit"


class NotTFLiteError(BundleError):
    """A payload that must be a TFLite flatbuffer is not one."""

    default_hint = "pass a .tflite file produced by the TFLite converter or 'edgekit convert'"


# --- protocol --------------------------------------------------------------------------------------------------------


class ProtocolError(EdgekitError):
    """An MQTT topic or message does not follow the edgekit protocol."""
