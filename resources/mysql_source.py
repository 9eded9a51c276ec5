"""The MySQL source: reflection and control queries (SQLAlchemy + pymysql), bulk chunk reads.

Reads are short, bounded keyset queries whose results stream to the client — never a server-side
cursor (no temp table on the server), never OFFSET. Two readers execute the same SQL text:
- "connectorx" (default): Rust, decodes straight into Arrow (~12x pymysql here, DESIGN.md §4);
- "pymysql": pure Python, identical results (a test proves it), a fallback for odd servers.
Every session runs with time_zone '+00:00' so TIMESTAMP values arrive as UTC.
"""

import contextlib
import datetime as dt
import os
import threading
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL

from hakobu.config import Cluster
from hakobu.errors import HakobuError, SourceError, SourceUnavailable, is_transient, mysql_failure
from hakobu.plan import (
    MAX_GAP_YEARS,
    MIN_DATETIME,
    TablePlan,
    col_ref,
    tenant_predicate,
)
from hakobu.ports import Reflected
from hakobu.sqlquote import quote_ident
from hakobu.types import ColumnInfo
from resources.mysql_bound import BoundMixin
from resources.mysql_checks import MySQLChecks
from resources.mysql_chunks import initial_splits, iter_chunks, iter_parallel
from resources.mysql_read import ReaderMixin
from resources import mysql_sql
from resources.mysql_sql import (
    _from,
    _tenant_where,
    count_sql,
    duplicate_key_sql,
    replace_sql,
)

READERS = ("connectorx", "pymysql")


class MySQLSource(BoundMixin, ReaderMixin, MySQLChecks):
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
                connect_args={"init_command": mysql_sql.SESSION_INIT, "connect_timeout": 10,
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
                "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE, SEQ_IN_INDEX, CARDINALITY "
                "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t "
                "ORDER BY INDEX_NAME, SEQ_IN_INDEX"), {"s": schema, "t": table}).all()
            avg, data = c.execute(sa.text(
                "SELECT AVG_ROW_LENGTH, DATA_LENGTH FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t"), {"s": schema, "t": table}).one()
        indexes: dict[str, list[str]] = {}
        distinct: dict[str, int] = {}
        for name, col, _, seq, card in stats:
            indexes.setdefault(name, []).append(col)
            if int(seq) == 1 and card is not None:
                distinct[col.lower()] = max(distinct.get(col.lower(), 0), int(card))
        unique = frozenset(name for name, _, non_unique, _, _ in stats if not int(non_unique))
        columns = [ColumnInfo(name=r[0], data_type=r[1].lower(), column_type=r[2],
                              nullable=r[3] == "YES", precision=r[4], scale=r[5],
                              datetime_precision=r[6],
                              is_json=r[1].lower() == "json" or r[0] in json_cols)
                   for r in cols]
        return Reflected(columns, indexes.get("PRIMARY", []), indexes,
                         int(avg) if avg else None, unique,
                         data_bytes=int(data) if data is not None else None, distinct=distinct)

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

    def rows_up_to(self, plan: TablePlan, cap: int) -> int:
        """The tenant's rows, counted up to `cap`: at most `cap` entries of the cursor index
        (the narrowest the table is known to have: cursor and key) are read."""
        where = f" WHERE {tenant_predicate(plan)}" if plan.tenant_column else ""
        force = f" FORCE INDEX ({quote_ident(plan.cursor_index)})" if plan.cursor_index else ""
        return int(self.query(f"SELECT COUNT(*) FROM (SELECT 1 FROM {_from(plan)}{force}"
                              f"{where} LIMIT {int(cap)}) AS _n")[0][0])

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

    def pk_bounds(self, plan: TablePlan) -> tuple[int, int] | None:
        """MIN and MAX of a single integer primary key (index ends only: two dives)."""
        pk = col_ref(plan.primary_key[0])
        lo, hi = self.query(f"SELECT MIN({pk}), MAX({pk}) FROM {_from(plan)}"
                            f"{_tenant_where(plan)}")[0]
        return None if lo is None else (int(lo), int(hi))

    # -- bounds ---------------------------------------------------------------------------

    # -- the port (hakobu.ports.Source) ---------------------------------------------------

    def estimate_rows(self, plan: TablePlan) -> tuple[int | None, str]:
        """(rows, how they were counted): a shared table's COUNT of the tenant's rows (an index
        range), else InnoDB's estimate from information_schema (no scan)."""
        sql, params = count_sql(plan)
        rows = self.query(sql, params)
        value = rows[0][0] if rows else None
        return (int(value) if value is not None else None,
                "count" if plan.tenant_column else "information_schema estimate")

    def duplicate_key(self, plan: TablePlan, gate) -> tuple | None:
        with gate.slot(plan.tenant, plan.table):
            rows = self.query(duplicate_key_sql(plan))
        return tuple(rows[0]) if rows else None

    def chunks(self, plan: TablePlan, pass_: str, after: tuple | None, upper, *, on_chunk=None,
               gate=None):
        return iter_chunks(self, plan, pass_, after, upper, on_chunk=on_chunk, gate=gate)

    def initial_splits(self, plan: TablePlan, gate) -> int:
        return initial_splits(self, plan, gate)

    def parallel_chunks(self, plan: TablePlan, pass_: str, upper, parts: int, on_chunk, gate):
        return iter_parallel(self, plan, pass_, upper, parts, on_chunk, gate)

    def whole_table(self, plan: TablePlan, gate):
        with gate.slot(plan.tenant, plan.table):
            yield from self.stream(plan, replace_sql(plan), plan.chunk_rows)
