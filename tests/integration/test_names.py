"""Any MySQL name delivers (issue #16), end to end against the real MariaDB and the emulator.

One table holds every kind of name MySQL accepts — spaces, `$`, `-`, dots, non-ASCII letters,
reserved words, a leading digit, BigQuery's and hakobu's reserved prefixes, quotes and
backticks, 64 characters — as key, cursor, JSON and plain columns; a second one, without a
key, has a space in its own name. Both go through `hakobu validate`, `hakobu load` (the Dagster
materialization), an incremental run with updates and a delete, the warehouse (a dropped and a
hashed column named oddly), `hakobu verify` (equal, then DIFFERENT after a corruption in each
dataset, then repaired) and `hakobu backfill`. BigQuery holds them under hakobu.naming's names,
with the MySQL name in each renamed column's description.

Schemas and datasets `hk_nam_*`, dropped afterwards.
"""

import datetime as dt
import re

import dagster as dg
import pytest

from hakobu.cli import main
from hakobu.naming import column_name, table_name
from hakobu.reconcile import diff_table
from tests.live import destination_for, source_for, sync_tenant
from resources.bigquery_client import BigQuerySettings
from tests.helpers import unique
from tests.integration.test_warehouse import (KEY, KEY_ENV, bq_rows, datasets,  # noqa: F401
                                              export_plan_of, wh_config)

TABLE = "ord$2024"
KEYLESS = "my table"
LONG = "l" * 30 + " " + "ö" * 33                       # 64 characters, mapped and cut
COLUMNS = {   # MySQL name → its DDL
    "order id": "BIGINT NOT NULL",
    "updated at": "DATETIME(6) NOT NULL",
    "my col": "VARCHAR(32)",
    "a-b": "INT",
    "a.b": "DECIMAL(12,2)",
    "Ünïcødé": "TEXT",
    "名前": "VARCHAR(32)",
    "order": "INT",
    "select": "VARCHAR(8)",
    "2nd": "INT",
    "_TABLE_x": "INT",
    "_hakobu_seq": "INT",
    "it's \"q\" `t`": "VARCHAR(8)",
    "pay load": "JSON",
    LONG: "INT",
}
ODD = [c for c in COLUMNS if column_name(c) != c]
TABLES = (f"- name: '{TABLE}'\n  cursor: 'updated at'\n  chunk_rows: 40\n"
          f"- name: '{KEYLESS}'\n  without_primary_key: replace\n")
WAREHOUSE = ("warehouse:\n  project: hakobu-test\n  dataset: {ds}\n  location: US\n"
             f"  hash_key_env: {KEY_ENV}\n  drop_columns: ['a-b']\n  hash_columns: ['名前']\n")


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def bq(name: str) -> str:
    return f"`{column_name(name)}`"


@pytest.fixture
def nam_schema(sql):
    name = unique("hk_nam")
    sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    sql(f"DROP DATABASE IF EXISTS `{name}`")


def row(i: int) -> tuple:
    return (i, dt.datetime(2026, 1, 1) + dt.timedelta(minutes=i), f"v{i} é", i % 7, f"{i}.25",
            "ü" * (i % 4), f"名{i}", i, "s", 2 * i, -i, i * 3, "it's", f'{{"k": {i}}}', i % 2)


def make_tables(sql, schema: str, n: int = 120) -> None:
    cols = ", ".join(f"{q(c)} {t}" for c, t in COLUMNS.items())
    sql(f"CREATE TABLE {q(schema)}.{q(TABLE)} ({cols}, PRIMARY KEY ({q('order id')}), "
        f"INDEX {q('ix cur')} ({q('updated at')}))")
    sql.many(f"INSERT INTO {q(schema)}.{q(TABLE)} ({', '.join(q(c) for c in COLUMNS)}) VALUES "
             f"({', '.join(['%s'] * len(COLUMNS))})", [row(i) for i in range(1, n + 1)])
    sql(f"CREATE TABLE {q(schema)}.{q(KEYLESS)} ({q('x y')} INT, {q('z-z')} VARCHAR(8))")
    sql.many(f"INSERT INTO {q(schema)}.{q(KEYLESS)} VALUES (%s, %s)",
             [(i, f"z{i}") for i in range(5)])


def descriptions(bq_client, dataset: str, table: str) -> dict[str, str | None]:
    t = bq_client.get_table(f"hakobu-test.{dataset}.{table}")
    return {f.name: f.description for f in t.schema}


