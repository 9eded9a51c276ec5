"""Delivery against the real MariaDB and the BigQuery emulator: incremental reads, equality,
boundaries, NULL cursors, late commits, isolation, bad input, crash and rerun."""

import time

import pytest

from hakobu.errors import HakobuError
from hakobu.reconcile import diff_table
from hakobu.results import Hooks
from hakobu.planning import plan_for
from tests.live import destination_for, source_for, sync_tenant
from tests.integration.conftest import make_orders

ORDERS = """\
- name: orders
  cursor: updated_at
  chunk_rows: {chunk}
"""


def results(config, tenant, **kw):
    return {r.table: r for r in sync_tenant(config, tenant, **kw)}


def assert_equal(config, tenant_id, table="orders"):
    tenant = config.tenant(tenant_id)
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table(table))
    d = diff_table(source, destination_for(tenant, _settings()), plan)
    assert d.equal, d.summary()
    return d


def _settings():
    from resources.bigquery_client import BigQuerySettings

    return BigQuerySettings.from_env()


def test_initial_then_incremental(sql, schema, dataset, make_config, bq_env):
    make_orders(sql, schema, n=1000)
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=300))})
    r = results(config, "a")["orders"]
    assert r.ok, r.error
    assert r.rows_read == 1000 and r.chunks == 4 + 1 + 1  # main pass, NULL pass, zero-date pass
    assert_equal(config, "a")
    # nothing changed: nothing read
    assert results(config, "a")["orders"].rows_read == 0
    # 7 updates and 5 inserts: exactly those are read
    sql(f"UPDATE `{schema}`.orders SET note = 'changed', updated_at = NOW(6) - INTERVAL 1 MINUTE "
        "WHERE id IN (3, 50, 51, 52, 400, 999, 1000)")
    sql.many(f"INSERT INTO `{schema}`.orders (id, updated_at, amount, note, payload) VALUES "
             "(%s, NOW(6) - INTERVAL 1 MINUTE, 1.50, 'new', '{}')", [(i,) for i in range(2001, 2006)])
    r = results(config, "a")["orders"]
    assert r.rows_read == 12, r
    d = assert_equal(config, "a")
    assert d.source_rows == 1005


def test_many_rows_share_one_cursor_value_across_chunks(sql, schema, dataset, make_config,
                                                        bq_env):
    sql(f"CREATE TABLE `{schema}`.orders (id INT PRIMARY KEY, updated_at DATETIME NOT NULL, "
        "note VARCHAR(10), INDEX (updated_at))")
    sql.many(f"INSERT INTO `{schema}`.orders VALUES (%s, '2026-01-01 00:00:00', 'x')",
             [(i,) for i in range(1, 251)])
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=7))})
    r = results(config, "a")["orders"]
    assert r.rows_read == 250
    # more rows at the same instant, with keys below and above the watermark's pk
    sql.many(f"INSERT INTO `{schema}`.orders VALUES (%s, '2026-01-01 00:00:00', 'late')",
             [(i,) for i in range(251, 260)])
    results(config, "a")
    d = assert_equal(config, "a")
    assert d.source_rows == 259


def test_null_cursor_rows_are_delivered_and_kept_current(sql, schema, dataset, make_config,
                                                         bq_env):
    make_orders(sql, schema, n=60)
    sql(f"UPDATE `{schema}`.orders SET updated_at = NULL WHERE id % 10 = 0")
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=25))})
    r = results(config, "a")["orders"]
    assert r.null_cursor_rows == 6
    assert_equal(config, "a")
    sql(f"UPDATE `{schema}`.orders SET note = 'edited' WHERE id = 20")  # cursor stays NULL
    results(config, "a")
    assert_equal(config, "a")


def test_row_committed_late_below_the_watermark_is_not_lost(sql, schema, dataset, make_config,
                                                            bq_env, mysql_server):
    from tests.helpers import Sql

    make_orders(sql, schema, n=20)
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=100))})
    results(config, "a")
    # a transaction stamps a row now, and commits only after the next run has passed
    late = Sql(mysql_server)
    late("SET autocommit = 0")
    late("START TRANSACTION")
    late(f"INSERT INTO `{schema}`.orders (id, updated_at, note) VALUES (500, NOW(6), 'late')")
    sql(f"UPDATE `{schema}`.orders SET note = 'after', updated_at = NOW(6) + INTERVAL 1 SECOND "
        "WHERE id = 1")
    import time
    time.sleep(1.5)
    r = results(config, "a")["orders"]
    # the open transaction held the upper bound back: row 1 (stamped after it started) waits
    assert "held_by_open_transaction_since" in r.bound, r.bound
    late("COMMIT")
    late.close()
    time.sleep(1.2)
    results(config, "a")
    d = assert_equal(config, "a")
    assert d.source_rows == 21


