"""Every generated chunk query must be driven by an index: no full scan, no filesort."""

import pytest

from hakobu.config import Cluster, Tenant
from hakobu.planning import plan_for
from resources.mysql_sql import chunk_sql
from resources.mysql_source import MySQLSource
from tests.integration.conftest import make_orders


def explain(sql, query):
    rows = sql("EXPLAIN " + query)
    # id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra
    return [{"type": r[3], "key": r[5], "extra": r[9] or ""} for r in rows]


def tenant(schema, shared=False):
    src = {"schema": schema}
    if shared:
        src.update(tenant_column="tenant_id", tenant_value=3)
    return Tenant(tenant="t", cluster="main", source=src,
                  destination={"project": "hakobu-test", "dataset": "x"},
                  schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                  tables=[{"name": "orders", "cursor": "updated_at", "chunk_rows": 100}])


@pytest.mark.parametrize("shared", [False, True], ids=["schema-per-tenant", "shared-table"])
def test_chunk_queries_are_index_driven(sql, schema, mysql_server, shared):
    make_orders(sql, schema, n=3000, shared_tenants=[3, 4, 5] if shared else None)
    sql(f"ANALYZE TABLE `{schema}`.orders")
    cluster = Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    source = MySQLSource(cluster)
    t = tenant(schema, shared)
    plan = plan_for(source, t, t.tables[0])
    upper, _ = source.upper_bound(plan)
    import datetime as dt
    from decimal import Decimal
    after_main = (dt.datetime(2026, 1, 1, 3, 0), 540)
    queries = {
        "main-first": chunk_sql(plan, "main", None, upper),
        "main-next": chunk_sql(plan, "main", after_main, upper),
        "nulls": chunk_sql(plan, "nulls", (17,), None),
        "zeros": chunk_sql(plan, "zeros", (17,), None),
        "full-first": chunk_sql(plan, "full", None, None),
        "full-next": chunk_sql(plan, "full", (1500,), None),
        "full-split": chunk_sql(plan, "full", (1200,), None, pk_range=(1000, 2000)),
    }
    for name, q in queries.items():
        assert "OFFSET" not in q.upper()
        [row] = explain(sql, q)
        assert row["type"] in {"range", "index", "ref"}, (name, row, q)
        if name != "zeros":   # zero-date cursors: only those rows, sorted by pk (documented)
            assert "filesort" not in row["extra"].lower(), (name, row, q)
        if name.startswith(("main", "nulls", "zeros")):
            assert row["key"] == "ix_cur", (name, row)
        else:
            assert row["key"] == "PRIMARY" and row["type"] in {"range", "index"}, (name, row)
    source.dispose()
    assert Decimal  # keep import used


def test_row_constructor_form_is_not_used(sql, schema, mysql_server):
    make_orders(sql, schema, n=50)
    cluster = Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    source = MySQLSource(cluster)
    t = tenant(schema)
    import datetime as dt
    q = chunk_sql(plan_for(source, t, t.tables[0]), "main", (dt.datetime(2026, 1, 1), 5), None)
    assert "`updated_at`, _src.`id`) >" not in q and "(`updated_at`, `id`)" not in q
    assert "_src.`updated_at` > '2026-01-01 00:00:00.000000' OR (_src.`updated_at` = " in q
    source.dispose()
