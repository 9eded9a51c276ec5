"""Pure planning: which rows, in which chunks, with which SQL. No database here.

Chunks are bounded keyset queries on (cursor, primary key), in the expanded form
`c > :c OR (c = :c AND (pk > :pk ...))`, which MariaDB drives from the index; the row-constructor
form `(c, pk) > (?, ?)` is not index-driven on MariaDB and OFFSET is quadratic, so neither is used.
A test runs EXPLAIN on every generated query.
"""

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal


from hakobu.errors import SchemaError
from hakobu.naming import table_name
from hakobu.sqlquote import mysql_literal, quote_ident
from hakobu.types import INT_TYPES, ColumnInfo, ColumnSpec

# MySQL's smallest valid DATE/DATETIME. Zero dates ('0000-00-00') and values with year 0 sort
# below it, but zero-in-date and invalid values of later years do NOT: MariaDB orders DATE and
# DATETIME by their packed fields, so '2026-00-10' and '2026-05-00' sort between valid dates
# ('2025-12-31' < '2026-00-10' < '2026-01-01') and `c >= MIN_DATETIME` is true for them
# (verified on MariaDB 10.11). See _guarded and zero_gaps.
MIN_DATETIME = dt.datetime(1000, 1, 1)
TEMPORAL = {"date", "datetime", "timestamp"}
# DATE and DATETIME can hold zero-in-date ('2026-00-10', '2026-05-00') and, under
# ALLOW_INVALID_DATES, invalid values ('2026-02-30'); all are delivered as NULL. TIMESTAMP cannot.
CIVIL_DATES = {"date", "datetime"}
# Cursor types whose order hakobu can reproduce exactly outside the server: numbers and times.
# Strings compare by collation in MySQL ('a' = 'A ' under a PAD SPACE _ci collation) and by code
# point in Python; floats have no exact successor. Those are refused (cursor_type_problem).
CURSOR_TYPES = INT_TYPES | {"decimal", "numeric"} | TEMPORAL
# The zeros pass finds zero-in-date values through one index range per month of every year the
# cursor holds (zero_gaps); past this many years it scans the cursor index instead.
MAX_GAP_YEARS = 100

Pass = Literal["main", "initial", "nulls", "zeros", "full"]
QUERY_BYTES = 64 * 2**20        # default size of one keyset query's result (see rows_per_query)
QUERY_ROWS_MAX = 2_000_000      # and at most this many rows (a few seconds of reading)


@dataclass(frozen=True)
class TablePlan:
    """Everything needed to read one tenant's table, fixed before the first read."""

    tenant: str
    schema: str
    table: str
    specs: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    cursor: str | None
    chunk_rows: int                     # rows per Arrow batch handed on (staged, accounted)
    tenant_column: str | None = None
    tenant_value: Any = None
    tenant_type: str | None = None      # the tenant column's MySQL DATA_TYPE (tenant_predicate)
    zero_dates: Literal["to_null", "fail"] = "to_null"
    full_replace: bool = False
    cursor_index: str | None = None     # the index starting with ([tenant column,] cursor)
    # The index whose leading columns are the primary key, in order: PRIMARY, or for a key
    # declared with primary_key: a UNIQUE (or any) index on those columns; None when there is
    # none (key-order reads then pin no index, and first loads read in cursor order).
    key_index: str | None = "PRIMARY"
    # Whether the source itself guarantees the key unique (PRIMARY, or a UNIQUE index on some
    # of the key's columns). A declared key that nothing enforces is checked for duplicates
    # before every complete read (hakobu.sync.refuse_duplicate_keys).
    key_enforced: bool = True
    query_rows: int | None = None       # rows per keyset query; None: from QUERY_BYTES
    row_bytes: int | None = None        # the server's average row length (information_schema)
    # Date columns are read through a guard that turns zero dates into NULL (types.py); the
    # guard costs the server ~5-10 % of a plain read. The connectorx reader reads without it
    # and falls back to it the moment a zero date arrives (resources/mysql_source.iter_chunks).
    guard_zero_dates: bool = True
    verify_every: int = 7               # nights per full content-verification rotation
    # The years the (DATE/DATETIME) cursor holds at or above MIN_DATETIME, from the source at
    # planning: the zeros pass reads zero-in-date values through the month gaps of these years
    # only (zero_gaps). None: unknown or too many — the zeros pass scans the cursor index.
    cursor_years: tuple[int, ...] | None = None
    # Why a table with a cursor is read whole every night (hakobu.planning.full_read_reason:
    # the tenant's rows are smaller than full_read_below_kib); None: read from its watermark.
    full_read: str | None = None
    spec_by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "spec_by_name", {s.name: s for s in self.specs})

    @property
    def bq_table(self) -> str:
        """The BigQuery table (and Dagster asset-key part) it lands in (hakobu.naming)."""
        return table_name(self.table)

    def bq(self, name: str) -> str:
        """The BigQuery name of one of the plan's columns."""
        return self.spec(name).bq_name

    @property
    def rows_per_query(self) -> int:
        """The LIMIT of one keyset query. Its result streams to the client and is handed on in
        chunks of chunk_rows as it arrives, so the server and the client work at the same time
        instead of taking turns per chunk. connectorx reads a query's rows ahead of a consumer
        that is busy (a MERGE, say) without bound, so a query is bounded in bytes: about
        HAKOBU_QUERY_BYTES (64 MiB) of the table's average row length, at least one chunk,
        at most QUERY_ROWS_MAX rows. `query_rows:` in the tenant file sets it outright, and
        HAKOBU_QUERY_CHUNKS=n (tests) makes it n chunks."""
        import os

        if self.query_rows is not None:
            return max(self.query_rows, self.chunk_rows)
        chunks = int(os.environ.get("HAKOBU_QUERY_CHUNKS") or 0)
        if chunks > 0:
            return self.chunk_rows * chunks
        budget = int(os.environ.get("HAKOBU_QUERY_BYTES") or QUERY_BYTES)
        rows = budget // max(self.row_bytes or 1024, 64)
        return max(self.chunk_rows, min(rows, QUERY_ROWS_MAX))

    @property
    def incremental(self) -> bool:
        """Read from a watermark (the main, nulls and zeros passes), not whole every run."""
        return self.cursor is not None and not self.full_replace and not self.full_read

    @property
    def cursor_is_temporal(self) -> bool:
        return self.cursor is not None and self.spec(self.cursor).info.data_type in TEMPORAL

    def spec(self, name: str) -> ColumnSpec:
        return self.spec_by_name[name]

    @property
    def initial_in_pk_order(self) -> bool:
        """An initial load reads in primary-key order (sequential on the clustered index) rather
        than through the cursor index (one random lookup per row), unless the table is shared
        and its key does not start with the tenant column (a pk scan would read every tenant),
        or no index is ordered by the key (a declared primary_key without one: every query
        would scan and sort the whole table, so the cursor index reads it instead)."""
        if not self.primary_key or self.cursor is None or self.key_index is None:
            return False
        return self.tenant_column is None or self.primary_key[0] == self.tenant_column

    def key_columns(self, pass_: Pass) -> tuple[str, ...]:
        if pass_ == "main":
            return (self.cursor, *self.primary_key)
        return self.primary_key

    @property
    def has_zero_guards(self) -> bool:
        return any(s.zero_guarded for s in self.specs)

    @property
    def zero_flag_columns(self) -> list[tuple[int, ColumnSpec]]:
        if self.zero_dates != "fail" or not self.guard_zero_dates:
            return []
        return [(i, s) for i, s in enumerate(self.specs) if s.zero_guarded]


