"""Fixtures of the config/isolation tests: schemas and datasets named hk_cfg_<random>, created
and dropped here so the tests run in any order beside other engineers' tests."""

import pytest

from tests.helpers import unique


@pytest.fixture
def cfg_schema(sql):
    """A fresh source schema (utf8mb4), dropped afterwards."""
    name = unique("hk_cfg")
    sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def cfg_datasets(bq_client):
    """A factory of BigQuery dataset names (hk_cfg_<random>), each deleted afterwards."""
    made: list[str] = []

    def new() -> str:
        made.append(unique("hk_cfg"))
        return made[-1]

    yield new
    for name in made:
        bq_client.delete_dataset(f"hakobu-test.{name}", delete_contents=True, not_found_ok=True)