def test_every_kind_of_mysql_name_is_delivered_verified_and_backfilled(
        sql, nam_schema, datasets, wh_config, bq_client, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    make_tables(sql, nam_schema)
    cust, wh = datasets("hk_nam"), datasets("hk_nam")
    config = wh_config({"a": (nam_schema, cust, TABLES)}, WAREHOUSE.format(ds=wh))
    t_bq, k_bq = table_name(TABLE), table_name(KEYLESS)
    assert (t_bq, k_bq) == ("ord_2024_a76493", "my_table_0d2458")

    # validate reflects the tables on the source: every name is fine
    assert main(["validate"]) == 0, capsys.readouterr().err
    capsys.readouterr()

    # the Dagster materialization, assets named by the BigQuery names
    assert main(["load", "a"]) == 0, capsys.readouterr().err
    with dg.DagsterInstance.get() as instance:
        ev = instance.get_latest_materialization_event(dg.AssetKey(["customer", t_bq]))
        md = {k: getattr(v, "value", v) for k, v in ev.asset_materialization.metadata.items()}
        assert md["rows_read"] == 120 and md["bigquery_table"] == t_bq
        assert md["mysql_table"] == TABLE and "my col → my_col_7a2881" in md["columns_renamed"]
        assert instance.get_latest_materialization_event(dg.AssetKey(["warehouse", t_bq]))
        assert instance.get_latest_materialization_event(dg.AssetKey(["customer", k_bq]))

    # BigQuery: mapped names, the MySQL name in each renamed column's description
    desc = descriptions(bq_client, cust, t_bq)
    assert set(desc) == {column_name(c) for c in COLUMNS} | {"_hakobu_synced_at"}
    for c in ODD:
        assert desc[column_name(c)] == f"MySQL column: {c}", c
    assert desc["order"] is None and desc["select"] is None       # kept, so not described
    assert descriptions(bq_client, cust, k_bq)[column_name("x y")] == "MySQL column: x y"
    tenant = config.tenant("a")
    source, dest = source_for(config, tenant), destination_for(tenant, BigQuerySettings.from_env())
    plan = export_plan_of(config, "a", TABLE)
    assert diff_table(source, dest, plan).equal
    keyless = bq_rows(bq_client, f"SELECT {bq('x y')} AS x, {bq('z-z')} AS z "
                                 f"FROM `hakobu-test.{cust}.{k_bq}` ORDER BY 1")
    assert keyless == [{"x": i, "z": f"z{i}"} for i in range(5)]

    # the warehouse: `a-b` dropped, `名前` hashed, both by their MySQL names; markers kept
    wdesc = descriptions(bq_client, wh, t_bq)
    assert column_name("a-b") not in wdesc and "tenant_id" in wdesc
    name_bq = column_name("名前")
    assert re.fullmatch(r"hakobu form=hmac gen=[0-9a-z]{8}: .*; MySQL column: 名前",
                        wdesc[name_bq]), wdesc[name_bq]
    assert wdesc[column_name("my col")].endswith("; MySQL column: my col")
    [w3] = bq_rows(bq_client, f"SELECT {bq('my col')} AS c, {bq(name_bq)} AS h FROM "
                              f"`hakobu-test.{wh}.{t_bq}` WHERE {bq('order id')} = 3")
    assert w3["c"] == "v3 é" and re.fullmatch(r"[0-9a-f]{64}", w3["h"])

    # an incremental run through the odd cursor and key: updates, and a delete
    sql(f"UPDATE {q(nam_schema)}.{q(TABLE)} SET {q('my col')} = 'changed', "
        f"{q('pay load')} = '{{\"k\": -1}}', {q('updated at')} = '2026-03-01' "
        f"WHERE {q('order id')} IN (5, 6)")
    sql(f"DELETE FROM {q(nam_schema)}.{q(TABLE)} WHERE {q('order id')} = 7")
    results = {r.table: r for r in sync_tenant(config, "a")}
    r = results[TABLE]
    assert r.ok and r.warehouse == "ok", (r.error, r.warehouse_error)
    assert r.rows_read == 2 and r.mode == "incremental"
    assert r.extra["deletes_rows_deleted"] == 1
    assert diff_table(source, dest, plan).equal
    [w5] = bq_rows(bq_client, f"SELECT {bq('my col')} AS c FROM `hakobu-test.{wh}.{t_bq}` "
                              f"WHERE {bq('order id')} = 5")
    assert w5["c"] == "changed"

    # hakobu verify: equal; DIFFERENT after a corruption in each dataset; --repair
    assert main(["verify", "a", "--no-progress"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert re.search(rf"customer/{re.escape(TABLE)} +119 .* equal", out), out
    assert re.search(rf"warehouse/{re.escape(TABLE)} +119 .* equal", out), out
    bq_client.query(f"UPDATE `hakobu-test.{cust}.{t_bq}` SET {bq('my col')} = 'corrupt', "
                    f"{bq(LONG)} = 9 WHERE {bq('order id')} = 11").result()
    bq_client.query(f"UPDATE `hakobu-test.{wh}.{t_bq}` SET {bq('a.b')} = 0 "
                    f"WHERE {bq('order id')} = 12").result()
    assert main(["verify", "a", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"customer/{re.escape(TABLE)} .* 1 +0 +DIFFERENT", out), out
    assert re.search(rf"warehouse/{re.escape(TABLE)} .* 1 +0 +DIFFERENT", out), out
    assert main(["verify", "a", "--repair", "--no-progress"]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert diff_table(source, dest, plan).equal

    # a backfill swaps the table in (a CREATE ... AS SELECT): the descriptions stay
    assert main(["backfill", "a", "--tables", TABLE, "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert descriptions(bq_client, cust, t_bq) == desc
    assert diff_table(source, dest, plan).equal


def test_columns_landing_in_one_bigquery_column_are_refused_by_name(sql, nam_schema, datasets,
                                                                    wh_config, capsys):
    """`my col` and a column literally named like its mapping are one BigQuery column: the
    table is refused before anything is read, naming both (validate says it at the table's
    line); the tenant's other tables are delivered."""
    sql(f"CREATE TABLE {q(nam_schema)}.t (id INT PRIMARY KEY, {q('my col')} INT, "
        "my_col_7a2881 INT)")
    sql(f"CREATE TABLE {q(nam_schema)}.fine (id INT PRIMARY KEY, {q('my col')} INT)")
    sql(f"INSERT INTO {q(nam_schema)}.fine VALUES (1, 2)")
    config = wh_config({"a": (nam_schema, datasets("hk_nam"), "- name: t\n- name: fine\n")},
                       None)
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "a.yaml:" in err and "'my col', 'my_col_7a2881' → 'my_col_7a2881'" in err
    results = {r.table: r for r in sync_tenant(config, "a")}
    assert not results["t"].ok and "would land in one BigQuery column" in results["t"].error
    assert results["fine"].ok and results["fine"].rows_merged == 1
