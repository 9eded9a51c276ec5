"""Issue #11 item 11: a source column's type changes after rows were delivered — decimal
precision and scale are never silently rounded; what BigQuery can take in place is applied,
anything else stops that table with a TypeChangeError naming the backfill, and the tenant's
other tables load. Against the real MariaDB and the emulator (behind tests/bq_live.py, so
tables.get reports NUMERIC parameters as real BigQuery does).

Schemas and datasets are prefixed `hk_pol_` and dropped afterwards. The decision itself, incl.
BIGNUMERIC wider than the emulator's 38 digits, is unit-tested in tests/test_bigquery_dest.py.
"""

import datetime as dt
import textwrap
from decimal import Decimal

import pytest

from hakobu.config import load_config
from hakobu.errors import TypeChangeError
from hakobu.planning import plan_for
from hakobu.reconcile import diff_table
from hakobu.table import sync_table
from resources.bigquery_client import BigQuerySettings
from tests.helpers import dataset_factory, fresh_schema, tenant_body, unique, write_config
from tests.live import backfill_tenant, destination_for, source_for, sync_tenant


@pytest.fixture
def pol_schema(sql):
    yield from fresh_schema(sql, "hk_pol")


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_pol")


@pytest.fixture
def config_for(tmp_path, mysql_server, monkeypatch, bq_env):
    def make(schema, dataset, tables: list[str], warehouse: str | None = None):
        body = "".join(f"- name: {t}\n  cursor: updated_at\n" for t in tables)
        root = write_config(tmp_path / unique("cfg"), mysql_server,
                            {"a": tenant_body(schema, dataset, body)})
        if warehouse:
            (root / "tenants" / "warehouse.yaml").write_text(textwrap.dedent(f"""\
                warehouse:
                  project: hakobu-test
                  dataset: {warehouse}
                  location: US
                  hash_key_env: HK_POL_UNUSED_KEY
                """))
        monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
        return load_config(root)
    return make


def one_column_table(sql, schema, table, column_type, values):
    sql(f"CREATE TABLE `{schema}`.`{table}` (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        f"v {column_type}, INDEX (updated_at))")
    sql.many(f"INSERT INTO `{schema}`.`{table}` VALUES (%s, '2026-01-01' + INTERVAL %s SECOND, %s)",
             [(i, i, v) for i, v in enumerate(values, 1)])


def touch(sql, schema, table, row_id, value):
    sql(f"UPDATE `{schema}`.`{table}` SET v = %s, updated_at = NOW(6) - INTERVAL 1 SECOND "
        "WHERE id = %s", (value, row_id))


def results(config, **kw):
    return {r.table: r for r in sync_tenant(config, "a", **kw)}


def bq_value(bq_client, dataset, table, row_id, where=""):
    [row] = list(bq_client.query(f"SELECT v FROM `hakobu-test.{dataset}.{table}` "
                                 f"WHERE id = {int(row_id)}{where}").result())
    return row["v"]


def field(bq_client, dataset, table, name="v"):
    t = bq_client.get_table(f"hakobu-test.{dataset}.{table}")
    return next(f for f in t.schema if f.name == name)


def content_diff(config, table):
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table(table))
    return diff_table(source, destination_for(tenant, BigQuerySettings.from_env()), plan)


def test_decimal_scale_change_delivers_the_exact_value(sql, pol_schema, datasets, config_for,
                                                       bq_client, tmp_path, monkeypatch):
    """DECIMAL(10,2) -> DECIMAL(12,4) in MySQL: the BigQuery columns (customer and warehouse)
    are widened in place and 1.2345 arrives as 1.2345 — it used to be stored as 1.23, which
    only a content comparison (not a key checksum) could see. The run that widens is the
    Dagster materialization, whose metadata says so."""
    import dagster as dg

    from hakobu.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    one_column_table(sql, pol_schema, "payments", "DECIMAL(10,2)", ["1.23", "99999999.99", None])
    cust, wh = datasets(), datasets()
    config = config_for(pol_schema, cust, ["payments"], warehouse=wh)
    r = results(config)["payments"]
    assert r.ok and r.warehouse == "ok", (r.error, r.warehouse_error)
    assert (field(bq_client, cust, "payments").precision,
            field(bq_client, cust, "payments").scale) == (10, 2)

    sql(f"ALTER TABLE `{pol_schema}`.payments MODIFY v DECIMAL(12,4)")
    touch(sql, pol_schema, "payments", 1, "1.2345")
    touch(sql, pol_schema, "payments", 3, "-12345678.9999")
    assert main(["load", "a"]) == 0
    with dg.DagsterInstance.get() as instance:
        for key in (["customer", "payments"], ["warehouse", "payments"]):
            ev = instance.get_latest_materialization_event(dg.AssetKey(key))
            md = ev.asset_materialization.metadata
            assert md["columns_widened"].value == "v NUMERIC(10, 2) → NUMERIC(12, 4)", key
            assert md["policy_columns_removed"].value == "-"
    assert bq_value(bq_client, cust, "payments", 1) == Decimal("1.2345")
    assert bq_value(bq_client, cust, "payments", 3) == Decimal("-12345678.9999")
    assert bq_value(bq_client, cust, "payments", 2) == Decimal("99999999.99")   # kept exact
    assert bq_value(bq_client, wh, "payments", 1, " AND tenant_id = 'a'") == Decimal("1.2345")
    f = field(bq_client, cust, "payments")
    assert (f.field_type, f.precision, f.scale) == ("NUMERIC", 12, 4)
    d = content_diff(config, "payments")
    assert d.equal, d.summary()
    # the next run changes nothing
    r = results(config)["payments"]
    assert r.ok and r.extra["columns_widened"] == "-" and r.rows_read == 0


