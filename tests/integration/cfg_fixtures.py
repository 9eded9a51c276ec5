"""Fixtures of the config/isolation tests: schemas and datasets named hk_cfg_<random>, created
and dropped here so the tests run in any order beside other engineers' tests."""

import pytest

from tests.helpers import dataset_factory, fresh_schema


@pytest.fixture
def cfg_schema(sql):
    """A fresh source schema (utf8mb4), dropped afterwards."""
    yield from fresh_schema(sql, "hk_cfg")


@pytest.fixture
def cfg_datasets(bq_client):
    """A factory of BigQuery dataset names (hk_cfg_<random>), each deleted afterwards."""
    yield from dataset_factory(bq_client, "hk_cfg")
