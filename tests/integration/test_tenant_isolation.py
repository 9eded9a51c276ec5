"""Issue #11 item 9: tenants of shared tables never read each other's rows. The read filters
compare in the tenant column's own type (an integer column with an integer, a string column
with a string, byte for byte), a tenant_value of another type is refused by name before
anything is written, and `hakobu validate` reports collation collisions with file and line.
Real MariaDB + emulator; hk_cfg_ schemas and datasets."""

import pytest

from tests.live import backfill_tenant
from hakobu.cli import main
from hakobu.config import Cluster, Tenant
from hakobu.plan import TablePlan, tenant_predicate
from hakobu.reconcile import diff_table
from hakobu.planning import plan_for
from tests.live import destination_for, source_for, sync_tenant
from resources.bigquery_client import BigQuerySettings
from tests.integration.cfg_fixtures import cfg_datasets, cfg_schema  # noqa: F401

# MySQL takes every one of these for 1 when compared with the integer 1, and the first three
# of the second group for 'acme' under the default (case-insensitive, PAD SPACE) collation
LOOKALIKES = ["1", "01", "1 ", "1x", " 1", "1.0", "acme", "ACME", "acme ", "Acme", "2"]
TABLES = """\
- name: orders
  cursor: updated_at
  chunk_rows: 7
- name: items
  cursor: updated_at
  chunk_rows: 7
- name: events
  cursor: version
  chunk_rows: 7
"""


def make_shared(sql, schema: str, column_type: str = "VARCHAR(8)", values=LOOKALIKES,
                per_value: int = 6) -> None:
    """orders: key id, read in cursor order; items: key (tc, id), read in key order;
    events: an integer cursor (its upper bound is MAX + 1 of the tenant's rows)."""
    sql(f"CREATE TABLE `{schema}`.orders (id INT PRIMARY KEY, tc {column_type} NOT NULL, "
        "updated_at DATETIME(6) NOT NULL, note VARCHAR(20), INDEX ix (tc, updated_at))")
    sql(f"CREATE TABLE `{schema}`.items (tc {column_type} NOT NULL, id INT NOT NULL, "
        "updated_at DATETIME(6) NOT NULL, note VARCHAR(20), PRIMARY KEY (tc, id), "
        "INDEX ix (tc, updated_at))")
    sql(f"CREATE TABLE `{schema}`.events (id INT PRIMARY KEY, tc {column_type} NOT NULL, "
        "version BIGINT NOT NULL, INDEX ix (tc, version))")
    rows = [(i * 100 + j, v) for i, v in enumerate(values) for j in range(per_value)]
    sql.many(f"INSERT INTO `{schema}`.orders VALUES (%s, %s, '2026-01-01' + INTERVAL %s SECOND, "
             "'v1')", [(k, v, k) for k, v in rows])
    sql.many(f"INSERT INTO `{schema}`.items VALUES (%s, %s, '2026-01-01' + INTERVAL %s SECOND, "
             "'v1')", [(v, k, k) for k, v in rows])
    sql.many(f"INSERT INTO `{schema}`.events VALUES (%s, %s, %s)", [(k, v, k) for k, v in rows])


def shared_source(value: str) -> str:
    return f"  tenant_column: tc\n  tenant_value: {value}\n"


def delivered(bq_client, dataset: str, table: str) -> dict:
    rows = bq_client.query(f"SELECT tc, COUNT(*) AS n FROM `hakobu-test.{dataset}.{table}` "
                           "GROUP BY tc").result()
    return {r["tc"]: r["n"] for r in rows}


def assert_equal(config, tid: str, table: str) -> None:
    tenant = config.tenant(tid)
    source = source_for(config, tenant)
    d = diff_table(source, destination_for(tenant, BigQuerySettings.from_env()),
                   plan_for(source, tenant, tenant.table(table)))
    assert d.equal, d.summary()


