"""Hard deletes without binlog: bucket checksums find them, repair touches only those buckets.

Against the real MariaDB and the BigQuery emulator, in schemas `hakobu_cks_*` and datasets
`hk_cks_*` of our own.
"""

import time

import pytest

from hakobu.checksums import (Bucketing, choose_bucketing, compare_table, diff_buckets,
                              repair_deletes)
from hakobu.errors import LoadError
from hakobu.planning import plan_for
from hakobu.reconcile import diff_table
from resources.bigquery_client import BigQuerySettings
from resources.bigquery_dest import BigQueryDestination
from resources.mysql_checks import range_index, source_aggregate_sql, source_keys_sql
from tests.helpers import dataset_factory, fresh_schema
from tests.integration.conftest import make_orders
from tests.live import destination_for, source_for, sync_tenant

ORDERS = "- name: orders\n  cursor: updated_at\n  chunk_rows: 1000\n"
SHARED = "  tenant_column: tenant_id\n  tenant_value: {v}\n"


@pytest.fixture(autouse=True)
def _sync_does_not_reconcile(monkeypatch):
    """These tests drive compare/repair themselves; the nightly sync's own reconcile (which
    would repair the deletes first) is tested in test_sync.py."""
    import hakobu.table_checks as hs

    monkeypatch.setattr(hs, "RECONCILE", False)


@pytest.fixture
def cks_schema(sql):
    yield from fresh_schema(sql, "hakobu_cks")


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_cks")


def deliver(config, tenant_id, table="orders"):
    """Run the sync, then return (source, dest, plan) for the table."""
    [r] = sync_tenant(config, tenant_id, tables=[table])
    assert r.ok, r.error
    tenant = config.tenant(tenant_id)
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table(table))
    return source, destination_for(tenant, BigQuerySettings.from_env()), plan


def assert_equal(source, dest, plan):
    d = diff_table(source, dest, plan)
    assert d.equal, d.summary()
    return d


def test_pure_bucketing_and_diff():
    b = Bucketing("int", column="id", shift=8)
    assert b.bounds(0) == (0, 255) and b.bounds(-1) == (-256, -1) and b.bounds(4) == (1024, 1279)
    # MariaDB BIT_XOR is unsigned, BigQuery's signed: equal modulo 2^64
    src = {0: (3, 6, (1 << 64) - 5), 1: (1, 300, 300)}
    dst = {0: (3, 6, (1 << 64) - 5), 1: (2, 601, 301), 7: (1, 1800, 1800)}
    assert [(d.bucket, d.source_rows, d.dest_rows) for d in diff_buckets(b, src, dst)] == \
        [(1, 1, 2), (7, 0, 1)]


def test_deletes_are_found_and_repaired_touching_only_differing_buckets(
        sql, cks_schema, datasets, make_config, bq_env):
    make_orders(sql, cks_schema, n=3000)
    config = make_config({"a": (cks_schema, datasets(), ORDERS)})
    source, dest, plan = deliver(config, "a")
    cmp = compare_table(source, dest, plan, bucket_rows=200)
    assert cmp.equal, cmp.summary()
    assert cmp.bucketing.mode == "int" and cmp.bucketing.shift == 8      # 256 keys per bucket
    assert cmp.source_rows == cmp.dest_rows == 3000 and cmp.buckets_total == 12

    deleted = [5] + [700, 1301, 1302, 2222] + list(range(1024, 1280)) + [3000]
    sql(f"DELETE FROM `{cks_schema}`.orders WHERE id IN ({', '.join(map(str, deleted))})")
    # rows lost on the way (deleted in BigQuery only): found and re-merged by the same repair
    dest.sql(f"DELETE FROM {dest.ref('orders')} WHERE id IN (1500, 1501, 1502)")
    # the cursor cannot see deletes: an incremental run reads nothing
    source, dest, plan = deliver(config, "a")

    cmp = compare_table(source, dest, plan, bucket_rows=200)
    assert not cmp.equal
    assert {d.bucket for d in cmp.differing} == {0, 2, 4, 5, 8, 11}
    assert cmp.source_rows == 3000 - len(deleted) and cmp.dest_rows == 3000 - 3
    whole = next(d for d in cmp.differing if d.bucket == 4)
    assert (whole.lo, whole.hi, whole.source_rows, whole.dest_rows) == (1024, 1279, 0, 256)
    meta = cmp.metadata()
    assert meta["buckets_differing"] == 6 and meta["bigquery_rows"] == 2997

    rep = repair_deletes(source, dest, plan, cmp)
    assert rep.rows_deleted == len(deleted)
    assert rep.rows_missing == rep.rows_merged == 3
    assert rep.buckets_repaired == 6
    # only the keys of the six differing buckets were read, never the table
    assert rep.source_rows_read == sum(d.source_rows for d in cmp.differing) < 3000 / 2
    after = compare_table(source, dest, plan, bucket_rows=200)
    assert after.equal, after.summary()
    assert_equal(source, dest, plan)
    assert not [t.table_id for t in dest.client.list_tables(f"{dest.project}.{dest.dataset}")
                if t.table_id.startswith("_hakobu_stg_")]
    # nothing left to do: a second repair is a no-op
    assert repair_deletes(source, dest, plan, after).source_rows_read == 0


