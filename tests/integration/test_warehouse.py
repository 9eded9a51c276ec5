"""The internal warehouse from the same reads, against the real MariaDB and the emulator.

Schemas and datasets are prefixed `hk_wh_` and dropped afterwards.
"""

import datetime as dt
import hashlib
import hmac
import re
import textwrap
import threading

import pytest

from hakobu.config import load_config
from hakobu.planning import plan_for
from hakobu.reconcile import diff_table
from resources.bigquery_client import BigQuerySettings
from resources.mysql_source import MySQLSource
from tests.helpers import dataset_factory, fresh_schema, tenant_body, unique, write_config
from tests.live import destination_for, source_for, sync_tenant

KEY_ENV = "HK_WH_TEST_KEY"
KEY = "test-key-0123456789"
MEMBERS = "- name: members\n  cursor: updated_at\n  chunk_rows: {chunk}\n{extra}"
PLANS = "- name: plans\n"
SHARED = "  tenant_column: tenant_id\n  tenant_value: {v}\n"


@pytest.fixture
def wh_schema(sql):
    yield from fresh_schema(sql, "hk_wh")


@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_wh")


@pytest.fixture
def wh_config(tmp_path, mysql_server, monkeypatch, strict_env):
    """A config dir with tenants and a tenants/warehouse.yaml; returns the loaded Config."""
    def make(tenants: dict[str, tuple], warehouse: str | None, **kw):
        bodies = {tid: tenant_body(*args) for tid, args in tenants.items()}
        root = write_config(tmp_path / unique("cfg"), mysql_server, bodies, **kw)
        if warehouse is not None:
            (root / "tenants" / "warehouse.yaml").write_text(textwrap.dedent(warehouse))
        monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
        make.last = load_config(root)
        return make.last
    return make


def warehouse_yaml(dataset: str, enabled: bool = True) -> str:
    return (f"warehouse:\n  project: hakobu-test\n  dataset: {dataset}\n  location: US\n"
            f"  enabled: {str(enabled).lower()}\n  hash_key_env: {KEY_ENV}\n"
            "  drop_columns: [note]\n  hash_columns: [email, phone]\n")


def make_members(sql, schema, n, shared=None):
    tcol = "tenant_id INT NOT NULL, " if shared else ""
    idx = "(tenant_id, updated_at)" if shared else "(updated_at)"
    sql(f"CREATE TABLE `{schema}`.members (id BIGINT PRIMARY KEY, {tcol}"
        "updated_at DATETIME(6) NOT NULL, email VARCHAR(128), phone VARCHAR(32), note TEXT, "
        f"password_hash CHAR(60), remember_token VARCHAR(64), INDEX ix_cur {idx})")
    base = dt.datetime(2026, 1, 1)
    rows = []
    for i in range(1, n + 1):
        t = [shared[i % len(shared)]] if shared else []
        rows.append((i, *t, base + dt.timedelta(minutes=i), f"m{i}.{schema[-4:]}@example.com",
                     f"+81-90-{i:04d}", f"note {i}", f"$2b$12$hash{i}", f"tok{i}"))
    cols = "id, " + ("tenant_id, " if shared else "") + \
        "updated_at, email, phone, note, password_hash, remember_token"
    sql.many(f"INSERT INTO `{schema}`.members ({cols}) VALUES ({', '.join(['%s'] * len(rows[0]))})",
             rows)
    pk = "tenant_id, id" if shared else "id"
    sql(f"CREATE TABLE `{schema}`.plans (id INT, {tcol}name VARCHAR(20), PRIMARY KEY ({pk}))")
    sql.many(f"INSERT INTO `{schema}`.plans (id, {'tenant_id, ' if shared else ''}name) VALUES "
             f"({', '.join(['%s'] * (3 if shared else 2))})",
             [(i, *([v] if shared else []), f"plan {i}") for v in (shared or [None])
              for i in range(1, 4)])


def bq_rows(bq_client, sql):
    return [dict(r) for r in bq_client.query(sql).result()]