def test_string_tenant_column_delivers_only_the_tenants_own_rows(
        sql, cfg_schema, cfg_datasets, make_config, bq_env, bq_client, monkeypatch):
    import resources.mysql_chunks as ms

    monkeypatch.setattr(ms, "SPLIT_MIN_ROWS", 1)     # (pk-range splits where the key allows)
    make_shared(sql, cfg_schema)
    d1, dacme = cfg_datasets(), cfg_datasets()
    config = make_config({"one": (cfg_schema, d1, TABLES, shared_source('"1"')),
                          "acme": (cfg_schema, dacme, TABLES, shared_source('"acme"'))})
    for tid in ("one", "acme"):
        results = {r.table: r for r in sync_tenant(config, tid)}
        assert all(r.ok for r in results.values()), [r.error for r in results.values()]
        assert {r.rows_read for r in results.values()} == {6}
    for table in ("orders", "items", "events"):
        assert delivered(bq_client, d1, table) == {"1": 6}, table
        assert delivered(bq_client, dacme, table) == {"acme": 6}, table
    # an incremental run changes rows of every look-alike: each tenant reads, merges and
    # reconciles (key checksums, hakobu/checksums.py) only its own
    sql(f"UPDATE `{cfg_schema}`.orders SET note = 'v2', updated_at = NOW(6) - INTERVAL 2 SECOND "
        "WHERE id % 100 < 3")
    sql(f"UPDATE `{cfg_schema}`.items SET note = 'v2', updated_at = NOW(6) - INTERVAL 2 SECOND "
        "WHERE id % 100 < 3")
    sql(f"UPDATE `{cfg_schema}`.events SET version = version + 10000 WHERE id % 100 < 3")
    sql(f"DELETE FROM `{cfg_schema}`.orders WHERE id % 100 = 5")
    for tid, ds, value in (("one", d1, "1"), ("acme", dacme, "acme")):
        results = {r.table: r for r in sync_tenant(config, tid)}
        assert all(r.ok for r in results.values()), [r.error for r in results.values()]
        assert results["orders"].rows_read == 3 and results["events"].rows_read == 3
        assert delivered(bq_client, ds, "orders") == {value: 5}
        for table in ("orders", "items", "events"):
            assert_equal(config, tid, table)
    # a backfill counts and reads the tenant's rows only, too
    results = {r.table: r for r in backfill_tenant(config, "acme")}
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    assert results["items"].extra["rows_total_estimate"] == 6
    assert delivered(bq_client, dacme, "items") == {"acme": 6}


@pytest.mark.parametrize("column_type,value,says", [
    ("VARCHAR(8)", "1", "is int 1, but the column is a string column (varchar)"),
    ("CHAR(4)", "7", "is int 7, but the column is a string column (char)"),
    ("ENUM('1','2','acme')", "1", "is int 1, but the column is a string column (enum)"),
    ("INT", '"1x"', "is str '1x', but the column is an integer column (int)"),
    ("BIGINT UNSIGNED", '"1"', "is str '1', but the column is an integer column (bigint)"),
    ("DATE", '"2026-01-01"', "tenant columns must be integer or string"),
])
def test_tenant_value_of_another_type_than_its_column_is_refused_by_name(
        sql, cfg_schema, cfg_datasets, make_config, bq_env, bq_client, column_type, value, says):
    values = {"INT": ["1", "2"], "BIGINT UNSIGNED": ["1", "2"],
              "DATE": ["2026-01-01", "2026-01-02"]}.get(column_type, ["1", "2"])
    make_shared(sql, cfg_schema, column_type, values=values, per_value=2)
    ds = cfg_datasets()
    config = make_config({"a": (cfg_schema, ds, TABLES, shared_source(value))})
    results = sync_tenant(config, "a")
    for r in results:
        assert not r.ok
        assert f"a/{r.table}: source.tenant_value for tenant column 'tc'" in r.error, r.error
        assert says in r.error, r.error
        assert "another tenant's rows" in r.error and "a.yaml" in r.error
    from google.api_core.exceptions import NotFound
    with pytest.raises(NotFound):                    # refused before anything was written
        bq_client.get_dataset(f"hakobu-test.{ds}")


def _plan(schema: str, table: str, data_type: str, value) -> TablePlan:
    return TablePlan(tenant="t", schema=schema, table=table, specs=(), primary_key=("id",),
                     cursor=None, chunk_rows=10, tenant_column="tc", tenant_value=value,
                     tenant_type=data_type)


