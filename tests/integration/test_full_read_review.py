"""Review of the full reads of small cursor tables (full_read_below_kib): what breaks.

Each test is one finding; it fails against the change as committed and passes once fixed.
Schemas and datasets are prefixed `hk_rv4`.
"""

import pytest

from hakobu.config import Tenant
from hakobu.planning import plan_for
from resources.mysql_source import MySQLSource
from resources.mysql_sql import chunk_sql
from tests.helpers import dataset_factory, fresh_schema
from tests.integration.test_full_read import (TABLE, config, customer_rows, diff, make_members,
                                              warehouse_rows)
from tests.live import live_io, sync_tenant

@pytest.fixture
def rv_schema(sql):
    yield from fresh_schema(sql, "hk_rv4")


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_rv4")


def _limit(kib: str | None) -> str:
    return TABLE.format(extra=f"  full_read_below_kib: {kib}\n" if kib is not None else "")


def test_growing_out_of_full_reads_delivers_the_deletes_made_meanwhile(
        sql, rv_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    """A table first seen small is read whole: no watermark is ever written. When it grows
    past the limit, its first incremental night is a first load ("initial"), which merges
    without deleting and runs no key check: the rows deleted since the last whole read stay
    in the customer's table and in the warehouse (until the next night's key check)."""
    make_members(sql, rv_schema, 120)
    ds, wh = datasets(), datasets()

    def cfg(kib):
        return config(tmp_path, mysql_server, monkeypatch, {"a": (rv_schema, ds, _limit(kib))}, wh)

    [r] = sync_tenant(cfg(None), "a")
    assert r.ok and r.mode == "full", r.error
    sql(f"DELETE FROM `{rv_schema}`.members WHERE id IN (7, 8)")
    c = cfg("1")                       # the table "grew" past its limit: incremental from now on
    [r] = sync_tenant(c, "a", verify=True)
    assert r.ok, r.error
    d = diff(c, "a")
    assert d.equal, (r.mode, d.summary())
    assert warehouse_rows(bq_client, wh) == customer_rows(bq_client, ds, "a")


def test_merge_step_checks_a_slice_in_the_mode_it_was_read(
        sql, rv_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    """The scheduled merge step (no `modes`) re-plans each table to decide whether the slice
    gets its key check (hakobu.warehouse_merge._check): a slice read incrementally — whose
    deletes only that check applies to the warehouse — is taken for a full read when the plan
    says "full" by the time the step runs (the limit changed, e.g. on upgrading to this
    version, or the stats moved), and its deletes are never applied that night."""
    from hakobu.warehouse_merge import merge_warehouse_tables

    make_members(sql, rv_schema, 150)
    ds, wh = datasets(), datasets()

    def cfg(kib):
        return config(tmp_path, mysql_server, monkeypatch, {"a": (rv_schema, ds, _limit(kib))}, wh)

    [r] = sync_tenant(cfg("1"), "a")
    assert r.ok and r.mode == "initial", r.error
    sql(f"UPDATE `{rv_schema}`.members SET amount = 1, updated_at = NOW(6) WHERE id = 20")
    sql(f"DELETE FROM `{rv_schema}`.members WHERE id IN (7, 8)")
    [r] = sync_tenant(cfg("1"), "a", merge_warehouse=False)      # a scheduled night
    assert r.ok and r.mode == "incremental", r.error
    assert len(customer_rows(bq_client, ds, "a")) == 148          # the customer's check deleted
    merges = merge_warehouse_tables(cfg(None), live_io())         # the schedule's merge step
    assert all(m.error is None for m in merges), [m.error for m in merges]
    assert warehouse_rows(bq_client, wh) == customer_rows(bq_client, ds, "a")


def test_full_read_of_a_shared_table_reads_only_its_tenants_rows(
        sql, rv_schema, mysql_server, full_read_on):
    """A shared table whose primary key does not start with the tenant column (the suite's
    own `orders` shape: PRIMARY KEY (id), INDEX (tenant_id, updated_at)). The estimate divides
    DATA_LENGTH by the tenants, so each small tenant is read whole; but the whole read walks
    PRIMARY in key order, filtering the tenant: every tenant's night reads every tenant's rows
    (N tenants: N times the table a night), where the incremental passes read the tenant's
    range of the (tenant, cursor) index."""
    orgs, per = 20, 100
    sql(f"CREATE TABLE `{rv_schema}`.members (id BIGINT NOT NULL PRIMARY KEY, org_id INT NOT "
        "NULL, updated_at DATETIME(6) NULL, amount DECIMAL(12,2), email VARCHAR(64), "
        "INDEX ix_cur (org_id, updated_at))")
    sql.many(f"INSERT INTO `{rv_schema}`.members VALUES (%s, %s, %s, %s, %s)",
             [(i, 1 + i % orgs, "2025-05-05", "1.00", f"m{i}@example.com")
              for i in range(1, orgs * per + 1)])
    sql(f"ANALYZE TABLE `{rv_schema}`.members")
    from hakobu.config import Cluster
    cluster = Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    tenant = Tenant(tenant="t", cluster="main",
                    source={"schema": rv_schema, "tenant_column": "org_id", "tenant_value": 3},
                    destination={"project": "hakobu-test", "dataset": "x"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                    tables=[{"name": "members", "cursor": "updated_at", "chunk_rows": 5000}])
    source = MySQLSource(cluster)
    try:
        plan = plan_for(source, tenant, tenant.tables[0])
    finally:
        source.dispose()
    # Fixed: such a table is never read whole (hakobu.planning.full_read_reason); it stays
    # incremental, through the (tenant, cursor) index.
    assert plan.full_read is None and plan.incremental, plan.full_read
    # and a key that does start with the tenant column reads only the tenant's range whole
    sql(f"ALTER TABLE `{rv_schema}`.members DROP PRIMARY KEY, ADD PRIMARY KEY (org_id, id)")
    sql(f"ANALYZE TABLE `{rv_schema}`.members")
    source = MySQLSource(cluster)
    try:
        plan = plan_for(source, tenant, tenant.tables[0])
    finally:
        source.dispose()
    assert plan.full_read, "expected a full read: the tenant's share is a few KiB"
    q = chunk_sql(plan, "full", None, None)
    # MariaDB's ANALYZE: id, select_type, table, type, possible_keys, key, key_len, ref, rows,
    # r_rows (rows actually read), filtered, r_filtered, Extra
    [row] = sql("ANALYZE " + q)
    examined = float(row[9])
    assert examined <= 2 * per, (f"the whole read of one tenant's {per} rows examined "
                                 f"{examined:.0f} rows (key {row[5]}, type {row[3]}): {q}")


def test_full_read_refuses_the_mass_delete_the_incremental_night_refuses(
        sql, rv_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    """A tenant_value pointed at no rows (a typo, a re-keyed tenant). Incremental, the key
    check's safety valve refuses to delete more than half the table ("check the tenant's
    schema and tenant_value"); read whole, the MERGE deletes every row of the tenant's table,
    and the run says ok. The modes should not differ in what they are willing to delete."""
    make_members(sql, rv_schema, 60, orgs=(1, 2))
    ds, wh = datasets(), datasets()
    shared = "  tenant_column: org_id\n  tenant_value: {}\n"

    def cfg(value, kib):
        return config(tmp_path, mysql_server, monkeypatch,
                      {"a": (rv_schema, ds, _limit(kib), shared.format(value))}, wh)

    [r] = sync_tenant(cfg(1, "0"), "a")
    assert r.ok and r.mode == "initial", r.error
    # incremental (from its watermark): refused, nothing deleted
    [r] = sync_tenant(cfg(9, "0"), "a")
    assert not r.ok and "refusing to delete" in (r.error or ""), (r.mode, r.error)
    assert len(customer_rows(bq_client, ds, "a")) == 60
    # read whole: the same mistake
    [r] = sync_tenant(cfg(9, None), "a")
    left = len(customer_rows(bq_client, ds, "a"))
    assert not r.ok and left == 60, (r.ok, r.mode, r.error, f"{left} rows left")



def test_back_to_incremental_after_a_column_was_added_delivers_the_deletes(
        sql, rv_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    """The same hole with a watermark in place (the README: "a table that grows past the limit
    goes on from it"): a column added while the table was read whole was never recorded in the
    warehouse watermark's column generations, so the first incremental night re-reads the
    slice (needs_refill), the shared read starts over as a first load for both sinks, and the
    row deleted meanwhile stays in the customer's table and in the warehouse."""
    make_members(sql, rv_schema, 120)
    ds, wh = datasets(), datasets()

    def cfg(kib):
        return config(tmp_path, mysql_server, monkeypatch, {"a": (rv_schema, ds, _limit(kib))}, wh)

    [r] = sync_tenant(cfg("1"), "a")
    assert r.ok and r.mode == "initial", r.error
    sql(f"ALTER TABLE `{rv_schema}`.members ADD COLUMN note VARCHAR(20) DEFAULT 'dflt'")
    [r] = sync_tenant(cfg(None), "a", verify=True)
    assert r.ok and r.mode == "full", r.error
    sql(f"DELETE FROM `{rv_schema}`.members WHERE id = 13")
    c = cfg("1")
    [r] = sync_tenant(c, "a", verify=True)
    assert r.ok, r.error
    d = diff(c, "a")
    assert d.equal, (r.mode, r.warehouse_extra.get("reread"), d.summary())
    assert warehouse_rows(bq_client, wh) == customer_rows(bq_client, ds, "a")


def test_scheduled_merge_applies_a_deletes_only_night_to_the_warehouse(
        sql, rv_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    """PRE-EXISTING, not this change's (found on the way; full reads avoid it for small
    tables; fixed: hakobu.table_checks.announce_deletes): an incremental night whose only
    changes are deletes stages no warehouse slice (flush skips an empty one), and the scheduled merge step checks only the tenants whose
    slices it merged (merge_warehouse_tables, `tenant.tenant in m.tenants`), so the deleted
    rows stay in the warehouse — night after night, until some row of that table changes."""
    from hakobu.warehouse_merge import merge_warehouse_tables

    make_members(sql, rv_schema, 150)
    ds, wh = datasets(), datasets()
    cfg = config(tmp_path, mysql_server, monkeypatch, {"a": (rv_schema, ds, _limit("0"))}, wh)
    [r] = sync_tenant(cfg, "a")
    assert r.ok and r.mode == "initial", r.error
    sql(f"DELETE FROM `{rv_schema}`.members WHERE id IN (7, 8)")
    [r] = sync_tenant(cfg, "a", merge_warehouse=False)          # a scheduled night
    assert r.ok and r.mode == "incremental", r.error
    merge_warehouse_tables(cfg, live_io())                      # the schedule's merge step
    assert warehouse_rows(bq_client, wh) == customer_rows(bq_client, ds, "a")