def test_shared_table_deletes_of_one_tenant(sql, cks_schema, datasets, make_config, bq_env):
    make_orders(sql, cks_schema, n=1200, shared_tenants=[3, 4])
    config = make_config({"t3": (cks_schema, datasets(), ORDERS, SHARED.format(v=3)),
                          "t4": (cks_schema, datasets(), ORDERS, SHARED.format(v=4))})
    s3, d3, p3 = deliver(config, "t3")
    s4, d4, p4 = deliver(config, "t4")
    # tenant 3 has the even ids, tenant 4 the odd ones; delete some of tenant 3's
    sql(f"DELETE FROM `{cks_schema}`.orders WHERE tenant_id = 3 AND id IN (2, 100, 102, 1200)")
    c4 = compare_table(s4, d4, p4, bucket_rows=100)
    assert c4.equal and c4.source_rows == 600
    c3 = compare_table(s3, d3, p3, bucket_rows=100)
    assert not c3.equal and c3.source_rows == 596 and c3.dest_rows == 600
    rep = repair_deletes(s3, d3, p3, c3)
    assert rep.rows_deleted == 4 and rep.rows_missing == 0
    assert rep.source_rows_read == sum(d.source_rows for d in c3.differing) < 300
    assert compare_table(s3, d3, p3, bucket_rows=100).equal
    assert_equal(s3, d3, p3)
    assert_equal(s4, d4, p4)
    # a misconfiguration (tenant 4's rows compared with tenant 3's dataset): the counts look
    # alike, every key differs; the repair refuses instead of emptying the dataset
    wrong = compare_table(s4, d3, p4, bucket_rows=100)
    assert not wrong.equal
    with pytest.raises(LoadError, match="refusing to delete"):
        repair_deletes(s4, d3, p4, wrong)
    assert d3.count("orders") == 596

    # a table shared by tenants (as the warehouse's): the destination's `scope` picks the slice
    class Slice(BigQueryDestination):
        scope = "T.`tenant_id` = 3"

    d3.sql(f"CREATE TABLE {d3.ref('shared')} AS SELECT * FROM {d3.ref('orders')} "
           f"UNION ALL SELECT * FROM {d4.ref('orders')}")
    wh = Slice(d3.settings, d3.project, d3.dataset, d3.location, d3.work_dir, client=d3.client)
    assert compare_table(s3, wh, p3, table="shared", bucket_rows=100).equal
    sql(f"DELETE FROM `{cks_schema}`.orders WHERE id = 4")
    cmp = compare_table(s3, wh, p3, table="shared", bucket_rows=100)
    assert (cmp.source_rows, cmp.dest_rows, cmp.table) == (595, 596, "shared")
    assert repair_deletes(s3, wh, p3, cmp, merge_missing=False).rows_deleted == 1
    counts = d3.rows(f"SELECT tenant_id, COUNT(*) AS n FROM {d3.ref('shared')} "
                     "GROUP BY tenant_id ORDER BY tenant_id")
    assert [(r["tenant_id"], r["n"]) for r in counts] == [(3, 595), (4, 600)]


