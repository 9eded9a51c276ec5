"""Backfill a tenant: shadow tables, reconcile, atomic swap, watermark by compare-and-set; a
failed backfill changes nothing; the fix for an incompatible type change; sharing the cluster
with another tenant's nightly run. Real MariaDB + emulator, `hk_wh_` schemas and datasets."""

import threading
import time

import dagster as dg
import pytest

from hakobu.backfill import ReconcileError

from tests.live import backfill_tenant
from hakobu.cli import main
from hakobu.errors import LoadError
from hakobu.reconcile import diff_table
from hakobu.sinks import Sink
from hakobu.results import Hooks
from hakobu.planning import plan_for
from tests.live import destination_for, source_for, sync_tenant
from resources.bigquery_client import BigQuerySettings
from resources.bigquery_dest import BigQueryDestination
from resources.mysql_source import MySQLSource
from tests.integration.conftest import make_orders
from tests.integration.test_warehouse import (  # noqa: F401  (fixtures shared with that file)
    KEY, KEY_ENV, bq_rows, datasets, warehouse_yaml, wh_config, wh_schema)

ORDERS = "- name: orders\n  cursor: updated_at\n  chunk_rows: {chunk}\n"


def ok(results):
    for r in results:
        assert r.ok, r.error
    return {r.table: r for r in results}


def equal(config, tenant_id, table="orders"):
    tenant = config.tenant(tenant_id)
    source = source_for(config, tenant)
    d = diff_table(source, destination_for(tenant, BigQuerySettings.from_env()),
                   plan_for(source, tenant, tenant.table(table)))
    assert d.equal, d.summary()
    return d


@pytest.fixture
def second_schema(sql):
    from tests.helpers import unique

    name = unique("hk_wh")
    sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    sql(f"DROP DATABASE IF EXISTS `{name}`")


