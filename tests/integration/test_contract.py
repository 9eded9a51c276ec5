"""Issue 3 contract: every type edge round-trips into BigQuery; schema changes; tables without
a primary key; the source killing our connection; the destination going away mid-load."""

import threading
import time

import pytest

from tests.live import sync_tenant
from hakobu.types import ColumnInfo, column_spec
from tests.integration.test_readers import EDGE_TABLE, ROWS
from tests.integration.test_sync import assert_equal, results


def test_every_edge_value_round_trips_through_bigquery(sql, schema, dataset, make_config,
                                                       bq_env):
    sql("SET SESSION sql_mode = ''")
    sql(EDGE_TABLE.format(s=schema))
    sql(f"INSERT INTO `{schema}`.edges VALUES " + ", ".join(ROWS))
    sql("SET SESSION sql_mode = DEFAULT")
    # d65 needs BIGNUMERIC(65,30): real BigQuery holds it, the emulator (DuckDB, 38 digits)
    # does not; it is verified on the Arrow data (test_readers) and the declared type below.
    config = make_config({"a": (schema, dataset,
                                "- name: edges\n  cursor: updated_at\n  exclude: [d65]\n")})
    r = results(config, "a")["edges"]
    assert r.ok, r.error
    d = assert_equal(config, "a", "edges")
    assert d.source_rows == 3


def test_wide_decimal_declared_as_bignumeric():
    spec = column_spec(ColumnInfo("d", "decimal", "decimal(65,30)", True, 65, 30))
    assert spec.bq_type == "BIGNUMERIC(65, 30)" and "CAST(`d` AS CHAR)" in spec.select_sql
    assert column_spec(ColumnInfo("d", "decimal", "decimal(38,9)", True, 38, 9)).bq_type \
        == "NUMERIC(38, 9)"
    assert column_spec(ColumnInfo("d", "decimal", "decimal(38,10)", True, 38, 10)).bq_type \
        == "BIGNUMERIC(38, 10)"
    assert column_spec(ColumnInfo("u", "bigint", "bigint(20) unsigned", True)).bq_type \
        == "NUMERIC(20, 0)"


def test_schema_changes(sql, schema, dataset, make_config, bq_env, bq_client):
    from tests.integration.conftest import make_orders

    make_orders(sql, schema, n=30)
    sql(f"CREATE TABLE `{schema}`.other (id INT PRIMARY KEY, updated_at DATETIME NOT NULL, "
        "v INT, INDEX (updated_at))")
    sql(f"INSERT INTO `{schema}`.other VALUES (1, '2026-01-01', 1)")
    tables = ("- name: orders\n  cursor: updated_at\n- name: other\n  cursor: updated_at\n")
    config = make_config({"a": (schema, dataset, tables)})
    results(config, "a")
    # a column added in MySQL appears in BigQuery, and the table is read again in full once, so
    # the rows delivered before carry the source's value too (here the column's DEFAULT)
    sql(f"ALTER TABLE `{schema}`.orders ADD COLUMN coupon VARCHAR(10) NULL DEFAULT 'NONE'")
    sql(f"UPDATE `{schema}`.orders SET coupon = 'SPRING', updated_at = NOW(6) - INTERVAL 1 SECOND "
        "WHERE id <= 3")
    r = results(config, "a")
    assert r["orders"].columns_added == ["coupon"] and r["orders"].rows_read == 30
    assert r["orders"].extra["reread"] == "columns added to a table holding rows: coupon"
    rows = {x["id"]: x["coupon"] for x in bq_client.query(
        f"SELECT id, coupon FROM `hakobu-test.{dataset}.orders`").result()}
    assert rows[1] == "SPRING" and rows[10] == "NONE"
    again = results(config, "a")["orders"]         # once: the next run is incremental again
    assert again.columns_added == [] and again.rows_read == 0 and again.extra["reread"] == "-"
    # a dropped column stays in BigQuery (nullable) and stops receiving values
    sql(f"ALTER TABLE `{schema}`.orders DROP COLUMN note")
    sql(f"INSERT INTO `{schema}`.orders (id, updated_at, amount) VALUES "
        "(100, NOW(6) - INTERVAL 1 SECOND, 9.99)")
    assert results(config, "a")["orders"].ok
    rows = {x["id"]: x["note"] for x in bq_client.query(
        f"SELECT id, note FROM `hakobu-test.{dataset}.orders`").result()}
    assert rows[100] is None and rows[5] == "note 5 🍣"
    # an incompatible type change stops that table only, saying what to do
    sql(f"ALTER TABLE `{schema}`.orders MODIFY amount VARCHAR(20)")
    sql(f"UPDATE `{schema}`.other SET v = 2, updated_at = NOW(6) - INTERVAL 1 SECOND")
    r = results(config, "a")
    assert not r["orders"].ok
    assert "amount: BigQuery has NUMERIC(12, 2), source now gives STRING" in r["orders"].error
    assert "`hakobu backfill a --tables orders`" in r["orders"].error
    assert r["other"].ok and r["other"].rows_read == 1