KEYS = """\
- name: lines
  cursor: updated_at
  chunk_rows: 70   # several keyset chunks per repaired range
- name: codes
  cursor: updated_at
  chunk_rows: 1000
- name: wide
  cursor: updated_at
  chunk_rows: 1000
- name: neg
  cursor: updated_at
  chunk_rows: 1000
- name: events
  cursor: updated_at
  chunk_rows: 1000
- name: nokey
  without_primary_key: replace
"""


def test_composite_string_and_extreme_integer_keys(sql, cks_schema, datasets, make_config,
                                                   bq_env):
    s = cks_schema
    # composite (order_id, line_no): range buckets on order_id, hash checksum of the whole key
    sql(f"CREATE TABLE `{s}`.lines (order_id INT NOT NULL, line_no SMALLINT NOT NULL, "
        "updated_at DATETIME(6) NOT NULL, PRIMARY KEY (order_id, line_no), INDEX (updated_at))")
    sql(f"INSERT INTO `{s}`.lines SELECT seq DIV 4, seq MOD 4, '2026-01-01' "
        f"FROM `{s}`.seq_0_to_1999")
    # string keys under a case-insensitive collation, emoji, separators: hash buckets
    sql(f"CREATE TABLE `{s}`.codes (code VARCHAR(40) NOT NULL PRIMARY KEY, "
        "updated_at DATETIME(6) NOT NULL, INDEX (updated_at)) COLLATE utf8mb4_general_ci")
    codes = ["a", "B", "c:d", "c", ":d", "🍣", "ｱ", "Zebra", "zz top"] + \
        [f"k{i:04d}" for i in range(600)]
    sql.many(f"INSERT INTO `{s}`.codes VALUES (%s, '2026-01-01')", [(c,) for c in codes])
    # BIGINT UNSIGNED up to 2^64-1, and signed keys from -2^63 to 2^63-1: integer buckets
    top = (1 << 64) - 1
    sql(f"CREATE TABLE `{s}`.wide (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, "
        "updated_at DATETIME(6) NOT NULL, INDEX (updated_at))")
    wide = [top - i * 7919 for i in range(300)] + [(1 << 63) + i for i in range(-150, 150)] + \
        list(range(1, 301))
    sql.many(f"INSERT INTO `{s}`.wide VALUES (%s, '2026-01-01')", [(v,) for v in wide])
    sql(f"CREATE TABLE `{s}`.neg (id BIGINT NOT NULL PRIMARY KEY, "
        "updated_at DATETIME(6) NOT NULL, INDEX (updated_at))")
    neg = [-(1 << 63) + i for i in range(100)] + list(range(-200, 200)) + \
        [(1 << 63) - 1 - i for i in range(100)]
    sql.many(f"INSERT INTO `{s}`.neg VALUES (%s, '2026-01-01')", [(v,) for v in neg])
    # binary, fractional DATETIME and DATE key parts: the canonical text both engines hash
    sql(f"CREATE TABLE `{s}`.events (device VARBINARY(8) NOT NULL, at DATETIME(3) NOT NULL, "
        "day DATE NOT NULL, updated_at DATETIME(6) NOT NULL, PRIMARY KEY (device, at, day), "
        "INDEX (updated_at))")
    sql(f"INSERT INTO `{s}`.events SELECT UNHEX(LPAD(HEX(seq MOD 7), 4, '0')), "
        "'2026-03-01 10:00:00.125' + INTERVAL seq SECOND, '2026-03-01' + INTERVAL (seq MOD 3) "
        f"DAY, '2026-01-01' FROM `{s}`.seq_1_to_300")
    # no primary key (full replace every run): row counts only, nothing to repair
    sql(f"CREATE TABLE `{s}`.nokey (a INT, b VARCHAR(8))")
    sql(f"INSERT INTO `{s}`.nokey VALUES (1, 'x'), (1, 'x'), (2, NULL)")
    config = make_config({"a": (s, datasets(), KEYS)})
    [r.ok or pytest.fail(r.error) for r in sync_tenant(config, "a")]
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    dest = destination_for(tenant, BigQuerySettings.from_env())
    plans = {t: plan_for(source, tenant, tenant.table(t))
             for t in ("lines", "codes", "wide", "neg", "events")}
    modes = {}
    for t, plan in plans.items():
        cmp = compare_table(source, dest, plan, bucket_rows=50)
        assert cmp.equal, (t, cmp.summary(), cmp.differing[:5])
        modes[t] = cmp.bucketing.mode
    assert modes == {"lines": "prefix", "codes": "hash", "wide": "int", "neg": "int",
                     "events": "hash"}
    nokey = plan_for(source, tenant, tenant.table("nokey"))
    cmp = compare_table(source, dest, nokey)
    assert cmp.equal and cmp.bucketing.mode == "count" and cmp.source_rows == 3
    sql(f"DELETE FROM `{s}`.nokey WHERE a = 2")
    cmp = compare_table(source, dest, nokey)
    assert not cmp.equal and (cmp.source_rows, cmp.dest_rows) == (2, 3)
    assert repair_deletes(source, dest, nokey, cmp).rows_deleted == 0   # the next run replaces

    sql(f"DELETE FROM `{s}`.lines WHERE (order_id = 7 AND line_no = 2) OR order_id = 300")
    sql(f"DELETE FROM `{s}`.codes WHERE code IN ('B', 'c:d', '🍣', 'k0042')")
    sql(f"DELETE FROM `{s}`.wide WHERE id IN ({top}, {1 << 63}, {(1 << 63) - 1}, 17)")
    sql(f"DELETE FROM `{s}`.neg WHERE id IN ({-(1 << 63)}, -1, 0, {(1 << 63) - 1})")
    sql(f"DELETE FROM `{s}`.events WHERE at IN ('2026-03-01 10:00:07.125', "
        "'2026-03-01 10:04:00.125')")
    expect = {"lines": 5, "codes": 4, "wide": 4, "neg": 4, "events": 2}
    for t, plan in plans.items():
        cmp = compare_table(source, dest, plan, bucket_rows=50)
        assert not cmp.equal, t
        rep = repair_deletes(source, dest, plan, cmp)
        assert rep.rows_deleted == expect[t] and rep.rows_missing == 0, (t, rep)
        # only the differing buckets' keys come back; range buckets also read only those
        # ranges, hash buckets find theirs in one pass over the covering index
        assert rep.source_rows_read == sum(d.source_rows for d in cmp.differing), t
        assert rep.source_index_passes == (1 if modes[t] == "hash" else 0), t
        assert compare_table(source, dest, plan, bucket_rows=50).equal, t
        assert_equal(source, dest, plan)


