"""Issue #11 item 6: tables without a PRIMARY KEY whose tenant file declares `primary_key:`.
They load (first load, incremental updates, inserts and deletes; content equal to the source)
whatever index the declared key has: FORCE INDEX on a UNIQUE index on the key, none without one
(the first load then reads in cursor order). A declared key over NULL-able columns, and one whose
values are not unique in the data, are refused by name and change nothing.
Real MariaDB + emulator; hk_cfg_ schemas and datasets."""

import datetime as dt

import pytest
from google.api_core.exceptions import NotFound

from hakobu.cli import main
from hakobu.config import Cluster
from resources.mysql_sql import chunk_sql
from hakobu.reconcile import diff_table
from hakobu.planning import plan_for
from tests.live import destination_for, source_for, sync_tenant
from tests.live import backfill_tenant
from resources.bigquery_client import BigQuerySettings
from resources.mysql_source import MySQLSource
from tests.integration.cfg_fixtures import cfg_datasets, cfg_schema  # noqa: F401

N = 300

# name → (extra DDL of the table, primary_key:, cursor)
SHAPES = {
    "no-index": ("INDEX ix_cur (updated_at)", "[code]", "updated_at"),
    "cursor-index-with-key": ("INDEX ix_cur (updated_at, code)", "[code]", "updated_at"),
    "unique-index": ("UNIQUE KEY uk (code), INDEX ix_cur (updated_at)", "[code]", "updated_at"),
    "unique-composite": ("UNIQUE KEY uk (region, code), INDEX ix_cur (updated_at)",
                         "[region, code]", "updated_at"),
    "plain-index-on-key": ("INDEX ik (code, note), INDEX ix_cur (updated_at)", "[code]",
                           "updated_at"),
    "no-cursor": ("", "[code]", None),
    "no-cursor-unique": ("UNIQUE KEY uk (code)", "[code]", None),
}


def make_nokey(sql, schema: str, extra: str, n: int = N) -> None:
    sql(f"CREATE TABLE `{schema}`.ledger (code INT NOT NULL, region CHAR(2) NOT NULL, "
        "updated_at DATETIME(6) NOT NULL, amount DECIMAL(12,2), note VARCHAR(32)"
        + (f", {extra}" if extra else "") + ")")
    base = dt.datetime(2026, 1, 1)
    sql.many(f"INSERT INTO `{schema}`.ledger VALUES (%s, %s, %s, %s, %s)",
             [(i, "eu" if i % 2 else "us", base + dt.timedelta(seconds=i // 4), f"{i}.50",
               f"row {i}") for i in range(1, n + 1)])


def table_yaml(pk: str, cursor: str | None, chunk: int = 40) -> str:
    return (f"- name: ledger\n  primary_key: {pk}\n" + (f"  cursor: {cursor}\n" if cursor else "")
            + f"  chunk_rows: {chunk}\n")


def assert_equal(config) -> None:
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table("ledger"))
    d = diff_table(source, destination_for(tenant, BigQuerySettings.from_env()), plan)
    assert d.equal, d.summary()
    assert d.duplicates == 0
    return d


@pytest.mark.parametrize("shape", list(SHAPES))
def test_declared_key_on_a_table_without_primary_key_delivers(sql, cfg_schema, cfg_datasets,
                                                              make_config, bq_env, shape):
    extra, pk, cursor = SHAPES[shape]
    make_nokey(sql, cfg_schema, extra)
    config = make_config({"a": (cfg_schema, cfg_datasets(), table_yaml(pk, cursor))})
    [r] = sync_tenant(config, "a")
    assert r.ok, r.error
    assert r.rows_read == N
    assert_equal(config)
    # updates (some to the same cursor value), inserts and a delete: delivered, still equal
    sql(f"UPDATE `{cfg_schema}`.ledger SET note = 'changed', amount = amount + 1, "
        "updated_at = NOW(6) - INTERVAL 2 SECOND WHERE code IN (1, 2, 150, 151, 299)")
    sql(f"INSERT INTO `{cfg_schema}`.ledger VALUES (1001, 'eu', NOW(6) - INTERVAL 2 SECOND, "
        "9.99, 'new'), (1002, 'us', NOW(6) - INTERVAL 2 SECOND, 0.01, 'new')")
    sql(f"DELETE FROM `{cfg_schema}`.ledger WHERE code = 77")
    [r] = sync_tenant(config, "a")
    assert r.ok, r.error
    if cursor:
        assert r.rows_read == 7, r           # only the changed rows
    d = assert_equal(config)
    assert d.source_rows == N + 1
    [r] = backfill_tenant(config, "a")
    assert r.ok, r.error
    assert_equal(config)


