"""Review of full_read_below_kib's settings: validated like every other setting (no server)."""

import pytest
from pydantic import ValidationError

from hakobu.config import Cluster
from hakobu.errors import ConfigError


@pytest.mark.parametrize("bad", ["-5", "1000000000"])
def test_env_default_is_validated_like_the_yaml_setting(monkeypatch, bad):
    """full_read_below_kib in YAML must be 0..1_048_576 (a clear error with file and line);
    HAKOBU_FULL_READ_BELOW_KIB, the default's default, is only parsed as an int, never
    validated (pydantic does not validate a default_factory's value): -5 silently means
    "never", 10**9 reads every cursor table under ~1 TB whole every night, and
    `hakobu validate` says OK for both."""
    monkeypatch.setenv("HAKOBU_FULL_READ_BELOW_KIB", bad)
    with pytest.raises((ConfigError, ValidationError)):
        c = Cluster(name="c", host="h", user="u")
        pytest.fail(f"HAKOBU_FULL_READ_BELOW_KIB={bad} accepted as {c.full_read_below_kib}")

