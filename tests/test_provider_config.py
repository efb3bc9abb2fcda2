"""The [provider] section: defaults from CONTRACT.md, the key from the environment, errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config import parse_settings
from relay.errors import ConfigError


def test_defaults_are_the_contracts() -> None:
    """poll after 20 min, every 30 s, lost after 24 h, at most 2 requests per second, no key, no HMAC."""
    provider = parse_settings({}, env={}).provider
    assert provider.base_url == "https://api.sunoapi.org"
    assert (provider.poll_after, provider.poll_interval, provider.give_up_after) == (1200, 30, 86400)
    assert provider.rate_limit == 2
    assert provider.api_key.get_secret_value() == provider.hmac_key.get_secret_value() == ""


def test_env_key_overrides_the_file() -> None:
    """RELAY_PROVIDER_KEY beats provider.api_key, and the key never shows in the settings' repr."""
    settings = parse_settings({"provider": {"api_key": "from-file"}}, env={"RELAY_PROVIDER_KEY": "from-env-123"})
    assert settings.provider.api_key.get_secret_value() == "from-env-123"
    assert "from-env-123" not in repr(settings)


@pytest.mark.parametrize(
    ("section", "named", "hidden"),
    [
        ({"base_url": "ftp://x"}, "provider.base_url", None),
        ({"poll_interval": 0}, "provider.poll_interval", None),
        ({"rate_limit": -1}, "provider.rate_limit", None),
        ({"api_key": ["pk-list-secret"]}, "provider.api_key", "pk-list-secret"),
        ({"hmac_key": {"k": "hm-secret"}}, "provider.hmac_key", "hm-secret"),
        ({"poll_every": 5}, "provider.poll_every", None),
    ],
    ids=["not-http", "zero-interval", "negative-rate", "key-wrong-type", "hmac-wrong-type", "unknown-key"],
)
def test_bad_values_name_the_key_and_hide_secrets(section: dict[str, Any], named: str, hidden: str | None) -> None:
    """A bad value is refused naming its key; a secret's value is never repeated in the message."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"provider": section}, env={})
    assert named in str(caught.value)
    if hidden is not None:
        assert hidden not in str(caught.value)
