"""MariaDB/MySQL SQL text shared by the source's readers, bounds and checks."""

import datetime as dt
from typing import Any

from hakobu.plan import (
    CIVIL_DATES,
    MIN_DATETIME,
    NOTHING,
    SRC,
    Pass,
    TablePlan,
    col_ref,
    keyset_after,
    tenant_predicate,
    zero_gaps,
)
from hakobu.sqlquote import mysql_literal, quote_ident
from hakobu.types import zero_flag_select

SESSION_INIT = "SET time_zone = '+00:00'"


def _from(plan: TablePlan) -> str:
    return f"{_q(plan.schema)}.{_q(plan.table)} AS {SRC}"


def _tenant_where(plan: TablePlan) -> str:
    """The tenant's rows of a shared table, compared in the column's own type (plan.py)."""
    return f" WHERE {tenant_predicate(plan)}" if plan.tenant_column else ""


def _q(name: str) -> str:
    return quote_ident(name)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def chunk_sql(plan: TablePlan, pass_: Pass, after: tuple | None, upper: Any = None,
              pk_range: tuple[int, int] | None = None) -> str:
    """The SELECT for the next chunk of a pass.

    main:  rows with a deliverable cursor, (cursor, pk) > after, cursor < upper (exclusive),
           ordered by key.
    initial: the first load: the main pass's rows (cursor < upper) in primary-key order.
    nulls: rows whose cursor is NULL, pk > after (re-read every run; within NULL the cursor
           index is ordered by pk, so no sort).
    zeros: rows whose temporal cursor is delivered as NULL — zero dates, zero-in-date and
           invalid values ('0000-00-00', '2026-00-10', '2026-05-00', '2026-02-30') — and valid
           values below MIN_DATETIME, pk > after (re-read every run; the cursor index selects
           only them, they are sorted by pk — they should be rare).
    full:  every row, pk > after (tables without a cursor).

    Every row with a non-NULL cursor is in exactly one of main and zeros: main requires what
    zeros excludes (`c >= MIN_DATETIME` and a deliverable value). So a main-pass key never holds
    a NULL cursor, and a watermark never does. `upper` NOTHING reads no row (a held bound).

    The access path is pinned with FORCE INDEX: on an initial load the range covers the whole
    table and the optimizer may otherwise choose a full scan + filesort of every row per chunk,
    which is what fills the source's temp space.
    """
    selects = [s.select_sql if plan.guard_zero_dates else s.plain_sql for s in plan.specs]
    selects += [zero_flag_select(s, i) for i, s in plan.zero_flag_columns]
    where = []
    if plan.tenant_column is not None:
        where.append(tenant_predicate(plan))
    keys = plan.key_columns(pass_)
    if pass_ in ("main", "initial"):
        c = col_ref(plan.cursor)
        if plan.cursor_is_temporal:
            where.append(f"{c} >= {mysql_literal(MIN_DATETIME)}")
            if plan.spec(plan.cursor).info.data_type in CIVIL_DATES:
                where.append(f"{_guarded(plan)} IS NOT NULL")
        else:
            where.append(f"{c} IS NOT NULL")
        if upper is NOTHING:
            where.append("FALSE")
        elif upper is not None:
            where.append(f"{c} < {mysql_literal(upper)}")
    elif pass_ == "nulls":
        where.append(f"{col_ref(plan.cursor)} IS NULL")
    elif pass_ == "zeros":
        where.append(_zeros_where(plan))
    if pk_range is not None:            # one split of a parallel read: lo <= pk < hi
        pk = col_ref(plan.primary_key[0])
        where.append(f"{pk} >= {mysql_literal(pk_range[0])} AND {pk} < {mysql_literal(pk_range[1])}")
    if after is not None:
        where.append(f"({keyset_after(keys, after)})")
    sql = (f"SELECT {', '.join(selects)} FROM {quote_ident(plan.schema)}.{quote_ident(plan.table)}"
           f" AS {SRC}{_force_index(plan, pass_)}"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY {', '.join(col_ref(k) + ' ASC' for k in keys)}"
           + f" LIMIT {int(plan.rows_per_query)}")
    return sql


