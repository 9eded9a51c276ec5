"""Pure planning: SQL shapes, quoting, splits, keys. No database."""

import datetime as dt

import pyarrow as pa
import pytest

from hakobu.keys import max_key_below
from hakobu.plan import TablePlan, keyset_after, pk_ranges, splittable
from hakobu.sqlquote import mysql_literal, quote_bq, quote_ident
from hakobu.types import ColumnInfo, column_spec
from resources.mysql_sql import chunk_sql


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
    g, f = g.split(" FROM ")[0], f.split(" FROM ")[0]     # the SELECT list (WHERE tests the
    assert "INTERVAL 0 SECOND" in g and "__hakobu_zero_" in g  # cursor through the guard)
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


# -- cursor edge cases (issue #11): pure parts ---------------------------------------------------

def test_main_and_zeros_passes_split_on_the_delivered_cursor():
    """main reads only cursors the guard delivers (zero-in-date values sort among valid dates
    in MariaDB, so `>= 1000-01-01` alone let them in); zeros reads the rest through month-gap
    ranges of the years present, or through the cursor index without a year list."""
    p = plan(cursor_years=(2026,))
    main = chunk_sql(p, "main", None, None)
    assert "(_src.`updated_at` + INTERVAL 0 SECOND) IS NOT NULL" in main.split(" WHERE ")[1]
    zeros = chunk_sql(p, "zeros", None, None).split(" WHERE ")[1]
    assert zeros.count(" AND _src.`updated_at` < ") == 12            # one range per month
    assert ("_src.`updated_at` > '2026-04-30 23:59:59.000000' AND _src.`updated_at` < "
            "'2026-05-01 00:00:00.000000'") in zeros
    assert ("_src.`updated_at` > '2025-12-31 23:59:59.000000' AND _src.`updated_at` < "
            "'2026-01-01 00:00:00.000000'") in zeros
    assert "+ INTERVAL 0 SECOND) IS NULL" in zeros
    scan = chunk_sql(plan(cursor_years=None), "zeros", None, None)
    assert "IS NOT NULL AND (_src.`updated_at` + INTERVAL 0 SECOND) IS NULL" in scan
    none = chunk_sql(plan(cursor_years=()), "zeros", None, None)
    assert "INTERVAL" not in none.split(" WHERE ")[1]


def test_zero_gaps_cover_every_month_boundary():
    from hakobu.plan import zero_gaps

    gaps = zero_gaps("date", (2024,))
    assert len(gaps) == 12 and gaps[0] == (dt.date(2023, 12, 31), dt.date(2024, 1, 1))
    assert (dt.date(2024, 2, 29), dt.date(2024, 3, 1)) in gaps          # leap year
    assert zero_gaps("datetime", (2025,))[1] == (dt.datetime(2025, 1, 31, 23, 59, 59),
                                                dt.datetime(2025, 2, 1))


def test_a_main_pass_key_never_holds_a_null_cursor():
    from hakobu.errors import SourceError
    from hakobu.keys import last_key

    batch = pa.table({"id": [1, 2], "updated_at": pa.array([dt.datetime(2026, 1, 1), None],
                                                           pa.timestamp("us")),
                      "we`ird": ["a", "b"]})
    with pytest.raises(SourceError, match="delivered as NULL"):
        last_key(plan(), batch, "main")
    assert last_key(plan(), batch, "nulls") == (2,)


def test_numeric_bounds_are_exact_and_nothing_reads_nothing():
    from decimal import Decimal

    from hakobu.plan import NOTHING, just_above

    dec = column_spec(ColumnInfo("v", "decimal", "decimal(12,2)", False, 12, 2))
    big = column_spec(ColumnInfo("v", "bigint", "bigint(20) unsigned", False))
    assert just_above(dec, Decimal("10.00")) == Decimal("10.01")
    assert just_above(dec, Decimal("-0.01")) == Decimal("0.00")
    assert just_above(big, 18446744073709551615) == 18446744073709551616
    p = plan(specs=(column_spec(ColumnInfo("id", "bigint", "bigint(20)", False)), dec),
             cursor="v")
    q = chunk_sql(p, "main", None, NOTHING)
    assert " AND FALSE" in q and "_src.`v` IS NOT NULL" in q
    assert "_src.`v` < 10.01" in chunk_sql(p, "initial", None, Decimal("10.01"))


