"""Small tables read whole every night (full_read_below_kib), against MariaDB and the emulator.

A table with a cursor whose tenant rows are smaller than the limit is read in one scan and
merged with deletion of vanished rows: every kind of change reaches both sinks — including
the ones an incremental night cannot see until its checks run (a cursor moved backwards, a
write that did not bump the cursor, a zero-in-date cursor) — and a table can move between the
modes, either way, without losing or doubling a row. Schemas and datasets are prefixed `hk_fr`.
"""

import textwrap

import pytest

from hakobu.config import load_config
from hakobu.planning import plan_for
from hakobu.reconcile import diff_table
from resources.bigquery_client import BigQuerySettings
from tests.integration.conftest import FULL_READ_KEY_ENV
from tests.helpers import dataset_factory, fresh_schema, tenant_body, unique, write_config
from tests.live import destination_for, source_for, sync_tenant, verify_tenant

KEY_ENV = FULL_READ_KEY_ENV
TABLE = "- name: members\n  cursor: updated_at\n  chunk_rows: 50\n{extra}"


@pytest.fixture
def fr_schema(sql):
    yield from fresh_schema(sql, "hk_fr")


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_fr")


def config(tmp_path, mysql_server, monkeypatch, tenants: dict, warehouse: str):
    root = write_config(tmp_path / unique("cfg"), mysql_server,
                        {tid: tenant_body(*args) for tid, args in tenants.items()})
    (root / "tenants" / "warehouse.yaml").write_text(textwrap.dedent(f"""\
        warehouse:
          project: hakobu-test
          dataset: {warehouse}
          location: US
          enabled: true
          hash_key_env: {KEY_ENV}
          drop_columns: []
          hash_columns: [email]
        """))
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
    return load_config(root)


def make_members(sql, schema, n: int, orgs: tuple[int, ...] = ()):
    tcol = "org_id INT NOT NULL, " if orgs else ""
    pk = "org_id, id" if orgs else "id"
    idx = "org_id, updated_at" if orgs else "updated_at"
    sql(f"CREATE TABLE `{schema}`.members ({tcol}id BIGINT NOT NULL, updated_at DATETIME(6) "
        f"NULL, amount DECIMAL(12,2), email VARCHAR(64), PRIMARY KEY ({pk}), "
        f"INDEX ix_cur ({idx}))")
    rows = [(*([org] if orgs else []), i,
             f"2025-{1 + i % 12:02d}-{1 + i % 28:02d} 10:00:00", f"{i}.25", f"m{i}@example.com")
            for org in (orgs or (None,)) for i in range(1, n + 1)]   # each org: ids 1..n
    cols = ("org_id, " if orgs else "") + "id, updated_at, amount, email"
    sql.many(f"INSERT INTO `{schema}`.members ({cols}) VALUES "
             f"({', '.join(['%s'] * len(rows[0]))})", rows)
    sql(f"ANALYZE TABLE `{schema}`.members")


def every_change(sql, schema, org_clause: str = ""):
    """One of each change the night must deliver."""
    t, w = f"`{schema}`.members", f" AND {org_clause}" if org_clause else ""
    sql(f"UPDATE {t} SET amount = 999.99, updated_at = NOW(6) WHERE id = 3{w}")
    sql(f"UPDATE {t} SET amount = 111.11, updated_at = '2020-01-01' WHERE id = 4{w}")  # backwards
    sql(f"UPDATE {t} SET amount = 222.22 WHERE id = 5{w}")             # cursor not bumped
    sql(f"UPDATE {t} SET updated_at = NULL, amount = 7 WHERE id = 6{w}")   # NULL cursor
    sql(f"DELETE FROM {t} WHERE id IN (7, 8){w}")
    sql("SET SESSION sql_mode = ''")
    try:
        sql(f"UPDATE {t} SET updated_at = '2025-03-00 10:00:00', amount = 8 WHERE id = 9{w}")
    finally:
        sql("SET SESSION sql_mode = DEFAULT")


