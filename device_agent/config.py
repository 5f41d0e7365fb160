"""The agent configuration: TOML with environment overrides, validated field by field.

Every key is a dataclass field whose metadata carries its check. Unknown keys and bad values raise
:class:`~device_agent.errors.AgentConfigError` naming the dotted key (``mqtt.port``). An environment variable
``EDGEKIT_AGENT__<SECTION>__<KEY>`` (e.g. ``EDGEKIT_AGENT__MQTT__HOST``) overrides that key of the file and keeps
the rest of its table; top-level keys use ``EDGEKIT_AGENT__<KEY>``.
Relative paths are resolved against the config file's directory.

The ``[update]`` table is the update policy (:class:`~device_agent.update.policy.Policy`), a typed section like the
others. Loading, coercion and the merge of overrides are :mod:`edgekit.config`'s, shared with the fleet config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from edgekit import config as core
from edgekit.config import Layer, one_of, opt, port as _port, positive as _positive
from edgekit.errors import ProtocolError
from edgekit.protocol import check_id

from .errors import AgentConfigError
from .update.policy import Policy

if TYPE_CHECKING:
    from .paths import AgentPaths

ENV_PREFIX = "EDGEKIT_AGENT__"
DEFAULT_CONFIG = Path("/etc/edgekit/agent.toml")
TOML_HINT = "fix the syntax (see docs/agent.md for an example)"


# --- checks ----------------------------------------------------------------------------------------------------------


def _ident(v: str) -> None:
    try:
        check_id(v)
    except ProtocolError as exc:
        raise ValueError(exc.hint or exc.message) from None


def _backend(v: str) -> None:
    from .runtime import BACKENDS

    if v != "auto" and v not in BACKENDS:
        raise ValueError(f"must be auto or one of {', '.join(BACKENDS)}")


def _loopback(v: str) -> None:
    if v not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("the local API listens on the loopback interface only (127.0.0.1 or ::1)")


# --- sections --------------------------------------------------------------------------------------------------------


@dataclass
class RuntimeConfig:
    backend: str = opt("auto", _backend, doc="auto, ai-edge-litert, tflite-runtime or tf.lite")
    threads: int = opt(1, _positive, doc="interpreter threads")
    allow_cpu_fallback: bool = opt(False, doc="run Edge TPU bundles on the CPU when libedgetpu is missing")


@dataclass
class ApiConfig:
    enabled: bool = opt(True)
    host: str = opt("127.0.0.1", _loopback)
    port: int = opt(8765, _port, doc="0 picks a free port (written to <data_dir>/api.port)")
    max_body_bytes: int = opt(64 << 20, _positive)
    unix_socket: str = opt("", path=True, doc="also serve the API on this Unix socket (mode 0660)")


@dataclass
class MqttConfig:
    enabled: bool = opt(True)
    host: str = opt("127.0.0.1")
    port: int = opt(1883, _port)
    keepalive: int = opt(30, _positive)
    client_id: str = opt("", doc="defaults to the device id")
    username: str = opt("")
    password: str = opt("")
    password_file: str = opt("", path=True)
    tls: bool = opt(False)
    ca_file: str = opt("", path=True)
    cert_file: str = opt("", path=True, doc="client certificate for mTLS")
    key_file: str = opt("", path=True)
    session_expiry: int = opt(7 * 24 * 3600, _positive, doc="seconds the broker keeps the session")
    backoff_initial: float = opt(0.5, _positive)
    backoff_max: float = opt(30.0, _positive)
    inflight_max: int = opt(20, _positive, doc="spooled messages handed to the broker before PUBACKs return")


@dataclass
class TelemetryConfig:
    enabled: bool = opt(True)
    interval: float = opt(10.0, _positive, doc="seconds between samples")
    batch_max: int = opt(50, _positive, doc="samples per telemetry message")


@dataclass
class SpoolConfig:
    max_items: int = opt(100_000, _positive, doc="cap; past it the oldest items are dropped and counted")


@dataclass
class ModelConfig:
    bundle: str = opt("", path=True, doc="bundle installed at start when the store has no current model")


@dataclass
class AgentConfig:
    device_id: str = opt("", _ident)
    fleet: str = opt("default", _ident)
    data_dir: str = opt("/var/lib/edgekit-agent", path=True)
    fleet_public_key: str = opt("", path=True, doc="Ed25519 public key that signs the fleet's bundles")
    log_level: str = opt("info", one_of("debug", "info", "warning", "error"))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    update: Policy = field(default_factory=Policy)
    source: str = field(default="", metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or self.device_id

    @property
    def paths(self) -> "AgentPaths":
        from .paths import AgentPaths

        return AgentPaths(self.data_path)

    def to_dict(self) -> dict[str, Any]:
        return core.to_dict(self)


REQUIRED = ("device_id", "fleet_public_key")


# --- loading ---------------------------------------------------------------------------------------------------------


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGEKIT_AGENT__MQTT__HOST=x`` → ``{"mqtt": {"host": "x"}}`` (values stay strings; fields coerce them)."""
    return dict(core.env_layer(environ, ENV_PREFIX, error=AgentConfigError).data)


def from_dict(data: Mapping[str, Any], *, base: Path | None = None, environ: Mapping[str, str] | None = None,
              require: bool = True, source: str = "") -> AgentConfig:
    env = core.env_layer(os.environ if environ is None else environ, ENV_PREFIX, error=AgentConfigError)
    cfg = core.build(AgentConfig, [Layer(data, base, source or "config"), env], error=AgentConfigError)
    cfg.source = source
    if require:
        for key in REQUIRED:
            if not getattr(cfg, key):
                raise AgentConfigError(f"config key {key} is required", key=key,
                                       hint=f"set {key} in the config or EDGEKIT_AGENT__{key.upper()}")
        if not Path(cfg.fleet_public_key).is_file():
            raise AgentConfigError(f"config key fleet_public_key: {cfg.fleet_public_key} does not exist",
                                   key="fleet_public_key", hint="point it at the fleet's .pub file")
        if cfg.mqtt.password_file and not Path(cfg.mqtt.password_file).is_file():
            raise AgentConfigError(f"config key mqtt.password_file: {cfg.mqtt.password_file} does not exist",
                                   key="mqtt.password_file")
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(cfg.mqtt, key)
            if value and not Path(value).is_file():
                raise AgentConfigError(f"config key mqtt.{key}: {value} does not exist", key=f"mqtt.{key}")
        if bool(cfg.mqtt.cert_file) != bool(cfg.mqtt.key_file):
            raise AgentConfigError("config keys mqtt.cert_file and mqtt.key_file go together (mTLS)",
                                   key="mqtt.key_file" if cfg.mqtt.cert_file else "mqtt.cert_file")
    return cfg


def parse_toml(text: str, name: str = "config") -> dict[str, Any]:
    return core.parse_toml(text, name, error=AgentConfigError, hint=TOML_HINT)


def load_config(path: str | os.PathLike = DEFAULT_CONFIG, *, environ: Mapping[str, str] | None = None,
                require: bool = True) -> AgentConfig:
    """Read, override from the environment, and validate the agent config at ``path``."""
    path = Path(path)
    try:
        data = core.read_toml(path, error=AgentConfigError, hint=TOML_HINT)
    except FileNotFoundError:
        raise AgentConfigError(f"config file {path} does not exist",
                               hint="write one with 'edgekit agent install' or pass --config") from None
    return from_dict(data, base=path.parent.resolve(), environ=environ, require=require, source=str(path))


def to_toml(cfg: AgentConfig) -> str:
    return core.to_toml(cfg)