def explain(sql, query):
    return [{"type": r[3], "key": r[5], "extra": r[9] or ""} for r in sql("EXPLAIN " + query)]


def test_source_aggregate_reads_an_index_only(sql, cks_schema, mysql_server):
    from hakobu.config import Cluster, Tenant
    from resources.mysql_source import MySQLSource

    make_orders(sql, cks_schema, n=2000, shared_tenants=[3, 4, 5])
    sql(f"CREATE TABLE `{cks_schema}`.codes (code VARCHAR(40) PRIMARY KEY, note TEXT, "
        "updated_at DATETIME NOT NULL, INDEX ix_cur (updated_at))")
    sql.many(f"INSERT INTO `{cks_schema}`.codes VALUES (%s, 'x', '2026-01-01')",
             [(f"c{i}",) for i in range(500)])
    sql(f"CREATE TABLE `{cks_schema}`.plain (id BIGINT PRIMARY KEY, note TEXT, "
        "updated_at DATETIME NOT NULL, INDEX ix_cur (updated_at))")
    sql(f"INSERT INTO `{cks_schema}`.plain SELECT seq, 'x', '2026-01-01' "
        f"FROM `{cks_schema}`.seq_1_to_2000")
    sql(f"ANALYZE TABLE `{cks_schema}`.orders, `{cks_schema}`.codes, `{cks_schema}`.plain")
    source = MySQLSource(Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                                 user=mysql_server.user))

    def plan(table, shared):
        src = {"schema": cks_schema}
        if shared:
            src.update(tenant_column="tenant_id", tenant_value=4)
        t = Tenant(tenant="t", cluster="main", source=src,
                   destination={"project": "hakobu-test", "dataset": "x"},
                   schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                   tables=[{"name": table, "cursor": "updated_at"}])
        return plan_for(source, t, t.tables[0])

    cases = {"int, shared table": (plan("orders", True), dict(rows=667, lo=1, hi=1999)),
             "int, whole table": (plan("plain", False), dict(rows=2000, lo=1, hi=2000)),
             "hash, string key": (plan("codes", False), dict(rows=500))}
    for name, (p, stats) in cases.items():
        b = choose_bucketing(p, bucket_rows=100, **stats)
        q = source_aggregate_sql(p, b)
        [row] = explain(sql, q)
        assert row["key"] == "ix_cur", (name, row, q)       # the secondary index, not the table
        assert "Using index" in row["extra"], (name, row)
        assert "filesort" not in row["extra"].lower(), (name, row)
        if "shared" in name:
            assert row["type"] == "ref" and "tenant_id" in q, (name, row)
        if b.mode == "int":
            # the repair's key read of one bucket: a primary-key range scan, in key order
            lo, hi = b.bounds(3)
            q = source_keys_sql(p, b, (lo, hi), (lo + 5,), range_index(source, p, b), 50)
            [row] = explain(sql, q)
            assert row["type"] == "range" and row["key"] == "PRIMARY", (name, row, q)
            assert "filesort" not in row["extra"].lower(), (name, row)
    source.dispose()