def diff(cfg, tid: str, table: str = "members"):
    tenant = cfg.tenant(tid)
    source = source_for(cfg, tenant)
    return diff_table(source, destination_for(tenant, BigQuerySettings.from_env()),
                      plan_for(source, tenant, tenant.table(table)))


def warehouse_rows(bq_client, wh: str) -> dict:
    return {(r["tenant_id"], r["id"]): (str(r["amount"]), r["updated_at"]) for r in
            bq_client.query(f"SELECT tenant_id, id, amount, updated_at FROM "
                            f"`hakobu-test.{wh}.members`").result()}


def customer_rows(bq_client, ds: str, tid: str) -> dict:
    return {(tid, r["id"]): (str(r["amount"]), r["updated_at"]) for r in
            bq_client.query(f"SELECT id, amount, updated_at FROM "
                            f"`hakobu-test.{ds}.members`").result()}


def test_small_table_is_read_whole_every_change_delivered(
        sql, fr_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    make_members(sql, fr_schema, 120)
    ds, wh = datasets(), datasets()
    cfg = config(tmp_path, mysql_server, monkeypatch,
                 {"a": (fr_schema, ds, TABLE.format(extra=""))}, wh)
    [first] = sync_tenant(cfg, "a", verify=True)
    assert first.ok and first.mode == "full", first.error
    assert "full_read_below_kib 1024" in first.extra["full_read"]
    every_change(sql, fr_schema)
    [r] = sync_tenant(cfg, "a", verify=True)
    assert r.ok and r.mode == "full" and r.watermark == "(full read)"
    d = diff(cfg, "a")
    assert d.equal and d.source_rows == 118, d.summary()
    assert r.check is not None and r.check.in_sync          # the check, after the read
    # the warehouse slice holds the same rows and values (the full slice deleted 7 and 8)
    assert warehouse_rows(bq_client, wh) == customer_rows(bq_client, ds, "a")
    # A value made stale in BigQuery: `hakobu verify` sees it; the next night's read repairs it.
    bq_client.query(f"UPDATE `hakobu-test.{ds}.members` SET amount = 0 WHERE id = 10").result()
    assert not diff(cfg, "a").equal
    verdicts = verify_tenant(cfg, "a")
    assert any(not v.equal for v in verdicts), [v.__dict__ for v in verdicts]
    [r] = sync_tenant(cfg, "a", verify=True)
    assert r.ok and diff(cfg, "a").equal


def test_shared_table_each_tenant_whole_slice_only(
        sql, fr_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    """Two tenants of one shared table: each read whole, its own rows only, in its dataset
    and in its warehouse slice; one tenant's deletes never touch the other's rows."""
    make_members(sql, fr_schema, 100, orgs=(1, 2))
    ds_a, ds_b, wh = datasets(), datasets(), datasets()
    shared = "  tenant_column: org_id\n  tenant_value: {}\n"
    cfg = config(tmp_path, mysql_server, monkeypatch,
                 {"a": (fr_schema, ds_a, TABLE.format(extra=""), shared.format(1)),
                  "b": (fr_schema, ds_b, TABLE.format(extra=""), shared.format(2))}, wh)
    for tid in ("a", "b"):
        [r] = sync_tenant(cfg, tid)
        assert r.ok and r.mode == "full", r.error
        assert " tenants) < full_read_below_kib" in r.extra["full_read"]   # an estimate
    every_change(sql, fr_schema, "org_id = 1")
    [r] = sync_tenant(cfg, "a", verify=True)
    assert r.ok and r.mode == "full"
    for tid in ("a", "b"):
        d = diff(cfg, tid)
        assert d.equal, (tid, d.summary())
    a, b = customer_rows(bq_client, ds_a, "a"), customer_rows(bq_client, ds_b, "b")
    assert len(a) == 100 - 2 and len(b) == 100
    assert a[("a", 3)][0] == "999.99" and b[("b", 3)][0] == "3.25"     # b's rows untouched
    assert ("a", 7) not in a and ("b", 7) in b
    assert warehouse_rows(bq_client, wh) == {**a, **b}


def test_moving_between_modes_loses_and_doubles_nothing(
        sql, fr_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, bq_client,
        full_read_on):
    """Incremental (a limit below the table's size), then whole (the default), then
    incremental again from the watermark the whole reads left behind — with changes before
    each run, and the NULL and zero-date rows the incremental passes re-read."""
    make_members(sql, fr_schema, 150)
    ds, wh = datasets(), datasets()

    def run(limit: str | None, mode: str):
        extra = f"  full_read_below_kib: {limit}\n" if limit is not None else ""
        cfg = config(tmp_path, mysql_server, monkeypatch,
                     {"a": (fr_schema, ds, TABLE.format(extra=extra))}, wh)
        [r] = sync_tenant(cfg, "a", verify=True)
        assert r.ok and r.mode == mode, (r.mode, r.error)
        d = diff(cfg, "a")
        assert d.equal, d.summary()
        assert warehouse_rows(bq_client, wh) == customer_rows(bq_client, ds, "a")
        return r

    run("1", "initial")                 # DATA_LENGTH is at least one 16 KiB page: > 1 KiB
    sql(f"UPDATE `{fr_schema}`.members SET amount = 1, updated_at = NOW(6) WHERE id = 20")
    run("1", "incremental")
    every_change(sql, fr_schema)
    sql(f"INSERT INTO `{fr_schema}`.members VALUES (500, NOW(6), 5.5, 'n@example.com')")
    run(None, "full")
    sql(f"UPDATE `{fr_schema}`.members SET amount = 2, updated_at = NOW(6) WHERE id IN (21, 500)")
    sql(f"DELETE FROM `{fr_schema}`.members WHERE id = 22")
    sql(f"INSERT INTO `{fr_schema}`.members VALUES (501, NOW(6), 6.5, 'o@example.com')")
    r = run("0", "incremental")          # 0: never whole; from the older watermark
    assert r.rows_read >= 3


def test_a_large_tenant_of_a_shared_table_stays_incremental(
        sql, fr_schema, datasets, tmp_path, mysql_server, monkeypatch, strict_env, full_read_on):
    """The shared table's size divided by its tenants is small, but one tenant holds most of
    it: counted (up to the limit's worth), that tenant is not read whole; the small one is."""
    sql(f"CREATE TABLE `{fr_schema}`.members (org_id INT NOT NULL, id BIGINT NOT NULL, "
        "updated_at DATETIME(6) NULL, amount DECIMAL(12,2), email VARCHAR(64), "
        "PRIMARY KEY (org_id, id), INDEX ix_cur (org_id, updated_at))")
    rows = [(1, i, "2025-05-05", "1.00", f"big{i}@example.com") for i in range(1, 3001)]
    rows += [(org, i, "2025-05-05", "2.00", "s@example.com") for org in range(2, 22)
             for i in range(1, 6)]
    sql.many(f"INSERT INTO `{fr_schema}`.members VALUES (%s, %s, %s, %s, %s)", rows)
    sql(f"ANALYZE TABLE `{fr_schema}`.members")
    ds_big, ds_small, wh = datasets(), datasets(), datasets()
    shared = "  tenant_column: org_id\n  tenant_value: {}\n"
    extra = "  full_read_below_kib: 64\n"
    cfg = config(tmp_path, mysql_server, monkeypatch,
                 {"big": (fr_schema, ds_big, TABLE.format(extra=extra), shared.format(1)),
                  "small": (fr_schema, ds_small, TABLE.format(extra=extra), shared.format(2))},
                 wh)
    [big] = sync_tenant(cfg, "big")
    [small] = sync_tenant(cfg, "small")
    assert big.ok and big.mode == "initial" and "full_read" not in big.extra, big.extra
    assert small.ok and small.mode == "full", small.error
    for tid in ("big", "small"):
        assert diff(cfg, tid).equal
