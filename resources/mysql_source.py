"""The MySQL source: reflection and control queries (SQLAlchemy + pymysql), bulk chunk reads.

Reads are short, bounded keyset queries whose results stream to the client — never a server-side
cursor (no temp table on the server), never OFFSET. Two readers execute the same SQL text:
- "connectorx" (default): Rust, decodes straight into Arrow (~12x pymysql here, DESIGN.md §4);
- "pymysql": pure Python, identical results (a test proves it), a fallback for odd servers.
Every session runs with time_zone '+00:00' so TIMESTAMP values arrive as UTC.
"""

import contextlib
import dataclasses
import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import URL

from hakobu import stop as stopping
from hakobu.config import Cluster, Table, Tenant
from hakobu.errors import (CursorTypeError, HakobuError, SchemaError, SourceError,
                           SourceUnavailable, TypeContractError)
from hakobu.plan import (CIVIL_DATES, INT_TYPES, MAX_GAP_YEARS, MIN_DATETIME, NOTHING, SRC,
                         TablePlan, col_ref, cursor_type_problem, just_above, tenant_predicate,
                         tenant_value_problem)
from hakobu.types import ZERO_FLAG_PREFIX, ColumnInfo, column_spec, conform, python_column
from resources import rust_panics

SESSION_INIT = "SET time_zone = '+00:00'"


def system_to_utc_sql(expr: str) -> str:
    """SQL turning a DATETIME in the server's *system* time zone into UTC, in any session.

    INNODB_TRX.trx_started is such a value, whatever the session's time_zone says (hakobu's
    sessions say +00:00, so UNIX_TIMESTAMP(trx_started) alone is off by the system zone's
    offset: 9 h in the future on a JST host, and an open transaction never held the bound).
    CONVERT_TZ from 'SYSTEM' needs no time-zone tables. In a fall-back hour the civil value is
    ambiguous; LEAST with the value an hour earlier, shifted back, takes the earlier reading, so
    the result is never later than the true instant (at worst an hour early, an hour a year;
    zones whose clocks go back by more than an hour are not covered)."""
    return (f"LEAST(CONVERT_TZ({expr}, 'SYSTEM', '+00:00'), "
            f"CONVERT_TZ({expr} - INTERVAL 1 HOUR, 'SYSTEM', '+00:00') + INTERVAL 1 HOUR)")


# Open transactions that have written or locked rows (consistent reads take no locks and cannot
# hold rows stamped below a bound), with their start as a unix time never later than the true
# one (trx_started has whole seconds, truncated). Our own row tells whether the answer is fresh:
# INNODB_TRX is served from a cache that InnoDB refills only when nobody read it for 100 ms
# (sessions polling it faster keep it stale for good; measured on MariaDB 10.11), so a listing
# can lack a transaction that began just before it. The query runs inside our own transaction
# and carries a nonce: only a refill made during this very query shows the nonce in our row's
# trx_query.
OPEN_TRX_SQL = (
    "SELECT /* hakobu-open-trx {nonce} */ trx_id, "
    f"UNIX_TIMESTAMP({system_to_utc_sql('trx_started')}), "
    "trx_mysql_thread_id = CONNECTION_ID() AND LOCATE('{nonce}', trx_query) > 0, "
    "trx_mysql_thread_id <> CONNECTION_ID() AND trx_autocommit_non_locking = 0 "
    "AND (trx_rows_modified > 0 OR trx_lock_structs > 0) "
    "FROM information_schema.INNODB_TRX")
TRX_CACHE_S = 0.11          # InnoDB refills the INNODB_TRX cache after 100 ms without readers
TRX_FRESH_TIMEOUT_S = 5.0   # then give up (transient): someone reads INNODB_TRX non-stop


def writer_wait_seconds() -> float:
    """How long a numeric-cursor bound waits for the writers that were open when it read the
    cursor's MAX (HAKOBU_WRITER_WAIT_SECONDS, default 10 s): usually milliseconds."""
    return float(os.environ.get("HAKOBU_WRITER_WAIT_SECONDS") or 10)