def test_source_clock_decides_not_the_runners(sql, schema, dataset, make_config, bq_env):
    """Rows stamped by the source in the cluster's zone are bounded by the source's clock."""
    make_orders(sql, schema, n=5)
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=100))},
                         timezone="Asia/Tokyo")
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table("orders"))
    upper, facts = source.upper_bound(plan)
    now_tokyo = sql("SELECT CONVERT_TZ(UTC_TIMESTAMP(6), '+00:00', '+09:00')")[0][0]
    assert abs((now_tokyo - upper).total_seconds()) < 5, (upper, now_tokyo, facts)


def test_shared_tables_never_mix_tenants(sql, schema, make_config, bq_env, bq_client):
    from tests.helpers import unique

    make_orders(sql, schema, n=300, shared_tenants=[3, 4, 5])
    ds3, ds4 = unique("hk_ds"), unique("hk_ds")
    extra = "  tenant_column: tenant_id\n  tenant_value: {v}\n"
    config = make_config({"t3": (schema, ds3, ORDERS.format(chunk=40), extra.format(v=3)),
                          "t4": (schema, ds4, ORDERS.format(chunk=40), extra.format(v=4))})
    try:
        results(config, "t3")
        results(config, "t4")
        for ds, tid in ((ds3, 3), (ds4, 4)):
            rows = list(bq_client.query(
                f"SELECT tenant_id, COUNT(*) AS n FROM `hakobu-test.{ds}.orders` "
                "GROUP BY tenant_id").result())
            assert [(r["tenant_id"], r["n"]) for r in rows] == [(tid, 100)]
        assert_equal(config, "t3")
        assert_equal(config, "t4")
    finally:
        for ds in (ds3, ds4):
            bq_client.delete_dataset(f"hakobu-test.{ds}", delete_contents=True,
                                     not_found_ok=True)


def test_bad_tables_are_refused_and_the_others_load(sql, schema, dataset, make_config, bq_env,
                                                    bq_client):
    make_orders(sql, schema, n=10)
    sql(f"CREATE TABLE `{schema}`.nokey (a INT, updated_at DATETIME, INDEX (updated_at))")
    sql(f"CREATE TABLE `{schema}`.noindex (id INT PRIMARY KEY, updated_at DATETIME)")
    tables = (ORDERS.format(chunk=100)
              + "- name: missing\n  cursor: updated_at\n"
              + "- name: nokey\n  cursor: updated_at\n"
              + "- name: noindex\n  cursor: updated_at\n"
              + "- name: orders\n  cursor: changed_at\n".replace("orders", "orders"))
    tables = tables.rsplit("- name: orders\n  cursor: changed_at\n", 1)[0]
    config = make_config({"a": (schema, dataset, tables)})
    r = results(config, "a")
    assert r["orders"].ok
    assert "does not exist" in r["missing"].error and "a/missing" in r["missing"].error
    assert "no primary key" in r["nokey"].error and "without_primary_key" in r["nokey"].error
    assert "no index starts with (updated_at)" in r["noindex"].error
    assert "CREATE INDEX" in r["noindex"].error
    names = {t.table_id for t in bq_client.list_tables(f"hakobu-test.{dataset}")}
    assert "orders" in names and not names & {"missing", "nokey", "noindex"}


def test_unknown_column_is_refused_before_anything_is_written(sql, schema, dataset, make_config,
                                                              bq_env, bq_client):
    make_orders(sql, schema, n=10)
    config = make_config({"a": (schema, dataset, "- name: orders\n  cursor: changed_at\n")})
    [r] = sync_tenant(config, "a")
    assert not r.ok and "cursor column 'changed_at' does not exist" in r.error
    from google.api_core.exceptions import NotFound
    with pytest.raises(NotFound):
        bq_client.get_dataset(f"hakobu-test.{dataset}")