@pytest.mark.parametrize("definition,stored,value,matches", [
    ("VARCHAR(8) COLLATE utf8mb4_general_ci", LOOKALIKES, "1", ["1"]),
    ("VARCHAR(8) COLLATE utf8mb4_general_ci", LOOKALIKES, "acme", ["acme"]),
    ("VARCHAR(8) COLLATE utf8mb4_unicode_ci", ["strasse", "straße", "STRASSE"], "strasse",
     ["strasse"]),
    ("VARCHAR(8) CHARACTER SET latin1", ["café", "cafe", "CAFÉ", "café "], "café", ["café"]),
    ("VARCHAR(8) COLLATE utf8mb4_bin", ["acme", "acme ", "ACME"], "acme", ["acme"]),
    ("ENUM('acme','ACME','b') COLLATE utf8mb4_bin", ["acme", "ACME", "b"], "acme", ["acme"]),
    ("VARBINARY(8)", ["acme", "ACME", "acme "], "acme", ["acme"]),
    ("INT", ["1", "2", "11"], 1, ["1"]),
])
def test_the_tenant_filter_compares_in_the_columns_own_type(sql, cfg_schema, definition, stored,
                                                            value, matches):
    sql(f"CREATE TABLE `{cfg_schema}`.t (id INT AUTO_INCREMENT PRIMARY KEY, "
        f"tc {definition} NOT NULL, INDEX (tc))")
    sql.many(f"INSERT INTO `{cfg_schema}`.t (tc) VALUES (%s)", [(v,) for v in stored])
    data_type = definition.split("(")[0].split()[0].lower()
    where = tenant_predicate(_plan(cfg_schema, "t", data_type, value))
    got = sql(f"SELECT CAST(tc AS CHAR) FROM `{cfg_schema}`.t AS _src WHERE {where}")
    assert sorted(r[0] for r in got) == matches, where
    [plan_row] = sql(f"EXPLAIN SELECT id FROM `{cfg_schema}`.t AS _src WHERE {where}")
    assert plan_row[3] in {"ref", "range", "const"}, plan_row   # the tenant index still drives


def test_validate_names_file_and_line_of_type_and_collation_problems(
        sql, cfg_schema, cfg_datasets, make_config, capsys):
    sql(f"CREATE TABLE `{cfg_schema}`.orders (id INT PRIMARY KEY, "
        "tc VARCHAR(10) COLLATE utf8mb4_unicode_ci NOT NULL, updated_at DATETIME(6), "
        "INDEX ix (tc, updated_at))")
    tables = "- name: orders\n  cursor: updated_at\n"
    make_config({"a": (cfg_schema, cfg_datasets(), tables, shared_source('"café"')),
                 "b": (cfg_schema, cfg_datasets(), tables, shared_source('"CAFE"')),
                 "c": (cfg_schema, cfg_datasets(), tables, shared_source('"naïve"')),
                 "d": (cfg_schema, cfg_datasets(), tables, shared_source('"NAIVE "'))})
    assert main(["validate", "--offline"]) == 0          # offline, no collation is known
    capsys.readouterr()
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "b.yaml:6: source.tenant_value: tenants 'a'" in err and "'CAFE'" in err, err
    assert "d.yaml:6: source.tenant_value: tenants 'c'" in err and "utf8mb4_unicode_ci" in err
    make_config({"a": (cfg_schema, cfg_datasets(), tables, shared_source("1"))})
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "a.yaml:6: a/orders: source.tenant_value for tenant column 'tc'" in err, err
    assert 'tenant_value: "1" (quoted)' in err


def test_validate_names_the_line_of_a_missing_column(sql, cfg_schema, cfg_datasets, make_config,
                                                     capsys):
    sql(f"CREATE TABLE `{cfg_schema}`.orders (id INT PRIMARY KEY, updated_at DATETIME(6), "
        "INDEX (updated_at))")
    make_config({"a": (cfg_schema, cfg_datasets(),
                       "- name: orders\n  cursor: changed_at\n", "")})
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "a.yaml:15: a/orders: cursor column 'changed_at' does not exist" in err, err
    assert Cluster and Tenant  # (imported for readers of this file: the models under test)