def expected_hash(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def shape(queries: list[str]) -> list[str]:
    return sorted(re.sub(r"< '[0-9: .-]+'", "< :upper", q) for q in queries)


def counting_reads(monkeypatch) -> list[str]:
    """Every keyset query the source streams (SQL text), in order."""
    seen: list[str] = []
    orig = MySQLSource.stream

    def stream(self, plan, sql, batch_rows=50_000):
        seen.append(sql)
        return orig(self, plan, sql, batch_rows)
    monkeypatch.setattr(MySQLSource, "stream", stream)
    return seen


def test_read_once_feeds_customer_and_warehouse(sql, wh_schema, datasets, wh_config, bq_client,
                                                 monkeypatch):
    """One nightly run with the warehouse on issues exactly the chunk queries of a run with it
    off; the customer gets clear values, the warehouse hashed ones; credentials go nowhere."""
    monkeypatch.setenv(KEY_ENV, KEY)
    make_members(sql, wh_schema, 250)
    tables = MEMBERS.format(chunk=100, extra="") + PLANS
    cust_off, cust_on, wh = datasets(), datasets(), datasets()
    reads = counting_reads(monkeypatch)
    off = wh_config({"a": (wh_schema, cust_off, tables)}, warehouse_yaml(wh, enabled=False))
    assert all(r.ok and r.warehouse == "-" for r in sync_tenant(off, "a"))
    reads_off = list(reads)
    reads.clear()
    on = wh_config({"a": (wh_schema, cust_on, tables)}, warehouse_yaml(wh))
    results = {r.table: r for r in sync_tenant(on, "a")}
    assert all(r.ok and r.warehouse == "ok" for r in results.values()), results
    # the same chunk queries (the run's upper bound literal aside), each issued once
    # 250 rows in one query of 3 chunks (HAKOBU_QUERY_CHUNKS in conftest), + nulls, zeros, plans
    assert shape(reads) == shape(reads_off) and len(reads) == 1 + 1 + 1 + 1
    assert results["members"].rows_read == 250
    assert results["members"].withheld == ["password_hash", "remember_token"]

    # customer: clear values, every row, no credentials
    tenant = on.tenant("a")
    source = source_for(on, tenant)
    dest = destination_for(tenant, BigQuerySettings.from_env())
    cust = {s["id"]: s
            for s in bq_rows(bq_client, f"SELECT * FROM `hakobu-test.{cust_on}.members`")}
    assert len(cust) == 250 and cust[7]["email"].startswith("m7.")
    assert "password_hash" not in cust[7] and "remember_token" not in cust[7]

    # warehouse: tenant_id, hashed email/phone, no note, no credentials, never a clear value
    rows = bq_rows(bq_client, f"SELECT * FROM `hakobu-test.{wh}.members` ORDER BY id")
    assert len(rows) == 250
    assert set(rows[0]) == {"id", "updated_at", "email", "phone", "tenant_id",
                            "_hakobu_tenant_bucket", "_hakobu_synced_at"}
    assert {r["tenant_id"] for r in rows} == {"a"}
    assert rows[6]["email"] == expected_hash(cust[7]["email"])
    assert rows[6]["phone"] == expected_hash("+81-90-0007")
    clear = {v for c in cust.values() for k, v in c.items() if k in ("email", "phone")}
    assert not clear & {v for r in rows for v in r.values() if isinstance(v, str)}
    state = bq_rows(bq_client, f"SELECT table_name FROM `hakobu-test.{wh}._hakobu_state_a`")
    # the watermark, and the key stats of the key check a first load's slice now gets (a
    # first load merges and deletes nothing: hakobu.table_checks._reconciles)
    assert sorted(r["table_name"] for r in state) == ["members", "members#keys"]

    # the next run reads only changes, once, for both
    sql(f"UPDATE `{wh_schema}`.members SET email = 'new@example.com', "
        "updated_at = '2026-06-01 00:00:00' WHERE id = 3")
    reads.clear()
    r = {r.table: r for r in sync_tenant(on, "a")}["members"]
    assert r.rows_read == 1 and r.warehouse_rows_merged == 1 and r.rows_merged == 1
    assert len([q for q in reads if "`members`" in q]) == 3
    [row] = bq_rows(bq_client, f"SELECT email FROM `hakobu-test.{wh}.members` WHERE id = 3")
    assert row["email"] == expected_hash("new@example.com")
    d = diff_table(source, dest, export_plan_of(on, "a", "members"))
    assert d.equal, d.summary()


def export_plan_of(config, tenant_id, table):
    from hakobu.policy import export_plan

    tenant = config.tenant(tenant_id)
    source = source_for(config, tenant)
    return export_plan(plan_for(source, tenant, tenant.table(table)), tenant.table(table))


def test_tenants_load_concurrently_and_stay_isolated(sql, wh_schema, datasets, wh_config,
                                                     bq_client, monkeypatch):
    """Shared source tables (tenant_id column), two tenants loading the same warehouse tables at
    once: each customer dataset holds only its tenant's rows; each warehouse slice is exactly its
    tenant's; a full-read table's delete of vanished rows never touches the other tenant."""
    monkeypatch.setenv(KEY_ENV, KEY)
    make_members(sql, wh_schema, 300, shared=[3, 4, 5])
    sql(f"CREATE TABLE `{wh_schema}`.events (tenant_id INT NOT NULL, k VARCHAR(8), n INT)")
    sql.many(f"INSERT INTO `{wh_schema}`.events VALUES (%s, %s, %s)",
             [(v, f"k{i}", i) for v in (3, 4) for i in range(5)])
    tables = (MEMBERS.format(chunk=40, extra="") + PLANS
              + "- name: events\n  without_primary_key: replace\n")
    d3, d4, wh = datasets(), datasets(), datasets()
    config = wh_config({"t3": (wh_schema, d3, tables, SHARED.format(v=3)),
                        "t4": (wh_schema, d4, tables, SHARED.format(v=4))}, warehouse_yaml(wh))
    out: dict = {}
    threads = [threading.Thread(target=lambda t=t: out.__setitem__(t, sync_tenant(config, t)))
               for t in ("t3", "t4")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for tid in ("t3", "t4"):
        assert all(r.ok and r.warehouse == "ok" for r in out[tid]), out[tid]
    for ds, v in ((d3, 3), (d4, 4)):
        for table in ("members", "plans"):
            got = bq_rows(bq_client, f"SELECT tenant_id, COUNT(*) AS n FROM "
                                     f"`hakobu-test.{ds}.{table}` GROUP BY tenant_id")
            assert [r["tenant_id"] for r in got] == [v], (ds, table, got)
    slices = bq_rows(bq_client, f"SELECT tenant_id, COUNT(*) AS n FROM `hakobu-test.{wh}.members` "
                                "GROUP BY tenant_id ORDER BY tenant_id")
    assert slices == [{"tenant_id": "t3", "n": 100}, {"tenant_id": "t4", "n": 100}]
    # t3's plan 2 and event k0 vanish: t3's full read (delete of vanished rows) and t3's
    # replace of a table without a key change t3's slice only
    sql(f"DELETE FROM `{wh_schema}`.plans WHERE tenant_id = 3 AND id = 2")
    sql(f"DELETE FROM `{wh_schema}`.events WHERE tenant_id = 3 AND k = 'k0'")
    assert all(r.ok and r.warehouse == "ok"
               for r in sync_tenant(config, "t3", tables=["plans", "events"]))
    plans = bq_rows(bq_client, f"SELECT tenant_id, id FROM `hakobu-test.{wh}.plans` "
                               "ORDER BY tenant_id, id")
    assert [(p["tenant_id"], p["id"]) for p in plans] == [("t3", 1), ("t3", 3), ("t4", 1),
                                                           ("t4", 2), ("t4", 3)]
    events = bq_rows(bq_client, f"SELECT tenant_id, COUNT(*) AS n FROM `hakobu-test.{wh}.events` "
                                "GROUP BY tenant_id ORDER BY tenant_id")
    assert events == [{"tenant_id": "t3", "n": 4}, {"tenant_id": "t4", "n": 5}]
    tables_now = {t.table_id for t in bq_client.list_tables(f"hakobu-test.{wh}")}
    assert {"_hakobu_state_t3", "_hakobu_state_t4"} <= tables_now


def test_missing_hash_key_never_writes_unhashed_and_the_customer_still_gets_its_data(
        sql, wh_schema, datasets, wh_config, bq_client, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    make_members(sql, wh_schema, 30)
    cust, wh = datasets(), datasets()
    tables = MEMBERS.format(chunk=100, extra="  export_sensitive: [remember_token]\n")
    config = wh_config({"a": (wh_schema, cust, tables)}, warehouse_yaml(wh))
    [r] = sync_tenant(config, "a")
    assert r.ok and r.rows_read == 30 and r.warehouse == "failed"
    assert f"{KEY_ENV} is not set" in r.warehouse_error and "unhashed" in r.warehouse_error
    assert r.withheld == ["password_hash"]       # released by export_sensitive: customer only
    [c] = bq_rows(bq_client, f"SELECT COUNT(*) AS n, MAX(remember_token) AS t "
                             f"FROM `hakobu-test.{cust}.members`")
    assert c["n"] == 30 and c["t"].startswith("tok")
    existing = {t.table_id for t in bq_client.list_tables(f"hakobu-test.{wh}")} \
        if _exists(bq_client, wh) else set()
    assert "members" not in existing
    # with the key the warehouse catches up from its own (empty) watermark: the shared read
    # starts at the earliest sink's, the customer re-merges those rows harmlessly
    monkeypatch.setenv(KEY_ENV, KEY)
    [r] = sync_tenant(config, "a")
    assert r.ok and r.warehouse == "ok" and r.rows_read == 30
    rows = bq_rows(bq_client, f"SELECT * FROM `hakobu-test.{wh}.members`")
    assert len(rows) == 30 and "remember_token" not in rows[0]
    assert all(len(x["email"]) == 64 for x in rows)
    [r] = sync_tenant(config, "a")
    assert r.rows_read == 0


def _exists(client, dataset):
    from google.api_core.exceptions import NotFound

    try:
        client.get_dataset(f"hakobu-test.{dataset}")
        return True
    except NotFound:
        return False


def test_nightly_job_materializes_both_and_fails_loudly_without_the_key(
        sql, wh_schema, datasets, wh_config, bq_client, tmp_path, monkeypatch, capsys):
    import dagster as dg

    from hakobu.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    make_members(sql, wh_schema, 40)
    cust, wh = datasets(), datasets()
    wh_config({"a": (wh_schema, cust, MEMBERS.format(chunk=100, extra=""))}, warehouse_yaml(wh))
    assert main(["load", "a"]) == 1
    err = capsys.readouterr().err
    assert "warehouse/members" in err and f"{KEY_ENV} is not set" in err
    monkeypatch.setenv(KEY_ENV, KEY)
    assert main(["load", "a"]) == 0
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS,
                                            dg.DagsterRunStatus.FAILURE]
        cust_evs = instance.fetch_materializations(dg.AssetKey(["customer", "members"]),
                                                   limit=10).records
        assert len(cust_evs) == 2          # the customer got its data even in the failed run
        [wev] = instance.fetch_materializations(dg.AssetKey(["warehouse", "members"]),
                                                limit=10).records
        md = wev.asset_materialization.metadata
        assert wev.asset_materialization.partition == "a"
        assert md["rows_read"].value == 40 and md["read_shared_with_customer"].value is True

    # a scheduled run (the job's default config) stages only; `hakobu merge-warehouse` (the
    # merge_warehouse job, what its schedule runs) applies it
    from pipelines.build import build_definitions
    sql(f"UPDATE `{wh_schema}`.members SET email = 'z@example.com', "
        "updated_at = '2026-06-01 00:00:00' WHERE id = 4")
    defs = build_definitions(wh_config.last)
    with dg.DagsterInstance.get() as instance:
        assert defs.resolve_job_def("nightly").execute_in_process(
            instance=instance, partition_key="a").success
    q = f"SELECT email FROM `hakobu-test.{wh}.members` WHERE id = 4"
    assert bq_rows(bq_client, q) == [{"email": expected_hash(f"m4.{wh_schema[-4:]}@example.com")}]
    capsys.readouterr()
    assert main(["merge-warehouse", "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["slices_merged"] == 1 and out["dml_statements"] == 1
    assert out["tables_failed"] == 0 and out["tenants_merged"] == 1
    assert bq_rows(bq_client, q) == [{"email": expected_hash("z@example.com")}]
    with dg.DagsterInstance.get() as instance:        # recorded as the job's materialization
        [mev] = instance.fetch_materializations(dg.AssetKey(["warehouse_merge"]),
                                                limit=1).records
        assert mev.asset_materialization.metadata["slices_merged"].value == 1


# -- pending slices and the merge step, under BigQuery's real limits (the strict layer) --------


def test_many_tenants_stage_and_one_merge_per_table_applies_them(sql, wh_schema, datasets,
                                                                 wh_config, strict_env,
                                                                 bq_client, monkeypatch):
    """6 tenants on one shared source table deliver at once, 3 at a time, as scheduled runs do
    (merge left to the merge step): no tenant run sends a mutating DML statement to a warehouse
    table. Then one merge step: exactly one MERGE per warehouse table applies every tenant's
    slice, each slice equals its source (checked against it), and no quota error happened."""
    from concurrent.futures import ThreadPoolExecutor

    from hakobu.warehouse_merge import merge_warehouse_tables
    from tests.live import live_io

    monkeypatch.setenv(KEY_ENV, KEY)
    ids = list(range(1, 7))
    make_members(sql, wh_schema, 120, shared=ids)
    tables = MEMBERS.format(chunk=1000, extra="") + PLANS
    wh = datasets()
    config = wh_config({f"t{v}": (wh_schema, datasets(), tables, SHARED.format(v=v))
                        for v in ids}, warehouse_yaml(wh))
    strict_env.reset()

    def run(v):
        return sync_tenant(config, f"t{v}", merge_warehouse=False)
    with ThreadPoolExecutor(3) as ex:
        results = [r for rs in ex.map(run, ids) for r in rs]
    assert all(r.ok and r.warehouse == "ok" and r.warehouse_extra["merge"] == "pending"
               for r in results), [r for r in results if not r.ok]
    wh_tables = {t: s for t, s in strict_env.stats()["tables"].items()
                 if t.startswith(f"hakobu-test.{wh}.") and "_hakobu_" not in t.split(".")[-1]}
    assert sum(s["mutating_dml"] for s in wh_tables.values()) == 0, wh_tables
    assert bq_rows(bq_client, f"SELECT COUNT(*) AS n FROM `hakobu-test.{wh}.members`") \
        == [{"n": 0}]                                      # staged, not merged yet

    merges = merge_warehouse_tables(config, live_io())
    assert {m.table: (m.slices, m.statements) for m in merges} == {
        "members": (6, 1), "plans": (6, 1)}
    assert all(r.warehouse == "ok" for m in merges for r in m.checks.values()), \
        [(t, r.warehouse_error) for m in merges for t, r in m.checks.items()]
    assert {len(m.checks) for m in merges} == {6}
    stats = strict_env.stats()["tables"]
    assert stats[f"hakobu-test.{wh}.members"]["mutating_dml"] == 1
    assert stats[f"hakobu-test.{wh}.plans"]["mutating_dml"] == 1
    got = bq_rows(bq_client, f"SELECT tenant_id, COUNT(*) AS n FROM `hakobu-test.{wh}.members` "
                             "GROUP BY tenant_id")
    assert {r["tenant_id"]: r["n"] for r in got} == {f"t{v}": 20 for v in ids}
    assert [m.slices for m in merge_warehouse_tables(config, live_io())] == [0, 0]  # no-op


def test_a_merge_that_crashed_before_dropping_its_slices_never_brings_an_old_value_back(
        sql, wh_schema, datasets, wh_config, bq_client, monkeypatch):
    """Two runs of one tenant staged (the email changed between them); the merge step applies
    both, drops the older slice and crashes before dropping the newer. Its rerun merges the
    newer again (idempotent): the warehouse holds the newest value, the check finds it equal.
    A crash inside the MERGE itself (no slice dropped) is the same rerun."""
    from hakobu.warehouse_merge import merge_warehouse_tables
    from resources import warehouse_pending
    from tests.live import live_io

    monkeypatch.setenv(KEY_ENV, KEY)
    make_members(sql, wh_schema, 30)
    wh = datasets()
    config = wh_config({"a": (wh_schema, datasets(), MEMBERS.format(chunk=100, extra=""))},
                       warehouse_yaml(wh))
    assert all(r.ok for r in sync_tenant(config, "a"))           # first load, merged
    sql(f"UPDATE `{wh_schema}`.members SET email = 'v1@example.com', "
        "updated_at = '2026-06-01 00:00:00' WHERE id = 5")
    assert all(r.ok for r in sync_tenant(config, "a", merge_warehouse=False))
    sql(f"UPDATE `{wh_schema}`.members SET email = 'v2@example.com', "
        "updated_at = '2026-06-02 00:00:00' WHERE id = 5")
    assert all(r.ok for r in sync_tenant(config, "a", merge_warehouse=False))

    from resources.warehouse_dest import WarehouseDestination
    real_drop, dropped = WarehouseDestination.drop_table, []

    def crash_on_second(self, name):
        if name.startswith(warehouse_pending.PENDING_PREFIX):
            dropped.append(name)
            if len(dropped) == 2:
                raise KeyboardInterrupt("killed between the drops")
        return real_drop(self, name)
    monkeypatch.setattr(WarehouseDestination, "drop_table", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        merge_warehouse_tables(config, live_io())
    monkeypatch.setattr(WarehouseDestination, "drop_table", real_drop)
    assert len(dropped) == 2                 # the older slice went, the newer stayed
    # the crashed merge's lock is still there: a rerun within its TTL would wait; take it over
    monkeypatch.setattr(warehouse_pending, "LOCK_TTL_S", 0)
    [m] = merge_warehouse_tables(config, live_io())
    assert m.error is None and m.slices == 1 and m.checks["a"].warehouse == "ok", m
    [row] = bq_rows(bq_client, f"SELECT email FROM `hakobu-test.{wh}.members` WHERE id = 5")
    assert row["email"] == expected_hash("v2@example.com")

    # the merge step's check says *different*: a row that is in no source (written into the
    # warehouse by hand) is found by the key checksums of the next merge and deleted
    from hakobu.policy import tenant_bucket
    bq_rows(bq_client, f"INSERT INTO `hakobu-test.{wh}.members` (id, tenant_id, "
                       f"_hakobu_tenant_bucket, updated_at) VALUES (999, 'a', "
                       f"{tenant_bucket('a')}, DATETIME '2026-01-01 00:00:00')")
    sql(f"UPDATE `{wh_schema}`.members SET updated_at = '2026-06-03 00:00:00' WHERE id = 6")
    assert all(r.ok for r in sync_tenant(config, "a", merge_warehouse=False))
    [m] = merge_warehouse_tables(config, live_io())
    assert m.checks["a"].warehouse == "ok"
    assert m.checks["a"].extra["warehouse_deletes_rows_deleted"] == 1, m.checks["a"].extra
    assert bq_rows(bq_client, f"SELECT COUNT(*) AS n FROM `hakobu-test.{wh}.members` "
                              "WHERE id = 999") == [{"n": 0}]

    # `hakobu verify` of a tenant with a slice still pending applies it first: no false
    # difference (and no repair that the pending slice would then undo)
    from tests.live import verify_tenant
    sql(f"UPDATE `{wh_schema}`.members SET email = 'v3@example.com', "
        "updated_at = '2026-06-04 00:00:00' WHERE id = 5")
    assert all(r.ok for r in sync_tenant(config, "a", merge_warehouse=False))
    verdicts = verify_tenant(config, "a")
    assert {v.target for v in verdicts} == {"customer/members", "warehouse/members"}
    assert all(v.equal for v in verdicts), verdicts
    [row] = bq_rows(bq_client, f"SELECT email FROM `hakobu-test.{wh}.members` WHERE id = 5")
    assert row["email"] == expected_hash("v3@example.com")