@pytest.mark.parametrize("data_type,column_type,ok", [
    ("varchar", "varchar(20)", False), ("char", "char(3)", False), ("text", "text", False),
    ("enum", "enum('b','a')", False), ("set", "set('a')", False), ("varbinary", "varbinary(8)", False),
    ("float", "float", False), ("double", "double", False), ("time", "time", False),
    ("year", "year(4)", False), ("bit", "bit(8)", False), ("longtext", "longtext", False),
    ("int", "int(11)", True), ("bigint", "bigint(20) unsigned", True),
    ("decimal", "decimal(12,2)", True), ("date", "date", True), ("datetime", "datetime(6)", True),
    ("timestamp", "timestamp", True)])
def test_cursor_types_hakobu_can_order(data_type, column_type, ok):
    from hakobu.plan import cursor_type_problem

    problem = cursor_type_problem(ColumnInfo("c", data_type, column_type, True))
    assert (problem is None) == ok, problem
    assert cursor_type_problem(ColumnInfo("c", "longtext", "longtext", True, is_json=True))


UTC = dt.timezone.utc


def test_repeated_span_of_a_fall_back():
    from hakobu.keys import repeated_span

    ny = "America/New_York"
    start, end, back = repeated_span(ny, dt.datetime(2025, 11, 2, 1, 30))
    assert (start, end, back) == (dt.datetime(2025, 11, 2, 1), dt.datetime(2025, 11, 2, 2),
                                  dt.datetime(2025, 11, 2, 6, tzinfo=UTC))
    assert repeated_span(ny, dt.datetime(2025, 11, 2, 2, 0)) is None           # end: unique
    assert repeated_span(ny, dt.datetime(2025, 11, 2, 0, 59, 59)) is None
    assert repeated_span(ny, dt.datetime(2025, 3, 9, 2, 30)) is None           # spring gap
    assert repeated_span("Asia/Tokyo", dt.datetime(2025, 11, 2, 1, 30)) is None
    # a 30-minute fold (Lord Howe Island) and a zone whose clocks go back at 01:00 UTC
    assert repeated_span("Australia/Lord_Howe", dt.datetime(2025, 4, 6, 1, 45))[:2] == (
        dt.datetime(2025, 4, 6, 1, 30), dt.datetime(2025, 4, 6, 2))
    assert repeated_span("Europe/London", dt.datetime(2025, 10, 26, 1, 59, 59, 999999))[2] == \
        dt.datetime(2025, 10, 26, 1, tzinfo=UTC)


def test_fold_restart_re_reads_the_repeated_span_once_the_clock_went_back():
    from hakobu.keys import fold_restart

    ny = "America/New_York"
    specs = (column_spec(ColumnInfo("id", "bigint", "bigint(20)", False)),
             column_spec(ColumnInfo("updated_at", "datetime", "datetime(6)", True),
                         source_timezone=ny))
    p = plan(specs=specs)
    w = (dt.datetime(2025, 11, 2, 1, 35), 3)
    before = dt.datetime(2025, 11, 2, 5, 59, 59, tzinfo=UTC)     # 01:59:59 EDT
    after = dt.datetime(2025, 11, 2, 6, 30, tzinfo=UTC)          # 01:30 EST
    assert fold_restart(p, w, before) == w                       # not gone back yet
    assert fold_restart(p, w, after) == (dt.datetime(2025, 11, 2, 0, 59, 59, 999999), 3)
    assert fold_restart(p, w, after.isoformat()) == fold_restart(p, w, after)
    assert fold_restart(p, (dt.datetime(2025, 11, 2, 2, 0), 3), after)[0] == dt.datetime(
        2025, 11, 2, 2)                                          # past the span: as is
    assert fold_restart(p, (dt.datetime(2025, 11, 2, 0, 50), 3), after)[0].minute == 50
    assert fold_restart(p, None, after) is None and fold_restart(p, w, None) == w
    # TIMESTAMP cursors are UTC, DATE cursors are admitted only once the day is over
    for t in ("timestamp", "date"):
        s2 = (specs[0], column_spec(ColumnInfo("updated_at", t, t, True), source_timezone=ny))
        assert fold_restart(plan(specs=s2), w, after) == w
    tokyo = (specs[0], column_spec(ColumnInfo("updated_at", "datetime", "datetime", True),
                                   source_timezone="Asia/Tokyo"))
    assert fold_restart(plan(specs=tokyo), w, after) == w
