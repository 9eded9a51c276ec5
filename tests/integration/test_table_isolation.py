"""Issue #11 item 12: an unexpected exception in one table fails that table only — the tenant's
other tables are delivered and equal to the source, in the nightly sync and in a backfill.
Faults are injected through hakobu.sync.Hooks; real MariaDB + emulator, hk_cfg_ names."""

import datetime as dt

import pyarrow as pa
import pytest

from tests.live import backfill_tenant
from hakobu.reconcile import diff_table
from hakobu.results import Hooks
from hakobu.planning import plan_for
from tests.live import destination_for, source_for, sync_tenant
from resources.bigquery_client import BigQuerySettings
from tests.integration.cfg_fixtures import cfg_datasets, cfg_schema  # noqa: F401

NAMES = ("alpha", "bravo", "charlie")
TABLES = "".join(f"- name: {n}\n  cursor: updated_at\n  chunk_rows: 40\n" for n in NAMES)


def make_table(sql, schema: str, name: str, n: int) -> None:
    sql(f"CREATE TABLE `{schema}`.`{name}` (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "note VARCHAR(32), INDEX (updated_at))")
    base = dt.datetime(2026, 1, 1)
    sql.many(f"INSERT INTO `{schema}`.`{name}` VALUES (%s, %s, %s)",
             [(i, base + dt.timedelta(seconds=i), f"{name} {i}") for i in range(1, n + 1)])


def assert_equal(config, table: str) -> None:
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table(table))
    d = diff_table(source, destination_for(tenant, BigQuerySettings.from_env()), plan)
    assert d.equal, d.summary()


FAULTS = [
    ("after_chunk", KeyError("no such column")),
    ("before_merge", TypeError("unsupported operand type(s)")),
    ("after_stage", pa.ArrowInvalid("Invalid: column lengths differ")),
    ("before_watermark", AttributeError("'NoneType' object has no attribute 'key'")),
]


@pytest.mark.parametrize("point,fault", FAULTS, ids=[type(f).__name__ for _, f in FAULTS])
def test_unexpected_error_in_one_table_fails_only_that_table(sql, cfg_schema, cfg_datasets,
                                                             make_config, bq_env, point, fault):
    for n in NAMES:
        make_table(sql, cfg_schema, n, 120)
    config = make_config({"a": (cfg_schema, cfg_datasets(), TABLES)})

    def boom(table, **_):
        if table == "bravo":
            raise fault

    results = {r.table: r for r in sync_tenant(config, "a", hooks=Hooks(**{point: boom}))}
    bad = results["bravo"]
    assert not bad.ok
    assert f"unexpected {type(fault).__name__} in table 'bravo'" in bad.error, bad.error
    assert "a/bravo" in bad.error and "only this table stopped" in bad.error
    for n in ("alpha", "charlie"):
        assert results[n].ok, results[n].error
        assert results[n].rows_read == 120
        assert_equal(config, n)
    # the fault fixed, a rerun delivers the failed table too, exactly
    sql(f"UPDATE `{cfg_schema}`.alpha SET note = 'changed', updated_at = NOW(6) WHERE id <= 5")
    again = {r.table: r for r in sync_tenant(config, "a")}
    assert all(r.ok for r in again.values()), [r.error for r in again.values()]
    for n in NAMES:
        assert_equal(config, n)


def test_unexpected_error_while_planning_one_table_spares_the_others(
        sql, cfg_schema, cfg_datasets, make_config, bq_env, monkeypatch):
    for n in NAMES:
        make_table(sql, cfg_schema, n, 30)
    config = make_config({"a": (cfg_schema, cfg_datasets(), TABLES)})
    source = source_for(config, config.tenant("a"))
    real = type(source).reflect

    def reflect(self, schema, table):
        if table == "charlie":
            raise KeyError("column_type")
        return real(self, schema, table)

    with monkeypatch.context() as m:
        m.setattr(type(source), "reflect", reflect)
        results = {r.table: r for r in sync_tenant(config, "a")}
    assert not results["charlie"].ok
    assert "unexpected KeyError in table 'charlie'" in results["charlie"].error
    for n in ("alpha", "bravo"):
        assert results[n].ok, results[n].error
        assert_equal(config, n)


def test_unexpected_error_in_one_backfilled_table_spares_the_others(
        sql, cfg_schema, cfg_datasets, make_config, bq_env):
    for n in NAMES:
        make_table(sql, cfg_schema, n, 90)
    config = make_config({"a": (cfg_schema, cfg_datasets(), TABLES)})
    assert all(r.ok for r in sync_tenant(config, "a"))
    sql(f"UPDATE `{cfg_schema}`.charlie SET note = 'before the backfill' WHERE id <= 3")

    def boom(table, **_):
        if table == "alpha":
            raise ZeroDivisionError("division by zero")

    results = {r.table: r for r in backfill_tenant(config, "a", hooks=Hooks(after_chunk=boom))}
    assert not results["alpha"].ok
    assert "unexpected ZeroDivisionError in table 'alpha'" in results["alpha"].error
    for n in ("bravo", "charlie"):
        assert results[n].ok, results[n].error
        assert_equal(config, n)
    assert_equal(config, "alpha")      # the failed backfill changed nothing: still the old load