class _Nothing:
    """An upper bound below every cursor value: this run reads no row through the cursor.

    Returned for a numeric cursor when the bound is held (an open writer may still commit a
    value below anything we could read past) and there is no watermark to hold it at."""

    def __repr__(self) -> str:
        return "nothing (held)"

    __str__ = __repr__


NOTHING = _Nothing()


def cursor_type_problem(info: ColumnInfo) -> str | None:
    """Why a column cannot be a cursor, or None. Keyset reads and watermarks compare cursor
    values outside the server (common_start, max_key_below, the next bound): that is exact for
    integers, DECIMAL and dates/times, and wrong for strings (MySQL compares them by collation,
    PAD SPACE and case-insensitively; Python and Arrow by code point), binary, floats (no exact
    successor, rounding on the way back as a literal), JSON, BIT, ENUM/SET (compared by index
    in MySQL) and the rest."""
    t = info.data_type.lower()
    if info.is_json or t not in CURSOR_TYPES:
        return (f"type {info.column_type!r} cannot be a cursor: only integer, DECIMAL, DATE, "
                "DATETIME and TIMESTAMP cursors are compared the same way in MySQL and in hakobu")
    return None


def just_above(spec: ColumnSpec, value: Any) -> Any:
    """The smallest value of a numeric cursor's type above `value`: an exclusive bound that
    admits `value` and nothing newer (DECIMAL(12,2): 10.00 -> 10.01, not 11.00)."""
    if isinstance(value, Decimal) or spec.info.data_type in {"decimal", "numeric"}:
        return Decimal(value) + Decimal(1).scaleb(-(spec.info.scale or 0))
    return int(value) + 1


SRC = "_src"  # table alias: WHERE and ORDER BY name columns, never the SELECT's aliases


def col_ref(name: str) -> str:
    """A column of the source table, qualified so it can never resolve to a SELECT alias
    (ORDER BY `c` would sort by the zero-date guard expression aliased `c`: a filesort)."""
    return f"{SRC}.{quote_ident(name)}"


INT_TYPES = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
STRING_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
BYTES_TYPES = {"binary", "varbinary"}


