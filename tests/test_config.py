"""Configuration from flags and env vars."""

from __future__ import annotations

import argparse

import pytest

from livestate.server.core.config import Config, ConfigError, add_arguments, from_sources, parse


def test_defaults_follow_design() -> None:
    config = Config()
    assert config.heartbeat_interval == 2.0
    assert config.suspect_after == 6.0  # 3 missed beats
    assert config.offline_after == 10.0  # 5 missed beats
    assert config.sweep_interval == 0.5
    assert config.listen == "127.0.0.1:50051"
    assert config.redis_url is None


def test_thresholds_derive_from_a_fractional_interval() -> None:
    config = parse(["--heartbeat-interval", "0.5"])
    assert (config.suspect_after, config.offline_after, config.sweep_interval) == (1.5, 2.5, 0.25)


def test_flags_override_env_which_overrides_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--listen", "127.0.0.1:7000"])
    env = {
        "LIVESTATE_LISTEN": "0.0.0.0:1",
        "LIVESTATE_REDIS_URL": "redis://x:1/2",
        "LIVESTATE_OFFLINE_AFTER": "30",
    }

    config = from_sources(args, env)

    assert config.listen == "127.0.0.1:7000"
    assert config.redis_url == "redis://x:1/2"
    assert config.offline_after == 30.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIVESTATE_HEARTBEAT_INTERVAL": "fast"}, "LIVESTATE_HEARTBEAT_INTERVAL"),
        ({"LIVESTATE_HEARTBEAT_INTERVAL": "0"}, "heartbeat_interval"),
        ({"LIVESTATE_SUSPECT_AFTER": "20", "LIVESTATE_OFFLINE_AFTER": "10"}, "suspect_after < offline_after"),
        ({"LIVESTATE_MAX_WORKERS": "10"}, "max_workers"),
        ({"LIVESTATE_MAX_STREAMS": "0"}, "max_streams"),
        ({"LIVESTATE_KEY_PREFIX": "a{b}"}, "key_prefix"),
        ({"LIVESTATE_SENTINEL": "h:1", "LIVESTATE_REDIS_URL": "redis://h:2"}, "sentinel and redis_url"),
        ({"LIVESTATE_SENTINEL": "h:1,h"}, "'h'"),
        ({"LIVESTATE_SENTINEL": "h:99999"}, "'h:99999'"),
        ({"LIVESTATE_ACK_REPLICAS": "-2"}, "ack_replicas"),
        ({"LIVESTATE_FALLBACK_REDIS_URL": "redis://c:1"}, "needs a regional redis_url"),
        (
            {"LIVESTATE_REDIS_URL": "redis://c:1", "LIVESTATE_FALLBACK_REDIS_URL": "redis://c:1"},
            "another Redis",
        ),
        ({"LIVESTATE_REDIS_URL": "redis://r:1", "LIVESTATE_FALLBACK_AFTER": "0"}, "fallback_after"),
        ({"LIVESTATE_ACK_REPLICAS": "1", "LIVESTATE_ACK_TIMEOUT": "2"}, "ack_timeout must be below"),
    ],
)
def test_bad_values_are_refused_with_the_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("<", "\\<")):
        from_sources(None, env)


def test_sentinel_waits_for_one_replica_unless_told_otherwise() -> None:
    assert Config().replicas_to_ack == 0
    with_sentinel = from_sources(None, {"LIVESTATE_SENTINEL": "10.0.0.1:26379, 10.0.0.2:26379"})
    assert with_sentinel.replicas_to_ack == 1
    assert with_sentinel.ack_timeout == with_sentinel.redis_timeout / 2
    told = from_sources(None, {"LIVESTATE_SENTINEL": "10.0.0.1:26379", "LIVESTATE_ACK_REPLICAS": "0"})
    assert told.replicas_to_ack == 0
    plain = from_sources(None, {"LIVESTATE_REDIS_URL": "redis://h:1", "LIVESTATE_ACK_REPLICAS": "2"})
    assert plain.replicas_to_ack == 2