def duplicate_key_sql(plan: TablePlan) -> str:
    """The first key value held by more than one of the tenant's rows, with its count. A MERGE
    on a key that is not unique would collapse those rows into one (or, across runs, overwrite
    one with the other), and keyset reads (`key > last`) would skip the second of a pair that
    straddles two queries — so a declared key that no index enforces is checked before every
    complete read. Along the key's index when it has one (no temp table), else a scan."""
    keys = ", ".join(col_ref(k) for k in plan.primary_key)
    hint = (f" FORCE INDEX ({quote_ident(plan.key_index)})"
            if plan.key_index not in (None, "PRIMARY") else "")
    where = f" WHERE {tenant_predicate(plan)}" if plan.tenant_column is not None else ""
    return (f"SELECT {keys}, COUNT(*) AS n FROM {quote_ident(plan.schema)}."
            f"{quote_ident(plan.table)} AS {SRC}{hint}{where} GROUP BY {keys} "
            "HAVING COUNT(*) > 1 LIMIT 1")


def _guarded(plan: TablePlan) -> str:
    """The cursor through the zero-date guard: NULL for zero dates, zero-in-date and invalid
    values. The same date arithmetic as the delivered column (types._zero_guard), so "read by
    the main pass" and "delivered with a non-NULL cursor" are one and the same condition."""
    unit = "DAY" if plan.spec(plan.cursor).info.data_type == "date" else "SECOND"
    return f"({col_ref(plan.cursor)} + INTERVAL 0 {unit})"


def _zeros_where(plan: TablePlan) -> str:
    """The zeros pass: everything the main pass leaves out of non-NULL cursors. Values below
    MIN_DATETIME are one index range; zero-in-date values of later years sit in the month gaps
    of the years the cursor holds (zero_gaps), one small range each. Without the year list the
    condition scans the cursor index (correct, costlier)."""
    c = col_ref(plan.cursor)
    low = f"{c} < {mysql_literal(MIN_DATETIME)}"
    data_type = plan.spec(plan.cursor).info.data_type
    if data_type not in CIVIL_DATES:
        return low
    bad = f"{_guarded(plan)} IS NULL"
    if plan.cursor_years is None:
        return f"({low} OR ({c} IS NOT NULL AND {bad}))"    # (NULL is the nulls pass's)
    if not plan.cursor_years:
        return low
    gaps = " OR ".join(f"({c} > {mysql_literal(lo)} AND {c} < {mysql_literal(hi)})"
                       for lo, hi in zero_gaps(data_type, plan.cursor_years))
    return f"({low} OR (({gaps}) AND {bad}))"


def replace_sql(plan: TablePlan) -> str:
    """The single streamed SELECT of a table without a primary key (full atomic replace)."""
    selects = [s.select_sql for s in plan.specs]
    selects += [zero_flag_select(s, i) for i, s in plan.zero_flag_columns]
    where = ""
    if plan.tenant_column is not None:
        where = f" WHERE {tenant_predicate(plan)}"
    return (f"SELECT {', '.join(selects)} FROM {quote_ident(plan.schema)}."
            f"{quote_ident(plan.table)} AS {SRC}{where}")


def _force_index(plan: TablePlan, pass_: Pass) -> str:
    if pass_ in ("full", "initial"):
        if plan.full_replace or plan.key_index is None:
            return ""
        if plan.key_index == "PRIMARY":
            return " FORCE INDEX (PRIMARY)"
        return f" FORCE INDEX ({quote_ident(plan.key_index)})"
    if plan.cursor_index:
        return f" FORCE INDEX ({quote_ident(plan.cursor_index)})"
    return ""


def count_sql(plan: TablePlan) -> tuple[str, dict]:
    """The cheap total for progress: a shared table's COUNT of the tenant's rows (an index range
    on the tenant column), else the InnoDB estimate from information_schema (no scan at all)."""
    if plan.tenant_column is not None:
        return (f"SELECT COUNT(*) FROM {quote_ident(plan.schema)}.{quote_ident(plan.table)} "
                f"AS {SRC} WHERE {tenant_predicate(plan)}", {})
    return ("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s "
            "AND TABLE_NAME = :t", {"s": plan.schema, "t": plan.table})