def test_table_without_primary_key_is_replaced_atomically(sql, schema, dataset, make_config,
                                                          bq_env):
    sql(f"CREATE TABLE `{schema}`.events (k VARCHAR(10), n INT, at DATETIME)")
    sql.many(f"INSERT INTO `{schema}`.events VALUES (%s, %s, '2026-01-01')",
             [(f"k{i % 7}", i) for i in range(200)])
    config = make_config({"a": (schema, dataset, "- name: events\n  without_primary_key: replace\n"
                                                 "  chunk_rows: 50\n")})
    r = results(config, "a")["events"]
    assert r.ok and r.mode == "replace" and r.rows_read == 200
    sql(f"DELETE FROM `{schema}`.events WHERE n < 50")
    sql(f"INSERT INTO `{schema}`.events VALUES ('new', 1000, NULL)")
    r = results(config, "a")["events"]
    assert r.rows_read == 151
    from tests.live import destination_for
    dest = destination_for(config.tenant("a"), bq_env)
    got = sorted((x["k"], x["n"]) for x in dest.rows(f"SELECT k, n FROM {dest.ref('events')}"))
    want = sorted((k, n) for k, n, _ in sql(f"SELECT k, n, at FROM `{schema}`.events"))
    assert got == want


def test_connection_killed_by_the_server_is_retried(sql, schema, dataset, make_config, bq_env,
                                                    mysql_server, monkeypatch):
    """KILL CONNECTION on our reader while it reads: a transient error, retried from the last
    watermark; BigQuery ends equal to the source, nothing doubled."""
    import hakobu.results as hs
    from tests.helpers import Sql

    monkeypatch.setattr(hs, "RETRY_BASE_S", 0.2)
    sql(f"CREATE TABLE `{schema}`.orders (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "body TEXT, INDEX (updated_at))")
    sql.many(f"INSERT INTO `{schema}`.orders VALUES (%s, '2026-01-01' + INTERVAL %s SECOND, "
             "REPEAT('x', 2000))", [(i, i) for i in range(1, 6001)])
    config = make_config({"a": (schema, dataset, "- name: orders\n  cursor: updated_at\n"
                                                 "  chunk_rows: 1500\n")})
    killer = Sql(mysql_server)
    killed, stop = [], threading.Event()

    def hunt():
        while not stop.is_set() and not killed:
            for pid, info in killer("SELECT ID, INFO FROM information_schema.PROCESSLIST "
                                    "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
                                    (f"%{schema}%orders%LIMIT%",)):
                try:
                    killer(f"KILL CONNECTION {int(pid)}")
                    killed.append(pid)
                except Exception:
                    pass
            time.sleep(0.002)

    t = threading.Thread(target=hunt, daemon=True)
    t.start()
    try:
        r = results(config, "a")["orders"]
    finally:
        stop.set()
        t.join(5)
        killer.close()
    assert killed, "the reader's query was never caught running; nothing was tested"
    assert r.ok, r.error
    d = assert_equal(config, "a")
    assert d.dest_rows == 6000 and d.duplicates == 0


def test_destination_unreachable_mid_load_then_rerun(sql, schema, make_config, tmp_path,
                                                     monkeypatch):
    """The emulator dies between staging and MERGE: the table fails with a clear error after
    bounded retries; once BigQuery is back, a rerun makes it exact."""
    import hakobu.results as hs
    from hakobu.localenv.emulator import free_port, start_emulator
    from hakobu.results import Hooks
    from tests.integration.conftest import make_orders

    monkeypatch.setattr(hs, "RETRY_BASE_S", 0.1)
    port = free_port()
    emu = start_emulator(tmp_path / "emu", port=port)
    monkeypatch.setenv("HAKOBU_BIGQUERY_ENDPOINT", emu.url)
    monkeypatch.setenv("HAKOBU_BIGQUERY_RETRY_DEADLINE", "2")
    try:
        make_orders(sql, schema, n=300)
        config = make_config({"a": (schema, "hk_down", "- name: orders\n  cursor: updated_at\n"
                                                       "  chunk_rows: 100\n")})
        [r] = sync_tenant(config, "a", hooks=Hooks(before_merge=lambda **_: emu.stop()))
        assert not r.ok
        assert "BigQuery" in r.error and "hk_down" in r.error
        emu = start_emulator(tmp_path / "emu", port=port)
        r = results(config, "a")["orders"]
        assert r.ok, r.error
        d = assert_equal(config, "a")
        assert d.dest_rows == 300 and d.duplicates == 0
    finally:
        emu.stop()


def test_terminal_errors_fail_fast_without_retries(monkeypatch):
    import hakobu.results as hs
    from hakobu.errors import SchemaError, SourceUnavailable

    calls = []

    def terminal():
        calls.append(1)
        raise SchemaError("bad")

    with pytest.raises(SchemaError):
        hs.with_retries(terminal, what="t", attempts=3, base_s=0)
    assert len(calls) == 1

    def transient():
        calls.append(1)
        raise SourceUnavailable("gone")

    calls.clear()
    with pytest.raises(SourceUnavailable):
        hs.with_retries(transient, what="t", attempts=3, base_s=0)
    assert len(calls) == 3
