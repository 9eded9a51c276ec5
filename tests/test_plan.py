"""Pure planning: SQL shapes, quoting, splits, keys. No database."""

import datetime as dt

import pyarrow as pa
import pytest

from hakobu.plan import (TablePlan, chunk_sql, keyset_after, max_key_below, pk_ranges,
                         splittable)
from hakobu.sqlquote import mysql_literal, quote_bq, quote_ident
from hakobu.types import ColumnInfo, column_spec


def plan(**kw):
    specs = (column_spec(ColumnInfo("id", "bigint", "bigint(20)", False)),
             column_spec(ColumnInfo("updated_at", "datetime", "datetime(6)", True)),
             column_spec(ColumnInfo("we`ird", "varchar", "varchar(10)", True)))
    base = dict(tenant="t", schema="s`x", table="orders", specs=specs, primary_key=("id",),
                cursor="updated_at", chunk_rows=100, cursor_index="ix")
    return TablePlan(**{**base, **kw})


def test_identifiers_are_quoted_never_pasted():
    assert quote_ident("we`ird") == "`we``ird`"
    q = chunk_sql(plan(), "main", None, None)
    assert "`s``x`.`orders`" in q and "`we``ird` AS `we``ird`" in q
    with pytest.raises(ValueError):
        quote_bq("proj", "data`set")


def test_string_literals_cannot_escape():
    lit = mysql_literal("x' OR '1'='1")
    assert "'" not in lit.removeprefix("_utf8mb4 X'").removesuffix("'")


def test_keyset_form_is_expanded_never_offset_or_row_constructor():
    q = chunk_sql(plan(query_rows=400), "main", (dt.datetime(2026, 1, 1), 7),
                  dt.datetime(2026, 2, 1))
    assert "OFFSET" not in q and "(_src.`updated_at`, _src.`id`)" not in q
    assert "FORCE INDEX (`ix`)" in q and q.endswith("LIMIT 400")
    assert ("_src.`updated_at` > '2026-01-01 00:00:00.000000' OR (_src.`updated_at` = "
            "'2026-01-01 00:00:00.000000' AND (_src.`id` > 7))") in q
    assert "_src.`updated_at` < '2026-02-01 00:00:00.000000'" in q
    assert keyset_after(("a", "b", "c"), (1, 2, 3)).count(" OR ") == 2


def test_full_pass_reads_in_primary_key_order():
    q = chunk_sql(plan(), "full", (5,), None, pk_range=(0, 100))
    assert "FORCE INDEX (PRIMARY)" in q and "ORDER BY _src.`id` ASC" in q
    assert "_src.`id` >= 0 AND _src.`id` < 100" in q


def test_shared_table_filters_the_tenant():
    q = chunk_sql(plan(tenant_column="tenant_id", tenant_value=3, tenant_type="int"), "main",
                  None, None)
    assert "_src.`tenant_id` = 3" in q


@pytest.mark.parametrize("lo,hi,parts", [(1, 10, 3), (5, 5, 4), (1, 1_000_000, 7), (0, 2, 8)])
def test_pk_ranges_cover_exactly(lo, hi, parts):
    ranges = pk_ranges(lo, hi, parts)
    covered = [i for a, b in ranges for i in range(a, b)] if hi - lo < 100 else None
    assert ranges[0][0] == lo and ranges[-1][1] == hi + 1
    assert all(a < b for a, b in ranges)
    assert all(r1[1] == r2[0] for r1, r2 in zip(ranges, ranges[1:]))
    if covered is not None:
        assert covered == list(range(lo, hi + 1))
    assert pk_ranges(5, 4, 3) == []


def test_max_key_below_the_upper_bound():
    p = plan()
    t = dt.datetime
    batch = pa.table({"id": [1, 2, 3, 4, 5],
                      "updated_at": pa.array([t(2026, 1, 3), t(2026, 1, 2), None, t(2026, 1, 3),
                                              t(2026, 1, 9)], pa.timestamp("us")),
                      "we`ird": ["a"] * 5})
    assert max_key_below(p, batch, t(2026, 1, 5)) == (t(2026, 1, 3), 4)
    assert max_key_below(p, batch, t(2026, 1, 1)) is None
    assert splittable(p) and not splittable(plan(primary_key=("we`ird",)))