def test_backfill_reloads_through_a_shadow_and_swaps_atomically(
        sql, wh_schema, second_schema, datasets, wh_config, bq_client, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    make_orders(sql, wh_schema, n=300)
    make_orders(sql, second_schema, n=50)
    da, db, wh = datasets(), datasets(), datasets()
    config = wh_config({"a": (wh_schema, da, ORDERS.format(chunk=70)),
                        "b": (second_schema, db, ORDERS.format(chunk=70))}, warehouse_yaml(wh))
    ok(sync_tenant(config, "a"))
    ok(sync_tenant(config, "b"))
    dest = destination_for(config.tenant("a"), BigQuerySettings.from_env())
    before = dest.read_watermark("orders")
    # a delete (invisible to incremental runs) and an update the backfill must pick up
    sql(f"DELETE FROM `{wh_schema}`.orders WHERE id = 5")
    sql(f"UPDATE `{wh_schema}`.orders SET note = 'edited' WHERE id = 6")   # cursor unchanged
    statements: list[str] = []
    orig_sql = BigQueryDestination.sql

    def spy(self, query, params=(), table=None):
        statements.append(query)
        return orig_sql(self, query, params, table)
    monkeypatch.setattr(BigQueryDestination, "sql", spy)
    reads: list[str] = []
    orig_read = MySQLSource.stream
    monkeypatch.setattr(MySQLSource, "stream",
                        lambda self, plan, q, n=50_000: reads.append(q) or orig_read(self, plan,
                                                                                     q, n))
    seen_during: dict = {}

    def before_swap(table, **_):      # the customer still sees the old, complete table
        seen_during["rows"] = dest.count("orders")
        seen_during["shadow"] = dest.count("_hakobu_shadow_orders")
    progress = []
    r = ok(backfill_tenant(config, "a", hooks=Hooks(before_swap=before_swap),
                           on_progress=lambda p: progress.append((p.done, p.total,
                                                                  p.finished))))["orders"]
    assert seen_during == {"rows": 300, "shadow": 299}
    # the whole table in primary-key order (sequential on the clustered index), then NULL and
    # zero-date cursors through the cursor index
    # queries of 3 chunks (HAKOBU_QUERY_CHUNKS in conftest): 299 rows = 210 + 89
    assert sum("FORCE INDEX (PRIMARY)" in q for q in reads) == 2
    assert len(reads) == 2 + 2
    assert r.mode == "backfill" and r.rows_read == 299 and r.warehouse == "ok"
    assert r.extra["customer_shadow_rows"] == 299 and r.extra["warehouse_shadow_rows"] == 299
    d = equal(config, "a")
    assert d.dest_rows == 299
    after = dest.read_watermark("orders")
    assert after.version == before.version + 1 and after.key == before.key
    [swap] = [s for s in statements if s.startswith("CREATE OR REPLACE TABLE")
              and "_hakobu_stg_" not in s]                       # not a staging table
    assert "CLUSTER BY `id`" in swap and "_hakobu_shadow_orders" in swap
    names = {t.table_id for t in bq_client.list_tables(f"hakobu-test.{da}")}
    assert not any(n.startswith("_hakobu_shadow") for n in names)
    # progress: rows done rise to the total; the estimate is there from the start
    assert progress[-1][2] and progress[-1][0] == 299 and progress[0][1] is not None
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    # warehouse: a's slice reloaded (id 5 gone), b's untouched
    slices = bq_rows(bq_client, f"SELECT tenant_id, COUNT(*) AS n FROM `hakobu-test.{wh}.orders` "
                                "GROUP BY tenant_id ORDER BY tenant_id")
    assert slices == [{"tenant_id": "a", "n": 299}, {"tenant_id": "b", "n": 50}]
    # and the next nightly continues from the backfill's watermark: nothing to read
    assert ok(sync_tenant(config, "a"))["orders"].rows_read == 0


def test_a_failed_backfill_leaves_the_old_data_and_watermark(sql, wh_schema, datasets,
                                                             wh_config, bq_client, monkeypatch):
    make_orders(sql, wh_schema, n=200)
    da = datasets()
    config = wh_config({"a": (wh_schema, da, ORDERS.format(chunk=50))}, None)
    ok(sync_tenant(config, "a"))
    dest = destination_for(config.tenant("a"), BigQuerySettings.from_env())
    before = dest.read_watermark("orders")
    sql(f"UPDATE `{wh_schema}`.orders SET note = 'new' WHERE id <= 10")

    class Boom(Exception):
        pass

    def boom(rows, **_):
        if rows >= 100:
            raise Boom("source went away")
    # an unexpected error fails the table (its result), never the tenant's whole run
    [r] = backfill_tenant(config, "a", hooks=Hooks(after_chunk=boom))
    assert not r.ok and "unexpected Boom in table 'orders'" in r.error
    # reconcile failure: the shadow lacks a row
    monkeypatch.setattr(Sink, "count_shadow", lambda self: self.dest.count(self.shadow) - 1)
    [r] = backfill_tenant(config, "a")
    assert not r.ok and "shadow holds 199 rows, the source read gave 200" in r.error
    rows = bq_rows(bq_client, f"SELECT COUNT(*) AS n, COUNTIF(note = 'new') AS new "
                              f"FROM `hakobu-test.{da}.orders`")
    assert rows == [{"n": 200, "new": 0}]
    assert dest.read_watermark("orders") == before
    names = {t.table_id for t in bq_client.list_tables(f"hakobu-test.{da}")}
    assert not any(n.startswith("_hakobu_shadow") for n in names)
    assert issubclass(ReconcileError, LoadError)


def test_backfill_is_the_fix_for_an_incompatible_type_change(sql, wh_schema, datasets, wh_config,
                                                             bq_client, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    make_orders(sql, wh_schema, n=120)
    da = datasets()
    config = wh_config({"a": (wh_schema, da, ORDERS.format(chunk=50))}, None)
    ok(sync_tenant(config, "a"))
    sql(f"ALTER TABLE `{wh_schema}`.orders MODIFY amount VARCHAR(20)")
    [r] = sync_tenant(config, "a")
    assert not r.ok and "`hakobu backfill a --tables orders`" in r.error
    assert main(["backfill", "a", "--tables", "orders", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "a/orders: 120 / ~" in out.err and "rows/s, done" in out.err
    assert "orders" in out.out and "120" in out.out
    types = {f.name: f.field_type for f in bq_client.get_table(f"hakobu-test.{da}.orders").schema}
    assert types["amount"] == "STRING"
    sql(f"UPDATE `{wh_schema}`.orders SET amount = 'n/a', updated_at = '2026-06-01 00:00:00' "
        "WHERE id = 1")
    r = ok(sync_tenant(config, "a"))["orders"]
    assert r.rows_read == 1, r.bound
    equal(config, "a")
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.job_name == "backfill"
        assert run.run_config["ops"]["customer_tables"]["config"] == {"mode": "full_reload"}
        assert run.tags["dagster/partition"] == "a"
        ev = instance.get_latest_materialization_event(dg.AssetKey(["customer", "orders"]))
        assert ev.asset_materialization.metadata["mode"].value == "backfill"


def test_backfill_shares_the_cluster_with_another_tenants_nightly(
        sql, wh_schema, second_schema, datasets, wh_config, monkeypatch, capsys):
    """A backfill of `big` while `small`'s nightly runs on the same cluster: the backfill never
    holds more than half the read slots, the nightly's chunks are read while it runs, both finish
    exact. Prints rows/s of each (pytest -s)."""
    make_orders(sql, wh_schema, n=6000)
    make_orders(sql, second_schema, n=3000)
    dbig, dsmall = datasets(), datasets()
    config = wh_config({"big": (wh_schema, dbig, ORDERS.format(chunk=500)),
                        "small": (second_schema, dsmall, ORDERS.format(chunk=500))}, None)
    ok(sync_tenant(config, "big"))
    active = {"big": 0, "small": 0}
    peak = {"big": 0, "small": 0}
    log: list[tuple[float, str]] = []
    lock = threading.Lock()
    orig = MySQLSource.stream

    def stream(self, plan, q, n=50_000):     # a query is active until its last row is taken
        with lock:
            active[plan.tenant] += 1
            peak[plan.tenant] = max(peak[plan.tenant], active[plan.tenant])
            log.append((time.monotonic(), plan.tenant))
        try:
            yield from orig(self, plan, q, n)
        finally:
            with lock:
                active[plan.tenant] -= 1
    monkeypatch.setattr(MySQLSource, "stream", stream)
    out: dict = {}

    def run(name, fn):
        t0 = time.monotonic()
        out[name] = (fn(), t0, time.monotonic())
    bf = threading.Thread(target=run, args=("big", lambda: backfill_tenant(config, "big")))
    bf.start()
    while not any(t == "big" for _, t in log):
        time.sleep(0.01)
    run("small", lambda: sync_tenant(config, "small"))
    bf.join()
    (rb,), b0, b1 = out["big"]
    (rs,), s0, s1 = out["small"]
    assert rb.ok and rs.ok, (rb.error, rs.error)
    assert peak["big"] == 1                     # half of max_connections=2
    during = [t for ts, t in log if t == "small" and b0 <= ts <= b1]
    assert during, "the nightly read nothing while the backfill ran"
    equal(config, "big")
    equal(config, "small")
    with capsys.disabled():
        print(f"\nbackfill big: {rb.rows_read} rows in {b1 - b0:.1f}s = "
              f"{rb.rows_read / (b1 - b0):,.0f} rows/s; nightly small (during it): "
              f"{rs.rows_read} rows in {s1 - s0:.1f}s = {rs.rows_read / (s1 - s0):,.0f} rows/s; "
              f"chunk reads of small during the backfill: {len(during)}")
