"""Pure planning: which rows, in which chunks, with which SQL. No database here.

Chunks are bounded keyset queries on (cursor, primary key), in the expanded form
`c > :c OR (c = :c AND (pk > :pk ...))`, which MariaDB drives from the index; the row-constructor
form `(c, pk) > (?, ?)` is not index-driven on MariaDB and OFFSET is quadratic, so neither is used.
A test runs EXPLAIN on every generated query.
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from hakobu.sqlquote import mysql_literal, quote_ident
from hakobu.types import ColumnSpec, zero_flag_select

# MySQL's smallest valid DATE/DATETIME; zero dates ('0000-00-00') and zero-in-date values sort
# below it, so `c >= MIN_DATETIME` is index-driven and excludes them.
MIN_DATETIME = dt.datetime(1000, 1, 1)
TEMPORAL = {"date", "datetime", "timestamp"}

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
    spec_by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "spec_by_name", {s.name: s for s in self.specs})

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
    from hakobu.errors import SchemaError

    col = col_ref(plan.tenant_column)
    value, t = plan.tenant_value, plan.tenant_type
    if t is None and plan.tenant_column in plan.spec_by_name:
        t = plan.spec(plan.tenant_column).info.data_type
    if t is None:
        raise SchemaError(f"the type of tenant column {plan.tenant_column!r} is unknown",
                          tenant=plan.tenant, table=plan.table,
                          hint="internal: plans come from MySQLSource.plan_table, which "
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


def chunk_sql(plan: TablePlan, pass_: Pass, after: tuple | None, upper: Any = None,
              pk_range: tuple[int, int] | None = None) -> str:
    """The SELECT for the next chunk of a pass.

    main:  rows with a cursor, (cursor, pk) > after, cursor < upper (exclusive), ordered by key.
    initial: the first load: the main pass's rows (cursor < upper) in primary-key order.
    nulls: rows whose cursor is NULL, pk > after (re-read every run; within NULL the cursor
           index is ordered by pk, so no sort).
    zeros: rows whose temporal cursor is a zero date, pk > after (re-read every run; the
           cursor index selects only them, they are sorted by pk — they should be rare).
    full:  every row, pk > after (tables without a cursor).

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
        else:
            where.append(f"{c} IS NOT NULL")
        if upper is not None:
            where.append(f"{c} < {mysql_literal(upper)}")
    elif pass_ == "nulls":
        where.append(f"{col_ref(plan.cursor)} IS NULL")
    elif pass_ == "zeros":
        where.append(f"{col_ref(plan.cursor)} < {mysql_literal(MIN_DATETIME)}")
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


def max_key_below(plan: TablePlan, batch: pa.Table, upper: Any) -> tuple | None:
    """The largest (cursor, pk) among rows of a pk-ordered read whose cursor is below the run's
    upper bound: after a complete read of the table, the watermark it may advance to. Works on
    the key columns only and copies nothing but the few rows at the top cursor value."""
    import pyarrow.compute as pc

    if batch.num_rows == 0 or plan.cursor is None:
        return None
    cur = batch.column(plan.cursor)
    spec = plan.spec(plan.cursor)
    mask = pc.is_valid(cur)
    if upper is not None:
        bound = pa.scalar(_to_delivered(spec, upper), type=cur.type)
        mask = pc.and_(mask, pc.less(cur, bound))
    top = pc.max(cur.filter(mask))
    if not top.is_valid:
        return None
    at_top = pc.indices_nonzero(pc.and_(mask, pc.equal(cur, top)))
    rows = batch.select(list(plan.primary_key)).take(at_top)
    idx = pc.sort_indices(rows, sort_keys=[(k, "descending") for k in plan.primary_key])[0]
    row = rows.take([idx.as_py()])
    return (to_source_value(spec, top.as_py()),
            *(to_source_value(plan.spec(k), row.column(k)[0].as_py()) for k in plan.primary_key))


def _to_delivered(spec: ColumnSpec, value: Any) -> Any:
    """The run's upper bound (source terms) in the delivered Arrow terms of the cursor."""
    if isinstance(value, dt.datetime) and spec.arrow_type.tz is not None:
        if spec.datetime_as_timestamp:
            from zoneinfo import ZoneInfo

            return value.replace(tzinfo=ZoneInfo(spec.source_timezone))
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def last_key(plan: TablePlan, batch: pa.Table, pass_: Pass) -> tuple:
    """The key of the last row of a chunk, as typed values that render back into MySQL SQL."""
    row = batch.num_rows - 1
    out = []
    for name in plan.key_columns(pass_):
        value = batch.column(name)[row].as_py()
        out.append(to_source_value(plan.spec(name), value))
    return tuple(out)


def to_source_value(spec: ColumnSpec, value: Any) -> Any:
    """A delivered (Arrow/Python) value back in the source's terms, for keyset comparisons."""
    if value is None:
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        if spec.datetime_as_timestamp:
            from zoneinfo import ZoneInfo

            return value.astimezone(ZoneInfo(spec.source_timezone)).replace(tzinfo=None)
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)  # UTC session
    return value