def test_asset_check_passes_then_fails_with_metadata(sql, cks_schema, datasets, make_config,
                                                     bq_env):
    """The nightly step reports in_sync_with_source from the sync's own comparison; a check-only
    run (from the UI) evaluates it alone — and catches what an incremental run cannot see."""
    import dagster as dg

    from assets.checks import CHECK_NAME
    from assets.customer import customer_key
    from assets.deadlines import CHECK_NAME as DEADLINE
    from pipelines.build import build_definitions

    make_orders(sql, cks_schema, n=300)
    # tenant b (never run here) lists a table tenant a does not have
    config = make_config({"a": (cks_schema, datasets(), ORDERS),
                          "b": (cks_schema + "_b", datasets(),
                                ORDERS + "- name: extra\n  cursor: updated_at\n")})
    base = build_definitions(config)
    customer = base.resolve_assets_def(customer_key("orders"))
    assert {k.asset_key for k in customer.check_keys} == {customer_key("orders"),
                                                          customer_key("extra")}
    nightly = base.resolve_job_def("nightly")

    # the nightly job of tenant a loads its tables and reports their checks: passed
    res = nightly.execute_in_process(partition_key="a", raise_on_error=False)
    assert res.success
    evals = {(e.asset_key, e.check_name): e for e in res.get_asset_check_evaluations()}
    ok = evals[(customer_key("orders"), CHECK_NAME)]
    assert ok.passed and ok.partition == "a"
    assert ok.metadata["source_rows"].value == ok.metadata["bigquery_rows"].value == 300
    assert evals[(customer_key("orders"), DEADLINE)].partition == "a"
    extra = evals[(customer_key("extra"), CHECK_NAME)]        # a does not deliver `extra`
    assert extra.passed and extra.metadata["delivered"].value is False
    # one step per tenant run: the checks ran inside the delivery step
    steps = {e.step_key for e in res.all_events if e.step_key}
    assert steps == {"customer_tables"}

    # a delete the incremental run cannot see: the check alone fails, with where and how much
    sql(f"DELETE FROM `{cks_schema}`.orders WHERE id IN (10, 11, 250)")
    only_check = dg.AssetSelection.checks(dg.AssetCheckKey(customer_key("orders"), CHECK_NAME))
    job = dg.define_asset_job("check_orders", selection=only_check,
                              partitions_def=customer.partitions_def)
    res = dg.Definitions(assets=[customer], jobs=[job]) \
        .resolve_job_def("check_orders").execute_in_process(
            # Dagster 1.13's execute_in_process refuses partition_key= when a run selects only
            # checks ("no PartitionsDefinition shared by all the provided assets"); the
            # dagster/partition run tag is how a run carries its partition
            tags={"dagster/partition": "a"}, raise_on_error=False)
    assert not res.get_asset_materialization_events()       # nothing was loaded
    [bad] = res.get_asset_check_evaluations()
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in bad.metadata.items()}
    assert meta["source_rows"] == 297 and meta["bigquery_rows"] == 300
    assert meta["buckets_differing"] >= 1 and meta["rows_extra_at_least"] == 3
    assert meta["tenant"] == "a"