def test_numeric_becomes_bignumeric_in_place(sql, pol_schema, datasets, config_for, bq_client):
    """DECIMAL(20,4) -> DECIMAL(30,10): NUMERIC(20, 4) -> BIGNUMERIC(30, 10), as much as the
    emulator holds (38 digits); wider BIGNUMERIC is decided in tests/test_bigquery_dest.py."""
    one_column_table(sql, pol_schema, "ledger", "DECIMAL(20,4)", ["1234567890123456.0001"])
    cust = datasets()
    config = config_for(pol_schema, cust, ["ledger"])
    assert results(config)["ledger"].ok
    sql(f"ALTER TABLE `{pol_schema}`.ledger MODIFY v DECIMAL(30,10)")
    touch(sql, pol_schema, "ledger", 1, "12345678901234567890.0123456789")
    r = results(config)["ledger"]
    assert r.ok, r.error
    assert r.extra["columns_widened"] == "v NUMERIC(20, 4) → BIGNUMERIC(30, 10)"
    assert bq_value(bq_client, cust, "ledger", 1) == Decimal("12345678901234567890.0123456789")
    f = field(bq_client, cust, "ledger")
    assert (f.field_type, f.precision, f.scale) == ("BIGNUMERIC", 30, 10)
    assert content_diff(config, "ledger").equal


def test_incompatible_type_changes_stop_that_table_only(sql, pol_schema, datasets, config_for,
                                                        bq_client):
    """Narrowing, INT -> BIGINT UNSIGNED (INT64 -> NUMERIC(20)) and FLOAT -> DECIMAL each stop
    their table with a TypeChangeError that names the backfill; VARCHAR -> TEXT (STRING either
    way) and DATETIME(0) -> DATETIME(6) (DATETIME either way, micro-seconds then delivered) load;
    a backfill gets the stopped table through."""
    one_column_table(sql, pol_schema, "narrow", "DECIMAL(12,4)", ["1.2345"])
    one_column_table(sql, pol_schema, "unsigned", "INT", [7])
    one_column_table(sql, pol_schema, "flt", "FLOAT", [0.5])
    one_column_table(sql, pol_schema, "txt", "VARCHAR(20)", ["short"])
    one_column_table(sql, pol_schema, "stamp", "DATETIME", ["2026-01-01 10:00:00"])
    cust = datasets()
    tables = ["narrow", "unsigned", "flt", "txt", "stamp"]
    config = config_for(pol_schema, cust, tables)
    assert all(r.ok for r in results(config).values())

    sql(f"ALTER TABLE `{pol_schema}`.narrow MODIFY v DECIMAL(10,2)")
    sql(f"ALTER TABLE `{pol_schema}`.unsigned MODIFY v BIGINT UNSIGNED")
    sql(f"ALTER TABLE `{pol_schema}`.flt MODIFY v DECIMAL(10,2)")
    sql(f"ALTER TABLE `{pol_schema}`.txt MODIFY v TEXT")
    sql(f"ALTER TABLE `{pol_schema}`.stamp MODIFY v DATETIME(6)")
    touch(sql, pol_schema, "narrow", 1, "2.50")
    touch(sql, pol_schema, "unsigned", 1, 18446744073709551615)
    touch(sql, pol_schema, "flt", 1, "0.25")
    touch(sql, pol_schema, "txt", 1, "long " * 100)
    touch(sql, pol_schema, "stamp", 1, "2026-01-01 10:00:00.123456")
    r = results(config)
    expect = {"narrow": "v: BigQuery has NUMERIC(12, 4), source now gives NUMERIC(10, 2): a "
                        "narrower type",
              "unsigned": "v: BigQuery has INT64, source now gives NUMERIC(20)",
              "flt": "v: BigQuery has FLOAT64, source now gives NUMERIC(10, 2)"}
    for table, text in expect.items():
        assert not r[table].ok
        assert f"a/{table}: incompatible column type change: {text}" in r[table].error
        assert f"`hakobu backfill a --tables {table}`" in r[table].error
    assert r["txt"].ok and r["stamp"].ok, (r["txt"].error, r["stamp"].error)
    assert bq_value(bq_client, cust, "txt", 1) == "long " * 100
    assert bq_value(bq_client, cust, "stamp", 1) == dt.datetime(2026, 1, 1, 10, 0, 0, 123456)
    # the old rows were left untouched, nothing was altered half-way
    assert bq_value(bq_client, cust, "narrow", 1) == Decimal("1.2345")
    assert field(bq_client, cust, "unsigned").field_type == "INTEGER"
    # the error is a TypeChangeError (a SchemaError: terminal, not retried)
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    with pytest.raises(TypeChangeError):
        sync_table(source, destination_for(tenant, BigQuerySettings.from_env()), tenant,
                   "unsigned", run_id="direct")
    # the backfill the error names reloads the table with its new types
    [b] = backfill_tenant(config, "a", tables=["unsigned"])
    assert b.ok, b.error
    assert bq_value(bq_client, cust, "unsigned", 1) == Decimal("18446744073709551615")
    r = results(config)
    assert r["unsigned"].ok and r["unsigned"].rows_read == 0
    assert not r["narrow"].ok and not r["flt"].ok      # until they are backfilled too
    assert content_diff(config, "unsigned").equal