class Crash(BaseException):
    """Simulates the process dying: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("phase", ["initial", "incremental"])
@pytest.mark.parametrize("point", ["after_chunk", "after_stage", "before_merge", "after_merge",
                                   "before_watermark"])
def test_crash_at_any_point_then_rerun_is_exact(sql, schema, dataset, make_config, bq_env, point,
                                                phase, monkeypatch):
    import hakobu.table as hs
    make_orders(sql, schema, n=400)
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=60))})
    monkeypatch.setattr(hs, "MERGE_EVERY_ROWS", 120)
    if phase == "incremental":
        assert results(config, "a")["orders"].ok
        sql(f"UPDATE `{schema}`.orders SET note = CONCAT('v2 ', id), "
            "updated_at = NOW(6) - INTERVAL 2 SECOND")   # every row changes: several merges
    calls = {"n": 0}
    # the initial load moves its watermark once, at the end; an incremental run after each merge
    crash_at = 1 if (point == "before_watermark" and phase == "initial") else 2

    def boom(**info):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Crash(point)

    with pytest.raises(Crash):
        sync_tenant(config, "a", hooks=Hooks(**{point: boom}))
    sql(f"UPDATE `{schema}`.orders SET note = 'moved', updated_at = NOW(6) - INTERVAL 1 SECOND "
        "WHERE id IN (1, 399)")
    r = settled(config, "a")
    assert r.ok, r.error
    d = assert_equal(config, "a")
    assert d.dest_rows == 400 and d.duplicates == 0


def settled(config, tenant, table="orders"):
    """Rerun until a run's bound was not held back by an open transaction: the MariaDB is
    shared by the test workers, and another test's open transaction rightly defers rows
    changed after its start to the next run (resources/mysql_bound.py)."""
    for _ in range(20):
        r = results(config, tenant)[table]
        if not r.ok or "held_by_open_transaction_since" not in r.bound:
            return r
        time.sleep(0.5)
    return r


def test_unreachable_server_is_one_clear_line(tmp_path, monkeypatch, bq_env):
    from hakobu.config import load_config
    from hakobu.localenv.emulator import free_port
    from tests.helpers import tenant_body, write_config

    class Down:
        host, port, user = "127.0.0.1", free_port(), "root"

    root = write_config(tmp_path, Down, {"a": tenant_body("s", "d", ORDERS.format(chunk=10))})
    with pytest.raises(HakobuError) as exc:
        sync_tenant(load_config(root), "a")
    text = str(exc.value)
    assert f"127.0.0.1:{Down.port}" in text and "studio" not in text
    assert "\n" not in text.strip() or len(text) < 600


def test_initial_load_in_parallel_pk_ranges(sql, schema, dataset, make_config, bq_env,
                                            monkeypatch):
    """A big table's first load is read over several primary-key ranges at once (in pk order,
    not through the cursor index); the watermark is the largest key read, so the next run
    reads only what changed."""
    import resources.mysql_chunks as ms

    monkeypatch.setattr(ms, "SPLIT_MIN_ROWS", 100)
    make_orders(sql, schema, n=900)
    sql(f"UPDATE `{schema}`.orders SET updated_at = NULL WHERE id IN (5, 6)")
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=50))},
                         cluster_extra="read_budget:\n  max_connections: 3\n")
    r = results(config, "a")["orders"]
    assert r.ok, r.error
    assert r.mode == "initial" and r.splits == 3 and r.null_cursor_rows == 2
    assert r.rows_read == 900
    assert r.watermark.startswith("2026-01-01 05:00:00")      # id 900: base + 300 minutes
    assert_equal(config, "a")
    sql(f"UPDATE `{schema}`.orders SET note = 'x', updated_at = NOW(6) - INTERVAL 1 SECOND "
        "WHERE id = 450")
    r = results(config, "a")["orders"]
    assert r.mode == "incremental" and r.rows_read == 1 + 2      # the change + the NULL rows
    assert_equal(config, "a")


def test_nightly_run_removes_hard_deleted_rows(sql, schema, dataset, make_config, bq_env):
    make_orders(sql, schema, n=600)
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=100))})
    results(config, "a")
    sql(f"DELETE FROM `{schema}`.orders WHERE id IN (7, 8, 300) OR id BETWEEN 500 AND 520")
    r = results(config, "a")["orders"]
    assert r.ok, r.error
    assert r.extra["deletes_rows_deleted"] == 24 and r.extra["checksum_buckets_differing"] >= 1
    d = assert_equal(config, "a")
    assert d.dest_rows == 576
    assert results(config, "a")["orders"].extra["checksum_buckets_differing"] == 0


def test_an_open_read_only_transaction_does_not_hold_the_bound(sql, schema, dataset, make_config,
                                                              bq_env, mysql_server):
    from tests.helpers import Sql

    make_orders(sql, schema, n=5)
    config = make_config({"a": (schema, dataset, ORDERS.format(chunk=100))})
    reader = Sql(mysql_server)
    reader("SET autocommit = 0")
    reader("START TRANSACTION")
    reader(f"SELECT COUNT(*) FROM `{schema}`.orders")      # a report's consistent read
    try:
        r = results(config, "a")["orders"]
        assert "held_by_open_transaction_since" not in r.bound, r.bound
    finally:
        reader("COMMIT")
        reader.close()