def test_a_declared_key_with_a_unique_index_is_read_along_it(sql, cfg_schema, mysql_server):
    make_nokey(sql, cfg_schema, "UNIQUE KEY uk (code), INDEX ix_cur (updated_at)", n=3000)
    sql(f"ANALYZE TABLE `{cfg_schema}`.ledger")
    from tests.integration.test_explain import explain, tenant

    cluster = Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    source = MySQLSource(cluster)
    t = tenant(cfg_schema).model_copy(update={"tables": []})
    from hakobu.config import Table
    table = Table(name="ledger", primary_key=["code"], cursor="updated_at", chunk_rows=100)
    plan = plan_for(source, t, table)
    assert (plan.key_index, plan.key_enforced, plan.initial_in_pk_order) == ("uk", True, True)
    for q in (chunk_sql(plan, "initial", None, dt.datetime(2030, 1, 1)),
              chunk_sql(plan, "initial", (dt.datetime(2026, 1, 1), 1500), dt.datetime(2030, 1, 1)),
              chunk_sql(plan, "full", (1200,), None, pk_range=(1000, 2000))):
        assert "FORCE INDEX (`uk`)" in q and "PRIMARY" not in q
        [row] = explain(sql, q)
        assert row["key"] == "uk" and "filesort" not in row["extra"].lower(), (row, q)
    # without an index ordered by the key: no FORCE INDEX, and the first load reads in cursor
    # order through the cursor index instead of sorting the whole table per query
    sql(f"ALTER TABLE `{cfg_schema}`.ledger DROP INDEX uk")
    plan = plan_for(source, t, table)
    assert (plan.key_index, plan.key_enforced, plan.initial_in_pk_order) == (None, False, False)
    assert "FORCE INDEX" not in chunk_sql(plan, "full", None, None)
    source.dispose()


@pytest.mark.parametrize("nullable", ["code", "region"])
def test_declared_key_over_a_nullable_column_is_refused_by_name(
        sql, cfg_schema, cfg_datasets, make_config, bq_env, bq_client, capsys, nullable):
    make_nokey(sql, cfg_schema, "UNIQUE KEY uk (region, code), INDEX ix_cur (updated_at)", n=20)
    sql(f"ALTER TABLE `{cfg_schema}`.ledger MODIFY {nullable} "
        f"{'INT' if nullable == 'code' else 'CHAR(2)'} NULL")
    ds = cfg_datasets()
    config = make_config({"a": (cfg_schema, ds, table_yaml("[region, code]", "updated_at"))})
    [r] = sync_tenant(config, "a")
    assert not r.ok
    assert f"a/ledger: declared primary key column(s) ['{nullable}']" in r.error, r.error
    assert "can be NULL" in r.error and "NOT NULL" in r.error
    with pytest.raises(NotFound):                    # refused before anything was written
        bq_client.get_dataset(f"hakobu-test.{ds}")
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert f"a.yaml:15: a/ledger: declared primary key column(s) ['{nullable}']" in err, err


@pytest.mark.parametrize("shape", ["no-index", "plain-index-on-key", "no-cursor"])
def test_duplicate_values_of_a_declared_key_are_refused_never_collapsed(
        sql, cfg_schema, cfg_datasets, make_config, bq_env, bq_client, shape):
    extra, pk, cursor = SHAPES[shape]
    make_nokey(sql, cfg_schema, extra, n=50)
    sql(f"INSERT INTO `{cfg_schema}`.ledger VALUES (7, 'eu', '2026-01-01', 1.00, 'twin of 7')")
    ds = cfg_datasets()
    config = make_config({"a": (cfg_schema, ds, table_yaml(pk, cursor))})
    [r] = sync_tenant(config, "a")
    assert not r.ok
    assert "declared primary key ['code']" in r.error and "is not unique: 2 rows have " \
           "{'code': 7}" in r.error, r.error
    assert "UNIQUE index" in r.error
    try:
        rows = list(bq_client.query(f"SELECT COUNT(*) AS n FROM `hakobu-test.{ds}.ledger`")
                    .result())
        assert rows[0]["n"] == 0                     # nothing delivered
    except NotFound:
        pass
    # once the source is fixed it loads
    sql(f"DELETE FROM `{cfg_schema}`.ledger WHERE note = 'twin of 7'")
    [r] = sync_tenant(config, "a")
    assert r.ok, r.error
    assert_equal(config)
    # a duplicate that appears later: refused again where the key's index makes the check
    # cheap enough for every run (or the table is read in full each run); the delivered table
    # is left as it was
    sql(f"INSERT INTO `{cfg_schema}`.ledger VALUES (9, 'us', NOW(6) - INTERVAL 2 SECOND, 1.00, "
        "'twin of 9')")
    [r] = sync_tenant(config, "a")
    if shape == "no-index":
        # documented: without an index on the key, incremental runs do not look for duplicates;
        # the nightly key checksums see the source's extra row and say the table is not in sync
        assert r.ok and r.check is not None and not r.check.equal, (r.error, r.check)
        [r] = backfill_tenant(config, "a")           # a complete read refuses it by name
        assert not r.ok and "{'code': 9}" in r.error, r.error
        return
    assert not r.ok and "{'code': 9}" in r.error, r.error
    rows = list(bq_client.query(f"SELECT COUNT(*) AS n FROM `hakobu-test.{ds}.ledger` "
                                "WHERE code = 9").result())
    assert rows[0]["n"] == 1
