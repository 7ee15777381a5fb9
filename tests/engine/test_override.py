"""The test engine's compose override changes only what its host lacks (no engine needed)."""

from __future__ import annotations

import yaml
from support.compose import ROOT, compose
from support.engine import OVERRIDE

SOCKET = "/var/run/docker.sock:/var/run/docker.sock"


class _Tagged(yaml.SafeLoader):
    """Reads Compose's !reset and !override tags as plain values."""


def _untagged(loader: yaml.SafeLoader, tag: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        return None if loader.construct_scalar(node) in ("", "null") else loader.construct_scalar(node)
    return loader.construct_sequence(node, deep=True)


_Tagged.add_multi_constructor("!", _untagged)


def test_the_override_drops_the_docker_socket_and_fluentds_build_only():
    override = yaml.load(OVERRIDE.read_text(), Loader=_Tagged)["services"]  # noqa: S506 - SafeLoader subclass
    assert set(override) == {"fluentd", "localstack"}
    assert override["fluentd"] == {"build": None}
    assert set(override["localstack"]) == {"volumes"}
    # the same mounts as the user's compose file, less the Docker socket
    users = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["localstack"]["volumes"]
    assert SOCKET in users
    assert override["localstack"]["volumes"] == [mount for mount in users if mount != SOCKET]
    # and the tags Compose needs to replace rather than merge are there
    text = OVERRIDE.read_text()
    assert "build: !reset null" in text and "volumes: !override" in text
    assert compose()["services"]["fluentd"]["build"] == "./fluentd"  # the user's file still builds it


def test_on_a_users_engine_the_tests_build_under_tags_of_their_own():
    from support.engine import USER_OVERRIDE

    override = yaml.safe_load(USER_OVERRIDE.read_text())["services"]
    users = compose()["services"]
    built = {name for name, service in users.items() if "build" in service}
    assert set(override) == built  # every image Compose builds, and nothing else
    for name, service in override.items():
        assert set(service) == {"image"}
        assert service["image"] != users[name]["image"] and service["image"].startswith("clp-test/")