def test_rows_per_query_is_bounded_in_bytes(monkeypatch):
    """A query streams several chunks, but its result stays about HAKOBU_QUERY_BYTES: connectorx
    reads a query's rows ahead of a busy consumer, so the query size bounds that memory."""
    monkeypatch.delenv("HAKOBU_QUERY_CHUNKS", raising=False)
    monkeypatch.delenv("HAKOBU_QUERY_BYTES", raising=False)
    assert plan(row_bytes=300).rows_per_query == 64 * 2**20 // 300       # 223,696 rows
    assert plan(row_bytes=10).rows_per_query == 64 * 2**20 // 64         # tiny rows: capped
    assert plan(row_bytes=None).rows_per_query == 64 * 2**20 // 1024     # unknown: 1 KiB/row
    assert plan(row_bytes=1, chunk_rows=5_000_000).rows_per_query == 5_000_000  # >= one chunk
    monkeypatch.setenv("HAKOBU_QUERY_BYTES", str(2**20))
    assert plan(row_bytes=2**19, chunk_rows=1).rows_per_query == 2
    assert plan(row_bytes=2**19, query_rows=7).rows_per_query == 100      # never below a chunk
    assert plan(row_bytes=2**19, query_rows=700).rows_per_query == 700
    monkeypatch.setenv("HAKOBU_QUERY_CHUNKS", "3")
    assert plan(row_bytes=300).rows_per_query == 300
    assert chunk_sql(plan(row_bytes=300), "full", None, None).endswith("LIMIT 300")


def test_unguarded_plan_reads_dates_as_stored():
    """Without the zero-date guard (connectorx's fast path) dates are plain columns and no
    zero-flag columns are selected; the guarded plan keeps both."""
    guarded = plan(zero_dates="fail")
    fast = plan(zero_dates="fail", guard_zero_dates=False)
    g, f = chunk_sql(guarded, "initial", None, None), chunk_sql(fast, "initial", None, None)
    assert "INTERVAL 0 SECOND" in g and "__hakobu_zero_" in g
    assert "INTERVAL 0" not in f and "__hakobu_zero_" not in f
    assert "`updated_at` AS `updated_at`" in f
    assert guarded.zero_flag_columns and not fast.zero_flag_columns


# issue #11 item 9: the tenant filter compares in the tenant column's own type

@pytest.mark.parametrize("data_type,value,sql", [
    ("int", 3, "_src.`tenant_id` = 3"),
    ("bigint", 0, "_src.`tenant_id` = 0"),
    ("varchar", "acme", "_src.`tenant_id` = _utf8mb4 X'61636d65' AND CAST(CONVERT("
                        "_src.`tenant_id` USING utf8mb4) AS BINARY) = X'61636d65'"),
    ("char", "1", "_src.`tenant_id` = _utf8mb4 X'31' AND CAST(CONVERT(_src.`tenant_id` USING "
                  "utf8mb4) AS BINARY) = X'31'"),
    ("varbinary", "ab", "_src.`tenant_id` = X'6162'"),
])
def test_tenant_predicate_compares_in_the_columns_type(data_type, value, sql):
    from hakobu.plan import tenant_predicate

    p = plan(tenant_column="tenant_id", tenant_value=value, tenant_type=data_type)
    assert tenant_predicate(p) == sql
    assert sql in chunk_sql(p, "main", None, None)


@pytest.mark.parametrize("data_type,value", [("int", "1x"), ("int", "1"), ("int", True),
                                             ("varchar", 1), ("enum", 2), ("date", "2026-01-01"),
                                             ("decimal", 3)])
def test_tenant_predicate_refuses_a_value_of_another_type(data_type, value):
    from hakobu.errors import SchemaError
    from hakobu.plan import tenant_predicate

    p = plan(tenant_column="tenant_id", tenant_value=value, tenant_type=data_type)
    with pytest.raises(SchemaError, match="tenant_value .*(integer|string)"):
        tenant_predicate(p)