def _malloc_trim():
    """glibc keeps memory freed by connectorx's threads in per-thread arenas; giving it back
    after each chunk keeps peak RSS flat (bench: 340 → 217 MiB). A no-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda pad: 0


_TRIM = _malloc_trim()
STREAM_BATCH_ROWS = 16_384   # rows per batch connectorx decodes
TRIM_EVERY = int(os.environ.get("HAKOBU_TRIM_EVERY", "4"))
READERS = ("connectorx", "pymysql")


# the tenant-file key a plan_table error is about (hakobu validate prints its line)
_ROLE_KEYS = {"cursor": ("cursor",), "primary key": ("primary_key",), "excluded": ("exclude",),
              "tenant": ("source", "tenant_column")}


def at_key(exc: HakobuError, *key: str) -> HakobuError:
    """Mark an error with the tenant-file key it is about: `("cursor",)` for a key of the
    table's entry, `("source", "tenant_value")` for one of the tenant's source."""
    exc.config_key = key
    return exc


@dataclass(frozen=True)
class Reflected:
    columns: list[ColumnInfo]
    primary_key: list[str]
    indexes: dict[str, list[str]]      # index name → columns in order
    row_bytes: int | None = None       # AVG_ROW_LENGTH (an estimate; None when unknown)
    unique: frozenset[str] = frozenset()   # names of the UNIQUE indexes (PRIMARY included)


class MySQLSource:
    """One source cluster. Thread-safe: the engine pools connections; readers open their own."""

    def __init__(self, cluster: Cluster, *, reader: str | None = None,
                 datetime_as: str = "datetime"):
        self.cluster = cluster
        self.reader = reader or os.environ.get("HAKOBU_READER", "connectorx")
        if self.reader not in READERS:
            raise SourceError(f"unknown reader {self.reader!r}", hint=f"use one of {READERS}")
        self.datetime_as = datetime_as
        self._password = cluster.password()
        self._engine: sa.Engine | None = None
        self._zero_dated: set[tuple[str, str]] = set()   # (schema, table) known to hold some
        self._stuck: set[int] = set()    # writers a bound already waited for in vain (trx ids)
        self._trx_lock = threading.Lock()
        self._trx_read_at = 0.0          # monotonic time of our last INNODB_TRX read
        self._trx_snapshot: tuple[float, dict[int, float]] | None = None  # (asked at, writers)

    def has_zero_dates(self, plan: TablePlan) -> bool:
        return (plan.schema, plan.table) in self._zero_dated

    def saw_zero_dates(self, plan: TablePlan) -> None:
        self._zero_dated.add((plan.schema, plan.table))

    # -- connections ----------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            url = URL.create("mysql+pymysql", username=self.cluster.user,
                             password=self._password.reveal() or None,
                             host=self.cluster.host, port=self.cluster.port,
                             query={"charset": "utf8mb4"})
            self._engine = sa.create_engine(
                url, pool_pre_ping=True, pool_size=self.cluster.read_budget.max_connections,
                max_overflow=2, hide_parameters=True,
                connect_args={"init_command": SESSION_INIT, "connect_timeout": 10,
                              "read_timeout": 600, "write_timeout": 600})
        return self._engine

    def raw_connect(self):
        """A dedicated autocommit connection (not pooled), e.g. to hold a named lock."""
        import pymysql

        return pymysql.connect(host=self.cluster.host, port=self.cluster.port,
                               user=self.cluster.user, password=self._password.reveal(),
                               charset="utf8mb4", autocommit=True, connect_timeout=10)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _cx_url(self) -> str:
        pw = quote(self._password.reveal(), safe="")
        auth = quote(self.cluster.user, safe="") + (f":{pw}" if pw else "")
        return f"mysql://{auth}@{self.cluster.host}:{self.cluster.port}"

    def _redact(self, text: str) -> str:
        secret = self._password.reveal()
        if secret:
            text = text.replace(secret, "****").replace(quote(secret, safe=""), "****")
        return text

    @contextlib.contextmanager
    def _errors(self, what: str, tenant: str | None = None, table: str | None = None):
        """Turn driver errors into hakobu errors, transient or terminal, with secrets removed."""
        from hakobu.errors import HakobuError, is_transient, mysql_failure

        try:
            yield
        except HakobuError:
            raise
        except Exception as exc:
            where = f"{self.cluster.host}:{self.cluster.port} (cluster {self.cluster.name!r})"
            known = mysql_failure(exc, where, self.cluster.user, self.cluster.password_env)
            if known is not None:        # away or refused: say so, and what to do
                known.message = self._redact(known.message)
                known.tenant, known.table = tenant, table
                raise known from exc
            msg = self._redact(f"{type(exc).__name__}: {exc}")
            cls = SourceUnavailable if is_transient(exc) else SourceError
            raise cls(f"{what} on {where} failed: {msg}", tenant=tenant, table=table,
                      hint="check that the server is reachable and the user may read"
                      if cls is SourceUnavailable else None) from exc

    def ping(self) -> None:
        with self._errors("connecting"), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def query(self, sql: str, params: dict | None = None) -> list[sa.Row]:
        with self._errors("query"), self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params or {}))

    # -- reflection -----------------------------------------------------------------------

    def reflect(self, schema: str, table: str) -> Reflected | None:
        with self._errors("reflecting", table=f"{schema}.{table}"), self.engine.connect() as c:
            cols = c.execute(sa.text(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, "
                "NUMERIC_SCALE, DATETIME_PRECISION FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"),
                {"s": schema, "t": table}).all()
            if not cols:
                return None
            json_cols = self._json_columns(c, schema, table, [r[0] for r in cols])
            stats = c.execute(sa.text(
                "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t ORDER BY INDEX_NAME, SEQ_IN_INDEX"),
                {"s": schema, "t": table}).all()
            avg = c.execute(sa.text(
                "SELECT AVG_ROW_LENGTH FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t"), {"s": schema, "t": table}).scalar()
        indexes: dict[str, list[str]] = {}
        for name, col, _ in stats:
            indexes.setdefault(name, []).append(col)
        unique = frozenset(name for name, _, non_unique in stats if not int(non_unique))
        columns = [ColumnInfo(name=r[0], data_type=r[1].lower(), column_type=r[2],
                              nullable=r[3] == "YES", precision=r[4], scale=r[5],
                              datetime_precision=r[6],
                              is_json=r[1].lower() == "json" or r[0] in json_cols)
                   for r in cols]
        return Reflected(columns, indexes.get("PRIMARY", []), indexes,
                         int(avg) if avg else None, unique)

    @staticmethod
    def _json_columns(conn, schema: str, table: str, names: list[str]) -> set[str]:
        """MariaDB stores JSON as LONGTEXT with a json_valid() check; find those columns."""
        try:
            clauses = [r[0] for r in conn.execute(sa.text(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = :s AND TABLE_NAME = :t"),
                {"s": schema, "t": table}).all()]
        except sa.exc.DBAPIError:
            return set()
        out = set()
        for name in names:
            needle = f"json_valid(`{name}`)".lower()
            if any(needle in (cl or "").lower() for cl in clauses):
                out.add(name)
        return out

    def plan_table(self, tenant: Tenant, table: Table) -> TablePlan:
        """Reflect the table and check it against the tenant file; every problem is a SchemaError
        naming tenant and table and what to do. Nothing is read or written yet."""
        schema = tenant.source.schema_
        t, name = tenant.tenant, table.name
        refl = self.reflect(schema, name)
        if refl is None:
            raise SchemaError(f"table {schema}.{name} does not exist on cluster "
                              f"{self.cluster.name!r}", tenant=t, table=name,
                              hint=f"fix or remove the table in {tenant.file}")
        by_name = {c.name.lower(): c for c in refl.columns}

        def need(col: str, role: str) -> str:
            if col.lower() not in by_name:
                raise at_key(SchemaError(
                    f"{role} column {col!r} does not exist in {schema}.{name}",
                    tenant=t, table=name,
                    hint=f"columns are: {', '.join(c.name for c in refl.columns)}; "
                         f"fix {tenant.file}"), *_ROLE_KEYS[role])
            return by_name[col.lower()].name

        excluded = {need(c, "excluded").lower() for c in table.exclude}
        cursor = need(table.cursor, "cursor") if table.cursor else None
        tcol = need(tenant.source.tenant_column, "tenant") if tenant.source.shared else None
        ttype = by_name[tcol.lower()].data_type if tcol else None
        if tcol:
            problem = tenant_value_problem(ttype, tenant.source.tenant_value)
            if problem:
                value = tenant.source.tenant_value
                fix = (f'tenant_value: "{value}" (quoted)' if isinstance(value, int)
                       else "an unquoted integer" if ttype in INT_TYPES
                       else "a value of the column's type")
                raise at_key(SchemaError(
                    f"source.tenant_value for tenant column {tcol!r} of {schema}.{name} "
                    f"{problem}; the tenant could receive another tenant's rows",
                    tenant=t, table=name, hint=f"write {fix} in {tenant.file}"),
                    "source", "tenant_value")
        pk = [need(c, "primary key") for c in table.primary_key] if table.primary_key \
            else list(refl.primary_key)
        if table.primary_key:
            nullable = [c for c in pk if by_name[c.lower()].nullable]
            if nullable:
                raise at_key(SchemaError(
                    f"declared primary key column(s) {nullable} of {schema}.{name} can be NULL: "
                    "a NULL key never matches in the MERGE (NULL = NULL is not true), so such "
                    "a row would be inserted again on every run, and rows whose keys differ "
                    "only by NULL could not be told apart", tenant=t, table=name,
                    hint=f"make them NOT NULL in MySQL (ALTER TABLE {schema}.{name} MODIFY "
                         f"{nullable[0]} ... NOT NULL) or declare NOT NULL columns that "
                         f"identify a row as primary_key: in {tenant.file}"), "primary_key")
        key_index, key_enforced = self._key_index(refl, pk)
        full_replace = False
        if not pk:
            if table.without_primary_key != "replace":
                raise SchemaError(
                    f"{schema}.{name} has no primary key, so rows cannot be merged idempotently",
                    tenant=t, table=name,
                    hint="add a primary key in MySQL, declare a unique column set with "
                         "primary_key: [...], or set without_primary_key: replace "
                         "(the table is then reloaded in full and swapped in atomically)")
            full_replace = True
        cursor_index = None
        if cursor and not full_replace:
            problem = cursor_type_problem(by_name[cursor.lower()])
            if problem:
                raise CursorTypeError(
                    f"cursor column {cursor!r} of {schema}.{name}: {problem}",
                    tenant=t, table=name,
                    hint=f"in {tenant.file or 'the tenant file'}, table {name!r}: declare as "
                         "cursor a DATETIME/TIMESTAMP column stamped on every change, or an "
                         "integer/DECIMAL column from a monotone allocator (AUTO_INCREMENT, a "
                         "version counter); or remove `cursor:` to read the table in full "
                         "every run")
            cursor_index = self._require_index(refl, [tcol] if tcol else [], cursor, tenant, table,
                                               pk)
        cluster = self.cluster
        specs = []
        for col in refl.columns:
            if col.name.lower() in excluded:
                continue
            try:
                specs.append(column_spec(col, datetime_as=self.datetime_as,
                                         source_timezone=cluster.timezone))
            except TypeContractError as exc:
                exc.tenant, exc.table = t, name
                raise SchemaError(str(exc)) from exc
        refuse_name_collisions(specs, schema, name, t, tenant.file)
        plan = TablePlan(tenant=t, schema=schema, table=name, specs=tuple(specs),
                         primary_key=tuple(pk), cursor=None if full_replace else cursor,
                         chunk_rows=table.chunk_rows, query_rows=table.query_rows,
                         row_bytes=refl.row_bytes, tenant_column=tcol,
                         tenant_value=tenant.source.tenant_value, tenant_type=ttype,
                         zero_dates=table.zero_dates or cluster.zero_dates,
                         full_replace=full_replace, cursor_index=cursor_index,
                         key_index=None if full_replace else key_index,
                         key_enforced=full_replace or key_enforced,
                         verify_every=table.verify_every or cluster.verify_every)
        if plan.cursor and plan.spec(plan.cursor).info.data_type in CIVIL_DATES:
            plan = dataclasses.replace(plan, cursor_years=self.cursor_years(plan))
        return plan

    def cursor_years(self, plan: TablePlan) -> tuple[int, ...] | None:
        """The years a DATE/DATETIME cursor holds at or above MIN_DATETIME (zero-in-date values
        included: YEAR('2026-00-10') is 2026), for the zeros pass's index ranges. One query on
        the index ends when the span is short; else one index dive per year present; None past
        MAX_GAP_YEARS years (the zeros pass then scans the cursor index)."""
        c, tbl = col_ref(plan.cursor), _from(plan)
        scope = f"{tenant_predicate(plan)} AND " if plan.tenant_column else ""
        args = {"lo": MIN_DATETIME}
        lo, hi = self.query(f"SELECT YEAR(MIN({c})), YEAR(MAX({c})) FROM {tbl} "
                            f"WHERE {scope}{c} >= :lo", args)[0]
        if lo is None:
            return ()
        if hi - lo < MAX_GAP_YEARS:
            return tuple(range(int(lo), int(hi) + 1))
        years = [int(lo)]
        while len(years) <= MAX_GAP_YEARS:
            # the first value after the end of that year (DATE columns compare as midnight)
            end = dt.datetime(years[-1], 12, 31, 23, 59, 59, 999999)
            nxt = self.query(f"SELECT YEAR(MIN({c})) FROM {tbl} WHERE {scope}{c} > :end",
                             {**args, "end": end})[0][0]
            if nxt is None:
                return tuple(years)
            years.append(int(nxt))
        return None

    @staticmethod
    def _key_index(refl: Reflected, pk: list[str]) -> tuple[str | None, bool]:
        """(the index ordered by the key, whether the source enforces the key unique).

        The index: PRIMARY when the key is the table's primary key; else a UNIQUE index on
        exactly the key's columns in order, else any index starting with them (ordered by the
        key all the same); else None. Enforced: PRIMARY is the key, or some UNIQUE index's
        columns are all key columns (then no two rows can share the key)."""
        want = [c.lower() for c in pk]
        if not want:
            return None, False
        lower = {n: [c.lower() for c in cols] for n, cols in refl.indexes.items()}
        enforced = any(set(cols) <= set(want) for n, cols in lower.items() if n in refl.unique)
        if lower.get("PRIMARY") == want:
            return "PRIMARY", True
        exact = sorted(n for n, cols in lower.items() if cols == want and n in refl.unique)
        if exact:
            return exact[0], enforced
        leading = sorted(lower, key=lambda n: (n not in refl.unique, n != "PRIMARY", n))
        for n in leading:
            if lower[n][:len(want)] == want:
                return n, enforced
        return None, enforced

    @staticmethod
    def _require_index(refl: Reflected, prefix: list[str], cursor: str, tenant: Tenant,
                       table: Table, pk: list[str] | None = None) -> str:
        """Keyset chunks on (cursor, pk) are only cheap with an index starting with
        (tenant column,) cursor; without it every chunk is a full scan and sort. One that goes
        on with the key's columns is preferred: a table without a PRIMARY KEY has only a hidden
        row id behind the cursor in its secondary indexes, so ORDER BY cursor, key would sort."""
        want = [c.lower() for c in prefix + [cursor]]
        full = want + [c.lower() for c in pk or []]
        found = [name for name, cols in sorted(refl.indexes.items())
                 if [c.lower() for c in cols[:len(want)]] == want]
        for name in found:
            if [c.lower() for c in refl.indexes[name][:len(full)]] == full:
                return name
        if found:
            return found[0]
        cols = ", ".join(prefix + [cursor])
        raise SchemaError(f"no index starts with ({cols}); every chunk would scan the table",
                          tenant=tenant.tenant, table=table.name,
                          hint=f"CREATE INDEX ... ON {tenant.source.schema_}.{table.name} ({cols})")

    def pk_bounds(self, plan: TablePlan) -> tuple[int, int] | None:
        """MIN and MAX of a single integer primary key (index ends only: two dives)."""
        pk = col_ref(plan.primary_key[0])
        lo, hi = self.query(f"SELECT MIN({pk}), MAX({pk}) FROM {_from(plan)}"
                            f"{_tenant_where(plan)}")[0]
        return None if lo is None else (int(lo), int(hi))

    # -- bounds ---------------------------------------------------------------------------

    def upper_bound(self, plan: TablePlan, after: tuple | None = None) -> tuple[Any, dict]:
        """Exclusive upper cursor bound for this run, from the source's own clock.

        Every row with cursor < bound is committed: the bound is at most `now - lag` and at
        most the start of the oldest open read-write transaction (its rows, stamped by the
        server at or after its start, cannot be below it). Numeric cursors: see
        _numeric_bound (`after` is the watermark the run reads from). Returns (bound, facts
        for metadata).
        """
        if plan.cursor is None:
            return None, {}
        spec = plan.spec(plan.cursor)
        if not plan.cursor_is_temporal:
            return self._numeric_bound(plan, after)
        now_s, trx_s, basis = self._clock()
        bound_s = now_s - self.cluster.lag_seconds
        facts = {"source_now_utc": _utc(now_s).isoformat(), "lag_seconds": self.cluster.lag_seconds}
        if trx_s is not None and trx_s < bound_s:
            bound_s = trx_s
            facts["held_by_open_transaction_since"] = _utc(trx_s).isoformat()
        facts["upper_basis"] = basis
        instant = _utc(bound_s)
        if spec.info.data_type == "timestamp":
            bound = instant.replace(tzinfo=None)                     # UTC session
        else:
            bound = instant.astimezone(ZoneInfo(self.cluster.timezone)).replace(tzinfo=None)
            if spec.info.data_type == "date":
                bound = bound.date()
        facts["upper_bound"] = str(bound)
        return max(bound, MIN_DATETIME) if isinstance(bound, dt.datetime) else bound, facts

    def _numeric_bound(self, plan: TablePlan, after: tuple | None) -> tuple[Any, dict]:
        """The bound of an integer or DECIMAL cursor (a version counter, an AUTO_INCREMENT id).

        Such values are allocated in increasing order (AUTO_INCREMENT, a counter row, a sequence)
        but committed in any order: a transaction may hold 11 uncommitted while 12 commits, and
        `MAX + 1` would let the watermark pass 11 for good. So: read M = MAX(cursor) (committed
        rows) with the server's time, *then* the writers open on the server. A value <= M still
        uncommitted was allocated before M, by a transaction that started before that moment
        and holds locks since it wrote: one of those writers (later ones allocate above M and do
        not matter). Wait until every one of them has finished: then every value <= M is
        committed or gone, and the bound is just above M. A writer that stays open longer than
        writer_wait_seconds() holds the bound where the last run left it, just above the
        watermark (values at or below it were final then), or at NOTHING on a first load; the
        next run moves on. Without PROCESS the writers cannot be seen: the bound is just above
        M and the metadata says a late commit below it would be missed."""
        spec = plan.spec(plan.cursor)
        top, at = self.query(f"SELECT MAX({col_ref(plan.cursor)}), UNIX_TIMESTAMP(NOW(6)) FROM "
                             f"{_from(plan)}{_tenant_where(plan)}")[0]
        read = time.monotonic()
        facts: dict = {"cursor_max": str(top)}
        held = just_above(spec, after[0]) if after is not None and after[0] is not None else None
        free = just_above(spec, top) if top is not None else None
        writers = self._open_writers(not_before=read)
        if writers is None:
            facts["upper_basis"] = ("max-only (no PROCESS privilege to see open transactions: "
                                    "a value committed late below the bound is not delivered)")
            bound = free
        else:
            # a writer whose (never later than true) start is after the MAX read started after it
            older = {i: t for i, t in writers.items() if t <= float(at)}
            still = self._wait_for_writers(older)
            if not still:
                facts["upper_basis"] = "max+open-writers-finished"
                bound = free
            else:
                facts["upper_basis"] = "held (a writer open since before the max is still open)"
                facts["held_by_open_transaction_since"] = _utc(min(older[i] for i in still)
                                                              ).isoformat()
                facts["held_by_trx_ids"] = ",".join(str(i) for i in sorted(still))
                bound = None
        if held is not None and (bound is None or bound < held):
            bound = held          # never below what an earlier run already made final
        if bound is None:
            bound = NOTHING
        facts["upper_bound"] = str(bound)
        return bound, facts

    def _open_writers(self, not_before: float | None = None) -> dict[int, float] | None:
        """Open transactions that have written or locked rows: trx id → start (unix seconds,
        never later than the true start), from a listing of INNODB_TRX made after `not_before`
        (time.monotonic(); default now) — so every writer that began before an observation the
        caller made earlier (a MAX, the clock) and is still open is in it. A fresh listing
        another thread got after `not_before` is shared. None without the PROCESS privilege."""
        import pymysql

        not_before = time.monotonic() if not_before is None else not_before
        deadline = time.monotonic() + TRX_FRESH_TIMEOUT_S
        with self._trx_lock:
            while True:
                snap = self._trx_snapshot
                if snap is not None and snap[0] >= not_before:
                    return snap[1]
                idle = TRX_CACHE_S - (time.monotonic() - self._trx_read_at)
                if idle > 0:
                    time.sleep(idle)
                asked = time.monotonic()
                nonce = uuid.uuid4().hex
                with self._errors("listing open transactions"):
                    conn = self.engine.raw_connection()
                    try:
                        cur = conn.cursor()
                        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                        try:
                            cur.execute(OPEN_TRX_SQL.format(nonce=nonce))
                        except pymysql.err.MySQLError as exc:
                            if exc.args and exc.args[0] in (1227, 1142):   # no PROCESS
                                return None
                            raise
                        rows = cur.fetchall()
                        conn.rollback()
                    finally:
                        conn.close()
                self._trx_read_at = time.monotonic()
                if any(r[2] for r in rows):
                    # a start that cannot be read is taken as the epoch: it holds everything
                    writers = {int(r[0]): float(r[1]) if r[1] is not None else 0.0
                               for r in rows if r[3]}
                    self._trx_snapshot = (asked, writers)
                    return writers
                if time.monotonic() >= deadline:
                    raise SourceUnavailable(
                        "information_schema.INNODB_TRX did not refresh within "
                        f"{TRX_FRESH_TIMEOUT_S:.0f} s (something reads it without pause), so open "
                        "transactions cannot be seen", hint="retry; find the session polling "
                        "INNODB_TRX (SHOW PROCESSLIST) if it persists")

    def _wait_for_writers(self, writers: dict[int, float]) -> set[int]:
        """Poll INNODB_TRX until none of `writers` is open, for up to writer_wait_seconds();
        return those still open. A writer this source already waited for in vain is not waited
        for again (one stuck session costs one wait per process, not one per table)."""
        pending = set(writers)
        deadline = time.monotonic() + writer_wait_seconds()
        while pending:
            now = self._open_writers()
            if now is None:
                break
            pending &= set(now)
            if not pending or pending <= self._stuck or time.monotonic() >= deadline:
                break
        if pending:
            self._stuck |= pending
        return pending

    def _clock(self) -> tuple[float, float | None, str]:
        now_s = float(self.query("SELECT UNIX_TIMESTAMP(NOW(6))")[0][0])
        read = time.monotonic()
        # Only transactions that have written or locked rows can hold rows stamped below
        # the bound; consistent reads (reports, checksums) take no locks and are ignored.
        writers = self._open_writers(not_before=read)
        if writers is None:
            return now_s, None, "lag-only (no PROCESS privilege to see open transactions)"
        return now_s, (min(writers.values()) if writers else None), "lag+open-transactions"

    # -- reading --------------------------------------------------------------------------

    def read_chunk(self, plan: TablePlan, sql: str) -> pa.Table:
        """Run one bounded chunk query; return it conformed to the table's Arrow schema."""
        with self._errors("reading", tenant=plan.tenant, table=plan.table):
            raw = self._read_cx(sql) if self.reader == "connectorx" else self._read_py(plan, sql)
        out = conform(raw, list(plan.specs))
        if plan.zero_flag_columns:
            self._fail_on_zero_dates(plan, raw, out)
        del raw
        _TRIM(0)
        return out

    def stream(self, plan: TablePlan, sql: str, batch_rows: int = 50_000) -> Iterator[pa.Table]:
        """Stream one query's result in batches, decoded on the client as it arrives (the
        server sends rows as it produces them; no server-side cursor, and no temp table for the
        keyset queries, which follow an index). Every chunk read goes through here. pymysql's
        unbuffered cursor stops the server when the consumer pauses (TCP back-pressure);
        connectorx reads on into memory, which is why queries are bounded in bytes
        (TablePlan.rows_per_query)."""
        with self._errors("streaming", tenant=plan.tenant, table=plan.table):
            if self.reader == "connectorx":
                parts, rows = [], 0
                for batch in self.cx_batches([sql], batch_rows):
                    parts.append(batch)
                    rows += batch.num_rows
                    del batch
                    if rows >= batch_rows:
                        out = self.conformed(plan, parts)
                        parts, rows = [], 0
                        yield out
                        del out
                if parts:
                    yield self.conformed(plan, parts)
                return
            import pymysql.cursors

            conn = self.engine.raw_connection()
            finished, cur = False, None
            try:
                cur = conn.cursor(pymysql.cursors.SSCursor)  # unbuffered: client-side streaming
                cur.execute(sql)
                names = [d[0] for d in cur.description]
                while rows := cur.fetchmany(batch_rows):
                    stopping.check(plan.tenant, plan.table)
                    raw = self._rows_to_table(plan, names, rows)
                    out = conform(raw, list(plan.specs))
                    if plan.zero_flag_columns:
                        self._fail_on_zero_dates(plan, raw, out)
                    yield out
                cur.close()
                finished = True
            finally:
                if finished:
                    conn.close()
                else:    # left mid-result: drop the socket rather than drain the rest
                    result = getattr(cur, "_result", None)
                    if result is not None:     # or its __del__ would read the closed socket
                        result.unbuffered_active = False
                    conn.invalidate()

    def cx_batches(self, sqls: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """connectorx's raw Arrow stream of one or more queries (several run at once, each on
        its own connection, their batches interleaved; each batch comes from one query).
        Small batches: connectorx decodes ahead of the consumer, a few of them at a time."""
        import connectorx as cx

        with rust_panics.silenced():        # an expected panic (zero date) is not shown
            try:
                reader = cx.read_sql(self._cx_url(), sqls if len(sqls) > 1 else sqls[0],
                                     return_type="arrow_stream",
                                     batch_size=min(batch_rows, STREAM_BATCH_ROWS),
                                     pre_execution_query=[SESSION_INIT])
                batches = iter(reader)
                while True:
                    stopping.check()             # SIGTERM / Ctrl-C: leave between batches
                    try:
                        batch = next(batches)
                    except StopIteration:
                        return
                    if batch.num_rows:
                        yield batch
            except HakobuError:
                raise
            except BaseException as exc:  # a Rust panic is a BaseException
                if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                    raise
                raise self._cx_error(exc) from None

    def conformed(self, plan: TablePlan, parts: list) -> pa.Table:
        """Raw batches of one query → a chunk in the table's Arrow schema (zero-date check)."""
        raw = pa.Table.from_batches(parts)
        out = conform(raw, list(plan.specs))
        if plan.zero_flag_columns:
            self._fail_on_zero_dates(plan, raw, out)
        return out

    def _read_cx(self, sql: str) -> pa.Table:
        import connectorx as cx

        try:
            with rust_panics.silenced():
                return cx.read_sql(self._cx_url(), sql, return_type="arrow",
                                   pre_execution_query=[SESSION_INIT])
        except BaseException as exc:  # a Rust panic is a BaseException (pyo3 PanicException)
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            raise self._cx_error(exc) from None

    def _cx_error(self, exc: BaseException) -> SourceError:
        """connectorx reports everything as text: connection loss is transient, the rest not."""
        text = self._redact(str(exc))
        if _CX_ZERO_DATE in text:
            return ZeroDateRead(f"connectorx: {text}")
        cls = SourceUnavailable if _cx_transient(text) else SourceError
        return cls(f"connectorx: {text}")

    def _read_py(self, plan: TablePlan, sql: str) -> pa.Table:
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            rows = cur.fetchall()
            names = [d[0] for d in cur.description]
            cur.close()
        finally:
            conn.close()
        return self._rows_to_table(plan, names, rows)

    @staticmethod
    def _rows_to_table(plan: TablePlan, names: list[str], rows) -> pa.Table:
        cols = list(zip(*rows)) if rows else [[] for _ in names]
        arrays, fields = [], []
        specs = {s.name: s for s in plan.specs}
        for name, values in zip(names, cols):
            if name in specs:
                arrays.append(python_column(list(values), specs[name]))
            else:
                arrays.append(pa.array(list(values), type=pa.int64()))
            fields.append(name)
        return pa.Table.from_arrays(arrays, names=fields)

    @staticmethod
    def _fail_on_zero_dates(plan: TablePlan, raw: pa.Table, out: pa.Table) -> None:
        for i, spec in plan.zero_flag_columns:
            flags = raw.column(ZERO_FLAG_PREFIX + str(i)).to_pylist()
            if any(flags):
                row = flags.index(next(f for f in flags if f))
                key = {k: out.column(k)[row].as_py() for k in plan.primary_key}
                raise TypeContractError(
                    f"column {spec.name!r} holds a zero date ('0000-00-00' or a zero month/day) "
                    f"in the row with key {key}", tenant=plan.tenant, table=plan.table,
                    hint="fix the row in MySQL, or set zero_dates: to_null for this table or cluster "
                         "to deliver such values as NULL")


def refuse_name_collisions(specs, schema: str, table: str, tenant: str, file: str) -> None:
    """Columns whose BigQuery names (hakobu.naming) are one name to BigQuery, which compares
    column names without case: the table is refused, naming them, before anything is read —
    two columns are never merged into one. (MySQL itself refuses two columns differing only
    in case; a mapped name can still meet another column's.)"""
    from hakobu.naming import collisions

    by_name = {s.name: s.bq_name for s in specs}
    clashes = collisions([s.name for s in specs], lambda n: by_name[n])
    if clashes:
        what = "; ".join(f"{', '.join(repr(o) for o in originals)} → {bq!r}"
                         for bq, originals in clashes)
        raise at_key(SchemaError(
            f"columns of {schema}.{table} would land in one BigQuery column (names compared "
            f"without case): {what}", tenant=tenant, table=table,
            hint=f"exclude all but one of them in {file or 'the tenant file'} (exclude: [...]), "
                 "or rename one in MySQL"), "exclude")


class ZeroDateRead(SourceError):
    """A zero date reached connectorx through an unguarded read: read again with the guard."""


# how connectorx (mysql_common) refuses a zero date or zero-in-date value
_CX_ZERO_DATE = "Couldn't convert the value `Date("

# connectorx reports connection loss (server restart, KILL, network) only as text
_CX_TRANSIENT = ("connection", "io error", "ioerror", "disconnect", "broken pipe", "timed out", "server has gone away",
                 "lost connection", "killed", "reset by peer", "unexpected eof",
                 "bytes remaining on stream")


def _cx_transient(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _CX_TRANSIENT)


SPLIT_MIN_ROWS = int(os.environ.get("HAKOBU_SPLIT_MIN_ROWS", "200000"))


def initial_splits(source: MySQLSource, plan: TablePlan, gov) -> int:
    """How many primary-key ranges a first load reads at once: the cluster's max_connections
    (gov.max_conn) for a table with a single integer key spanning at least SPLIT_MIN_ROWS
    values, else one."""
    from hakobu.plan import splittable

    if splittable(plan) and gov.max_conn and gov.max_conn > 1:
        bounds = source.pk_bounds(plan)
        if bounds and bounds[1] - bounds[0] >= SPLIT_MIN_ROWS:
            return gov.max_conn
    return 1


def iter_parallel(source: MySQLSource, plan: TablePlan, pass_: str, upper: Any, parts: int,
                  on_chunk=None, gate=None, queue_depth: int = 2) -> Iterator[pa.Table]:
    """Read a whole pass over `parts` primary-key ranges at once (each a keyset reader under the
    governor), yielding chunks as they arrive — so one big table does not serialize a night.
    Order across ranges is not kept (the staging MERGE does not need it)."""
    import queue
    import threading

    from hakobu.plan import pk_ranges

    bounds = source.pk_bounds(plan) if parts > 1 else None
    if bounds is None:
        for batch, _ in iter_chunks(source, plan, pass_, None, upper, on_chunk, gate):
            yield batch
        return
    ranges = pk_ranges(bounds[0], bounds[1], parts)
    # n streams at once hold what one would: chunks and queries 1/n the size
    n = len(ranges)
    chunk = max(1, plan.chunk_rows // n)
    plan = dataclasses.replace(plan, chunk_rows=chunk,
                               query_rows=max(chunk, plan.rows_per_query // n))
    if source.reader == "connectorx":
        yield from _cx_parallel(source, plan, pass_, upper, ranges, on_chunk, gate)
        return
    q: queue.Queue = queue.Queue(maxsize=queue_depth)
    done = object()
    stop = threading.Event()

    def reader(rng):
        try:
            for batch, _ in iter_chunks(source, plan, pass_, None, upper, on_chunk, gate,
                                        pk_range=rng):
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    threads = [threading.Thread(target=reader, args=(r,), daemon=True,
                                name=f"hakobu-split-{plan.table}-{i}")
               for i, r in enumerate(ranges)]
    for t in threads:
        t.start()
    remaining = len(threads)
    try:
        while remaining:
            item = q.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        while True:                     # unblock readers waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        for t in threads:
            t.join(timeout=30)


def _read_plan(source: MySQLSource, plan: TablePlan, pass_: str) -> TablePlan:
    """The plan to read with: without the zero-date guard while no zero date has been seen in
    this table (connectorx only: it refuses one loudly instead of misreading it; the zeros
    pass selects them on purpose)."""
    fast = (source.reader == "connectorx" and plan.guard_zero_dates and plan.has_zero_guards
            and pass_ != "zeros" and not source.has_zero_dates(plan))
    return dataclasses.replace(plan, guard_zero_dates=False) if fast else plan


def _between_chunks(handed: int, pace, plan: TablePlan) -> None:
    """After a chunk is handed on: give freed memory back now and then, let the governor pace."""
    stopping.check(plan.tenant, plan.table)
    if handed % TRIM_EVERY == 0:
        _TRIM(0)
    if pace is not None:
        pace(plan.tenant, plan.table)


def _cx_parallel(source: MySQLSource, plan: TablePlan, pass_: str, upper: Any,
                 ranges: list[tuple[int, int]], on_chunk, gate) -> Iterator[pa.Table]:
    """iter_parallel for connectorx: one read_sql call per round carries one keyset query per
    unfinished range; connectorx runs them at once in its own threads (measured 1.18x one
    plain SELECT here, where Python threads gained little) and interleaves their batches, each
    from one query. Batches are routed to their range by primary key, assembled into chunks,
    and every range continues from its own last key in the next round — the same keyset
    semantics as iter_chunks, the same lazy zero-date guard. Each range's query holds a slot
    of the governor; a round takes as many ranges as slots are free (at least one)."""
    from hakobu.plan import chunk_sql, last_key

    pk = plan.primary_key[0]
    limit = plan.rows_per_query
    rplan = _read_plan(source, plan, pass_)
    after: list[tuple | None] = [None] * len(ranges)
    done = [False] * len(ranges)
    pace = getattr(gate, "pace", None)
    handed = 0
    while not all(done):
        todo = [i for i in range(len(ranges)) if not done[i]]
        with contextlib.ExitStack() as stack:
            take = []
            for i in todo:
                if gate is None:
                    take.append(i)
                elif not take:
                    stack.enter_context(gate.slot(plan.tenant, plan.table))
                    take.append(i)
                elif stack.enter_context(gate.try_slot(plan.tenant, plan.table)):
                    take.append(i)
                else:
                    break
            sqls = [chunk_sql(rplan, pass_, after[i], upper, pk_range=ranges[i]) for i in take]
            got = {i: 0 for i in take}
            parts: dict[int, list] = {i: [] for i in take}
            rows = {i: 0 for i in take}
            t0 = time.monotonic()

            def hand(i: int):
                out = source.conformed(rplan, parts[i])
                parts[i], rows[i] = [], 0
                got[i] += out.num_rows
                after[i] = last_key(plan, out, pass_)
                if on_chunk is not None:
                    on_chunk(out.num_rows, time.monotonic() - t0)
                return out

            try:
                with source._errors("streaming", tenant=plan.tenant, table=plan.table):
                    for batch in source.cx_batches(sqls, plan.chunk_rows):
                        keys = batch.column(pk)
                        first, last = keys[0].as_py(), keys[-1].as_py()
                        i = next(j for j in take if ranges[j][0] <= first < ranges[j][1])
                        if not ranges[i][0] <= last < ranges[i][1]:
                            raise SourceError(f"connectorx mixed two key ranges in one batch "
                                              f"({first}..{last})", tenant=plan.tenant,
                                              table=plan.table)
                        parts[i].append(batch)
                        rows[i] += batch.num_rows
                        del batch
                        if rows[i] >= plan.chunk_rows:
                            yield hand(i)
                            handed += 1
                            _between_chunks(handed, pace, plan)
                            t0 = time.monotonic()
                    for i in take:
                        if parts[i]:
                            yield hand(i)
            except ZeroDateRead:
                if rplan is plan:
                    raise
                source.saw_zero_dates(plan)
                rplan = plan         # this round again, guarded, from each range's last key
                continue
        for i in take:
            if got[i] < limit or (after[i] is not None and after[i][-1] >= ranges[i][1] - 1):
                done[i] = True


def _from(plan: TablePlan) -> str:
    return f"{_q(plan.schema)}.{_q(plan.table)} AS {SRC}"


def _tenant_where(plan: TablePlan) -> str:
    """The tenant's rows of a shared table, compared in the column's own type (plan.py)."""
    return f" WHERE {tenant_predicate(plan)}" if plan.tenant_column else ""


def _q(name: str) -> str:
    from hakobu.sqlquote import quote_ident

    return quote_ident(name)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def iter_chunks(source: MySQLSource, plan: TablePlan, pass_: str, after: tuple | None,
                upper: Any, on_chunk=None, gate=None,
                pk_range: tuple[int, int] | None = None) -> Iterator[tuple[pa.Table, tuple]]:
    """Yield (chunk, key after it) for one pass, in key order.

    Each keyset query asks for up to plan.rows_per_query rows; its result streams to the client
    and is handed on in chunks of plan.chunk_rows as it arrives (the server keeps producing
    while the client decodes: no turn-taking per chunk). A query that returns fewer rows than
    its LIMIT ends the pass; otherwise the next one starts after the last key. Each query holds
    a slot of the cluster's governor (gate); between chunks the governor may pace the read
    (ReadGovernor.pace).

    Date columns are read without the zero-date guard by connectorx, which refuses a zero date
    loudly rather than misread it: at the first one, the query is run again guarded from the
    last key handed on, and this source reads the table guarded from then on."""
    from hakobu.plan import chunk_sql, last_key

    limit = plan.rows_per_query
    pace = getattr(gate, "pace", None)
    rplan = _read_plan(source, plan, pass_)
    handed = 0
    while True:
        sql = chunk_sql(rplan, pass_, after, upper, pk_range=pk_range)
        got = 0
        slot = gate.slot(plan.tenant, plan.table) if gate is not None else contextlib.nullcontext()
        try:
            with slot:
                t0 = time.monotonic()
                for batch in source.stream(rplan, sql, plan.chunk_rows):
                    if batch.num_rows == 0:
                        continue
                    got += batch.num_rows
                    if on_chunk is not None:
                        on_chunk(batch.num_rows, time.monotonic() - t0)
                    after = last_key(plan, batch, pass_)
                    yield batch, after
                    del batch
                    handed += 1
                    _between_chunks(handed, pace, plan)
                    t0 = time.monotonic()
        except ZeroDateRead:
            if rplan is plan:
                raise
            source.saw_zero_dates(plan)
            rplan = plan                 # the same query again, guarded, from the last key
            continue
        if got == 0 and on_chunk is not None:
            on_chunk(0, time.monotonic() - t0)
        if got < limit:
            return
        if pk_range is not None and pass_ != "main" and after[-1] >= pk_range[1] - 1:
            return                       # the split's last key was read: nothing can follow
