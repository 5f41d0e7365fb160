"""The agent configuration: TOML with environment overrides, validated field by field.

Every key is a dataclass field whose metadata carries its check. Unknown keys and bad values raise
:class:`~device_agent.errors.AgentConfigError` naming the dotted key (``mqtt.port``). An environment variable
``EDGEKIT_AGENT__<SECTION>__<KEY>`` (e.g. ``EDGEKIT_AGENT__MQTT__HOST``) overrides the file; top-level keys use
``EDGEKIT_AGENT__<KEY>``. Relative paths are resolved against the config file's directory.

The ``[update]`` table is passed through as a plain dict for the updater, which validates it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgekit.protocol import check_id
from edgekit.errors import ProtocolError

from .errors import AgentConfigError

ENV_PREFIX = "EDGEKIT_AGENT__"
DEFAULT_CONFIG = Path("/etc/edgekit/agent.toml")


# --- checks ----------------------------------------------------------------------------------------------------------


def _ident(v: str) -> None:
    try:
        check_id(v)
    except ProtocolError as exc:
        raise ValueError(exc.hint or exc.message) from None


def _port(v: int) -> None:
    if not 0 <= v <= 65535:
        raise ValueError("must be a TCP port between 0 and 65535")


def _positive(v: float) -> None:
    if v <= 0:
        raise ValueError("must be positive")


def _non_negative(v: float) -> None:
    if v < 0:
        raise ValueError("must not be negative")


def _one_of(*choices: str) -> Callable[[str], None]:
    def check(v: str) -> None:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
    return check


def _backend(v: str) -> None:
    from .runtime import BACKENDS

    if v != "auto" and v not in BACKENDS:
        raise ValueError(f"must be auto or one of {', '.join(BACKENDS)}")


def _loopback(v: str) -> None:
    if v not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("the local API listens on the loopback interface only (127.0.0.1 or ::1)")


def opt(default: Any, check: Callable[[Any], None] | None = None, *, path: bool = False, doc: str = "") -> Any:
    meta = {"check": check, "path": path, "doc": doc}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


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
    log_level: str = opt("info", _one_of("debug", "info", "warning", "error"))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    update: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="", metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or self.device_id

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        if not d["update"]:
            d.pop("update")
        return d


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(AgentConfig)
            if dataclasses.is_dataclass(f.default_factory)}  # type: ignore[arg-type]
REQUIRED = ("device_id", "fleet_public_key")


# --- loading ---------------------------------------------------------------------------------------------------------


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    typ = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float, "bool": bool}.get(
        str(f.type), object)
    if typ is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise AgentConfigError(f"config key {key} must be true or false, got {value!r}", key=key)
        return value
    if typ in (int, float):
        if isinstance(value, str):
            try:
                value = typ(value.strip())
            except ValueError:
                raise AgentConfigError(f"config key {key} must be a number, got {value!r}", key=key) from None
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (typ is int and not isinstance(value, int))):
            raise AgentConfigError(f"config key {key} must be {'an integer' if typ is int else 'a number'}, "
                                   f"got {value!r}", key=key)
        return typ(value)
    if typ is str and not isinstance(value, str):
        raise AgentConfigError(f"config key {key} must be a string, got {value!r}", key=key)
    return value


def _apply(obj: Any, data: Mapping[str, Any], prefix: str, base: Path | None) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj) if not f.metadata.get("internal")}
    for name, value in data.items():
        key = f"{prefix}{name}"
        f = fields.get(name)
        if f is None:
            raise AgentConfigError(f"unknown config key {key}",
                                   key=key, hint=f"known keys: {', '.join(prefix + n for n in fields)}")
        sub = getattr(obj, name)
        if dataclasses.is_dataclass(sub):
            if not isinstance(value, Mapping):
                raise AgentConfigError(f"config key {key} must be a table", key=key)
            _apply(sub, value, key + ".", base)
            continue
        if isinstance(sub, dict):
            if not isinstance(value, Mapping):
                raise AgentConfigError(f"config key {key} must be a table", key=key)
            setattr(obj, name, dict(value))
            continue
        value = _coerce(key, f, value)
        check = f.metadata.get("check")
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                raise AgentConfigError(f"config key {key} = {value!r} is invalid: {exc}", key=key) from None
        if f.metadata.get("path") and value and base is not None and not os.path.isabs(value):
            value = str((base / value).resolve())
        setattr(obj, name, value)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGEKIT_AGENT__MQTT__HOST=x`` → ``{"mqtt": {"host": "x"}}`` (values stay strings; fields coerce them)."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise AgentConfigError(f"environment variable {name} conflicts with another override",
                                       key=".".join(parts))
        node[parts[-1]] = value
    return out


def from_dict(data: Mapping[str, Any], *, base: Path | None = None, environ: Mapping[str, str] | None = None,
              require: bool = True, source: str = "") -> AgentConfig:
    cfg = AgentConfig()
    _apply(cfg, data, "", base)
    env = env_overrides(os.environ if environ is None else environ)
    if env:
        _apply(cfg, env, "", Path.cwd())
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
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"{name} is not valid TOML: {exc}", key=None,
                               hint="fix the syntax (see docs/agent.md for an example)") from exc


def load_config(path: str | os.PathLike = DEFAULT_CONFIG, *, environ: Mapping[str, str] | None = None,
                require: bool = True) -> AgentConfig:
    """Read, override from the environment, and validate the agent config at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AgentConfigError(f"config file {path} does not exist",
                               hint="write one with 'edgekit agent install' or pass --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentConfigError(f"cannot read config file {path}: {exc}") from exc
    data = parse_toml(text, str(path))
    return from_dict(data, base=path.parent.resolve(), environ=environ, require=require, source=str(path))


def to_toml(cfg: AgentConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())
