"""The core config loader (edgekit.config): typed sections, one coercion, layers that merge key by key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edgekit import config as C
from edgekit.errors import ConfigError


@dataclass(frozen=True)
class Net:
    host: str = C.opt("127.0.0.1")
    port: int = C.opt(80, C.port)
    tls: bool = C.opt(False)
    ca_file: str = C.opt("", path=True)


@dataclass(frozen=True)
class Root:
    name: str = C.opt("x")
    ratio: float = C.opt(1.5, C.at_least(1))
    net: Net = field(default_factory=Net)


def test_later_layers_override_key_by_key_and_keep_the_rest(tmp_path):
    file = C.Layer({"name": "a", "net": {"host": "h", "port": 8883, "ca_file": "ca.pem"}}, tmp_path)
    env = C.env_layer({"APP__NET__PORT": "1884", "APP__NET__TLS": "yes", "OTHER": "1"}, "APP__")
    cfg = C.build(Root, [file, env])
    assert cfg == Root("a", 1.5, Net("h", 1884, True, str(tmp_path / "ca.pem")))
    assert C.build(Root, [C.to_dict(cfg)]) == cfg


@pytest.mark.parametrize("data, key", [
    ({"net": {"port": "abc"}}, "net.port"),
    ({"net": {"port": 70000}}, "net.port"),
    ({"net": {"port": 1.5}}, "net.port"),
    ({"net": {"port": True}}, "net.port"),
    ({"net": {"tls": "maybe"}}, "net.tls"),
    ({"net": {"host": 3}}, "net.host"),
    ({"net": {"hots": "x"}}, "net.hots"),
    ({"net": 3}, "net"),
    ({"ratio": 0.5}, "ratio"),
    ({"nope": 1}, "nope"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError) as exc:
        C.build(Root, [data])
    assert exc.value.key == key and key in exc.value.one_line()


def test_one_coercion():
    assert C.coerce("k", int, "7") == 7 and C.coerce("k", int, 7.0) == 7
    assert C.coerce("k", float, 2) == 2.0 and C.coerce("k", float, " 2.5 ") == 2.5
    assert C.coerce("k", bool, "off") is False and C.coerce("k", bool, True) is True


def test_conflicting_environment_overrides_are_refused():
    with pytest.raises(ConfigError) as exc:
        C.env_layer({"APP__NET": "x", "APP__NET__PORT": "1"}, "APP__")
    assert exc.value.key in ("net", "net.port")