@pytest.mark.slow
def test_million_rows_repair_reads_only_the_differing_buckets(sql, cks_schema, datasets,
                                                              make_config, bq_env, capsys):
    """≥1M rows: the comparison is one index scan + one BigQuery aggregate; the repair of three
    differing buckets reads ~3 buckets of keys, not the table."""
    n = 1_000_000
    t0 = time.monotonic()
    sql(f"CREATE TABLE `{cks_schema}`.orders (id BIGINT PRIMARY KEY, updated_at DATETIME(6) "
        "NOT NULL, note VARCHAR(32), INDEX ix_cur (updated_at))")
    sql(f"INSERT INTO `{cks_schema}`.orders SELECT seq, '2026-01-01' + INTERVAL (seq DIV 100) "
        f"SECOND, CONCAT('n', seq) FROM `{cks_schema}`.seq_1_to_{n}")
    config = make_config({"a": (cks_schema, datasets(), ORDERS)})
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table("orders"))
    dest = destination_for(tenant, BigQuerySettings.from_env())
    dest.ensure_dataset()
    dest.ensure_table("orders", list(plan.specs), list(plan.primary_key))
    # the initial copy is generated inside the emulator (as the pipeline would have left it)
    dest.sql(f"INSERT INTO {dest.ref('orders')} (id, updated_at, note, _hakobu_synced_at) "
             "SELECT id, DATETIME_ADD(DATETIME '2026-01-01', INTERVAL DIV(id, 100) SECOND), "
             "CONCAT('n', CAST(id AS STRING)), CURRENT_TIMESTAMP() "
             f"FROM UNNEST(GENERATE_ARRAY(1, {n})) AS id")
    setup_s = time.monotonic() - t0

    t0 = time.monotonic()
    cmp = compare_table(source, dest, plan)
    first_s = time.monotonic() - t0
    assert cmp.equal and cmp.source_rows == n, cmp.summary()
    width = 1 << cmp.bucketing.shift
    # delete rows in three buckets far apart: 1 row, 100 rows, a whole bucket
    b1, b2, b3 = 10, 120, 200
    sql(f"DELETE FROM `{cks_schema}`.orders WHERE id = {b1 * width + 7} "
        f"OR id BETWEEN {b2 * width} AND {b2 * width + 99} "
        f"OR id BETWEEN {b3 * width} AND {b3 * width + width - 1}")
    deleted = 1 + 100 + width
    t0 = time.monotonic()
    cmp = compare_table(source, dest, plan)
    compare_s = time.monotonic() - t0
    assert {d.bucket for d in cmp.differing} == {b1, b2, b3}
    t0 = time.monotonic()
    rep = repair_deletes(source, dest, plan, cmp)
    repair_s = time.monotonic() - t0
    assert rep.rows_deleted == deleted and rep.buckets_repaired == 3
    assert rep.source_rows_read == 2 * width - 101     # the two partly deleted buckets' keys
    assert rep.source_rows_read < n / 100
    t0 = time.monotonic()
    after = compare_table(source, dest, plan)
    verify_s = time.monotonic() - t0
    assert after.equal and after.source_rows == after.dest_rows == n - deleted
    with capsys.disabled():
        print(f"\n[deletes, {n} rows] setup {setup_s:.1f}s; {cmp.buckets_total} buckets of "
              f"{width} keys; compare (equal) {first_s:.2f}s; after deleting {deleted} rows in 3 "
              f"buckets: compare {compare_s:.2f}s (source {cmp.source_seconds:.2f}s, BigQuery "
              f"{cmp.dest_seconds:.2f}s), {cmp.buckets_differing} differing; repair "
              f"{repair_s:.2f}s: read {rep.source_rows_read} source keys in "
              f"{rep.source_queries} queries ({rep.source_rows_read / n:.2%} of the table), "
              f"deleted {rep.rows_deleted}; verify {verify_s:.2f}s")