def tenant_value_problem(data_type: str, value: Any) -> str | None:
    """Why `value` cannot select a tenant's rows by a column of `data_type`, or None.

    MySQL compares across types by converting silently: `'1x' = 1`, `'01' = 1` and `'1 ' = 1`
    are all true for a VARCHAR column compared with the integer 1, and an INT column compared
    with the string '1x' matches 1. A tenant_value of another type than its column would read
    other tenants' rows, so the value must have the column's own type: an integer for an
    integer column, a string for a string (or binary) column."""
    t = data_type.lower()
    if t in INT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            return (f"is {type(value).__name__} {value!r}, but the column is an integer column "
                    f"({t}): MySQL would compare it as a number and match other values")
        return None
    if t in STRING_TYPES or t in BYTES_TYPES:
        if not isinstance(value, str):
            return (f"is {type(value).__name__} {value!r}, but the column is a string column "
                    f"({t}): MySQL would compare the column as a number, so '0{value}', "
                    f"'{value} ' and '{value}x' would match too")
        return None
    return (f"selects by a {t} column; tenant columns must be integer or string (CHAR, "
            "VARCHAR, ENUM, BINARY...) columns")


def tenant_predicate(plan: "TablePlan") -> str:
    """The WHERE condition that selects the plan's tenant in a shared table, compared in the
    column's own type, so a tenant can never read another tenant's rows:
    - an integer column with an integer literal (`_src.t = 3`);
    - a string column with a string literal and also byte for byte, because the column's
      collation would otherwise make 'acme' match 'ACME' and, under PAD SPACE collations,
      'acme ': `_src.t = 'acme' AND CAST(CONVERT(_src.t USING utf8mb4) AS BINARY) = X'61636d65'`
      (the first half drives the (tenant, cursor) index, the second filters exactly; the
      column is converted to utf8mb4 first so a latin1 column compares its characters, not
      its encoding);
    - a binary column with the value's UTF-8 bytes (binary columns already compare bytes).
    A value of another type than its column is refused (plan_table does so before any read,
    naming the tenant file; here it is a last guard)."""
    col = col_ref(plan.tenant_column)
    value, t = plan.tenant_value, plan.tenant_type
    if t is None and plan.tenant_column in plan.spec_by_name:
        t = plan.spec(plan.tenant_column).info.data_type
    if t is None:
        raise SchemaError(f"the type of tenant column {plan.tenant_column!r} is unknown",
                          tenant=plan.tenant, table=plan.table,
                          hint="internal: plans come from hakobu.planning.plan_table, which "
                               "reflects it")
    t = t.lower()
    problem = tenant_value_problem(t, value)
    if problem:
        raise SchemaError(f"tenant_value {problem}", tenant=plan.tenant, table=plan.table,
                          hint="write tenant_value in the tenant file with the tenant column's "
                               "own type")
    if t in INT_TYPES:
        return f"{col} = {int(value)}"
    if t in BYTES_TYPES:
        return f"{col} = {mysql_literal(value.encode('utf-8'))}"
    exact = "X'" + value.encode("utf-8").hex() + "'" if value else "''"
    return (f"{col} = {mysql_literal(value)} AND "
            f"CAST(CONVERT({col} USING utf8mb4) AS BINARY) = {exact}")


def keyset_after(columns: tuple[str, ...], values: tuple) -> str:
    """`a > x OR (a = x AND (b > y OR (b = y AND c > z)))`: strictly after (x, y, z)."""
    col = col_ref(columns[0])
    lit = mysql_literal(values[0])
    if len(columns) == 1:
        return f"{col} > {lit}"
    rest = keyset_after(columns[1:], values[1:])
    return f"{col} > {lit} OR ({col} = {lit} AND ({rest}))"


def zero_gaps(data_type: str, years: tuple[int, ...]) -> list[tuple[Any, Any]]:
    """Open intervals (lo, hi) of a DATE/DATETIME index between the end of one month and the
    start of the next, for the given years: exactly where zero-in-date and invalid values of
    those years sort ('2026-05-00' and '2026-04-31' lie after '2026-04-30 23:59:59' and before
    '2026-05-01'; '2026-00-10' after '2025-12-31 23:59:59' and before '2026-01-01'). lo is the
    month's last second (a DATETIME(6) value within it is filtered out again by the
    deliverability test), so each interval is an index range of only such values."""
    out = []
    for y in years:
        for m in range(1, 13):
            first = dt.date(y, m, 1)
            last = first - dt.timedelta(days=1)
            if data_type == "date":
                out.append((last, first))
            else:
                out.append((dt.datetime.combine(last, dt.time(23, 59, 59)),
                            dt.datetime.combine(first, dt.time())))
    return out


def splittable(plan: TablePlan) -> bool:
    """Parallel pk-range reads need a single integer primary key, and an index on it (each
    range, and its MIN/MAX, is an index range)."""
    return (len(plan.primary_key) == 1 and plan.key_index is not None
            and plan.spec(plan.primary_key[0]).info.data_type in
            {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})


def pk_ranges(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """Split [lo, hi] into up to `parts` half-open ranges [a, b) covering it exactly."""
    if hi < lo:
        return []
    parts = max(1, min(parts, hi - lo + 1))
    step = -(-(hi - lo + 1) // parts)
    return [(a, min(a + step, hi + 1)) for a in range(lo, hi + 1, step)]
