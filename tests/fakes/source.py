"""A scripted source behind the Source port (hakobu.ports.Source): tables held in memory as
rows, read by the same passes, keys and bounds the MySQL source reads — in Python.

What it answers the way MySQL does: keyset passes (main, initial, nulls, zeros, full) in key
order and in chunks of the plan's size, exclusive upper bounds from a scripted clock (temporal
cursors) or the cursor's MAX (numeric cursors), a shared table's rows limited to the tenant's
value. What it does not model: collations (strings compare by code point), zero dates, open
transactions, the read budget (any ReadGate is honoured by taking its slots). It is for the
unit tier's logic tests; the integration tier reads the real MariaDB.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa

from hakobu.config import Cluster
from hakobu.gates import unlimited
from hakobu.keys import last_key
from hakobu.plan import MIN_DATETIME, NOTHING, TablePlan, just_above
from hakobu.ports import Reflected
from hakobu.types import ColumnInfo, conform, python_column
from tests.fakes.checks import FakeSourceChecks


@dataclass
class FakeTable:
    columns: list[ColumnInfo]
    primary_key: list[str]
    indexes: dict[str, list[str]]
    rows: list[dict] = field(default_factory=list)
    unique: frozenset[str] = frozenset({"PRIMARY"})


def col(name: str, data_type: str, *, column_type: str | None = None, nullable: bool = True,
        precision: int | None = None, scale: int | None = None,
        datetime_precision: int | None = None) -> ColumnInfo:
    """A reflected column as information_schema would describe it."""
    return ColumnInfo(name=name, data_type=data_type, column_type=column_type or data_type,
                      nullable=nullable, precision=precision, scale=scale,
                      datetime_precision=datetime_precision, is_json=data_type == "json")


class ScriptedSource(FakeSourceChecks):
    """One fake cluster. `now` is the source's clock (UTC); reads are counted per pass."""

    def __init__(self, cluster: Cluster | None = None, *, now: dt.datetime | None = None):
        self.cluster = cluster or Cluster(name="fake", host="fake", port=1, user="fake")
        self.now = now or dt.datetime(2026, 12, 1, 12, 0, 0)
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.reads: list[tuple[str, str, int]] = []       # (table, pass, rows) per chunk
        self.fail_next: Exception | None = None            # raised by the next chunk read

    # -- scripting ------------------------------------------------------------------------

    def add_table(self, schema: str, name: str, columns: list[ColumnInfo], primary_key: list[str],
                  indexes: dict[str, list[str]] | None = None, rows: list[dict] = ()) -> FakeTable:
        idx = {"PRIMARY": list(primary_key)} if primary_key else {}
        idx.update(indexes or {})
        t = FakeTable(columns, list(primary_key), idx, [dict(r) for r in rows])
        self.tables[(schema, name)] = t
        return t

    def table(self, schema: str, name: str) -> FakeTable:
        return self.tables[(schema, name)]

    def upsert(self, schema: str, name: str, row: dict) -> None:
        t = self.table(schema, name)
        key = tuple(row[k] for k in t.primary_key)
        for i, r in enumerate(t.rows):
            if tuple(r[k] for k in t.primary_key) == key:
                t.rows[i] = {**r, **row}
                return
        t.rows.append(dict(row))

    def delete(self, schema: str, name: str, **key) -> None:
        t = self.table(schema, name)
        t.rows = [r for r in t.rows if any(r[k] != v for k, v in key.items())]

    def visible_rows(self, plan: TablePlan) -> list[dict]:
        """The rows this plan's tenant may read (a shared table: its tenant value only)."""
        rows = self.table(plan.schema, plan.table).rows
        if plan.tenant_column:
            rows = [r for r in rows if r[plan.tenant_column] == plan.tenant_value]
        return rows

    # -- the port -------------------------------------------------------------------------

    def ping(self) -> None:
        return None

    def reflect(self, schema: str, table: str) -> Reflected | None:
        t = self.tables.get((schema, table))
        if t is None:
            return None
        return Reflected(list(t.columns), list(t.primary_key), dict(t.indexes), 100, t.unique)

    def rows_up_to(self, plan: TablePlan, cap: int) -> int:
        return min(len(self.visible_rows(plan)), cap)

    def cursor_years(self, plan: TablePlan) -> tuple[int, ...] | None:
        years = {r[plan.cursor].year for r in self.visible_rows(plan)
                 if r[plan.cursor] is not None and r[plan.cursor] >= _floor(r[plan.cursor])}
        return tuple(sorted(years))

    def pk_bounds(self, plan: TablePlan) -> tuple[int, int] | None:
        keys = [r[plan.primary_key[0]] for r in self.visible_rows(plan)]
        return (min(keys), max(keys)) if keys else None

    def estimate_rows(self, plan: TablePlan) -> tuple[int | None, str]:
        return len(self.visible_rows(plan)), "count"

    def upper_bound(self, plan: TablePlan, after: tuple | None = None):
        if plan.cursor is None:
            return None, {}
        spec = plan.spec(plan.cursor)
        facts = {"source_now_utc": self.now.replace(tzinfo=dt.timezone.utc).isoformat(),
                 "lag_seconds": self.cluster.lag_seconds}
        if plan.cursor_is_temporal:
            bound = self.now - dt.timedelta(seconds=self.cluster.lag_seconds)
            if spec.info.data_type == "date":
                bound = bound.date()
            facts["upper_bound"] = str(bound)
            return bound, facts
        values = [r[plan.cursor] for r in self.visible_rows(plan) if r[plan.cursor] is not None]
        bound = just_above(spec, max(values)) if values else NOTHING
        facts["upper_bound"] = str(bound)
        return bound, facts

    def duplicate_key(self, plan: TablePlan, gate) -> tuple | None:
        seen: dict[tuple, int] = {}
        for r in self.visible_rows(plan):
            k = tuple(r[c] for c in plan.primary_key)
            seen[k] = seen.get(k, 0) + 1
        for k, n in seen.items():
            if n > 1:
                return (*k, n)
        return None

    def chunks(self, plan: TablePlan, pass_: str, after: tuple | None, upper, *, on_chunk=None,
               gate=None):
        rows = self._pass_rows(plan, pass_, upper)
        keys = plan.key_columns(pass_)
        if after is not None:
            rows = [r for r in rows if _key(r, keys) > tuple(after)]
        size = max(1, plan.chunk_rows)
        for i in range(0, len(rows), size):
            part = rows[i:i + size]
            with _slot(gate, plan):
                if self.fail_next is not None:
                    exc, self.fail_next = self.fail_next, None
                    raise exc
                batch = self._batch(plan, part)
            self.reads.append((plan.table, pass_, len(part)))
            if on_chunk is not None:
                on_chunk(len(part), 0.0)
            yield batch, last_key(plan, batch, pass_)

    def initial_splits(self, plan: TablePlan, gate) -> int:
        return 1

    def parallel_chunks(self, plan: TablePlan, pass_: str, upper, parts: int, on_chunk, gate):
        for batch, _ in self.chunks(plan, pass_, None, upper, on_chunk=on_chunk, gate=gate):
            yield batch

    def whole_table(self, plan: TablePlan, gate):
        with _slot(gate, plan):
            rows = list(self.visible_rows(plan))
        size = max(1, plan.chunk_rows)
        for i in range(0, len(rows), size):
            yield self._batch(plan, rows[i:i + size])

    # -- helpers --------------------------------------------------------------------------

    def _pass_rows(self, plan: TablePlan, pass_: str, upper) -> list[dict]:
        rows = self.visible_rows(plan)
        c = plan.cursor
        if pass_ in ("main", "initial"):
            if upper is NOTHING:
                return []
            rows = [r for r in rows if r[c] is not None and r[c] >= _floor(r[c])
                    and (upper is None or r[c] < upper)]
        elif pass_ == "nulls":
            rows = [r for r in rows if r[c] is None]
        elif pass_ == "zeros":
            rows = [r for r in rows if r[c] is not None and r[c] < _floor(r[c])]
        return sorted(rows, key=lambda r: _key(r, plan.key_columns(pass_)))

    @staticmethod
    def _batch(plan: TablePlan, rows: list[dict]) -> pa.Table:
        arrays = [python_column([r.get(s.name) for r in rows], s) for s in plan.specs]
        return conform(pa.Table.from_arrays(arrays, names=[s.name for s in plan.specs]),
                       list(plan.specs))


def _floor(v):
    """MIN_DATETIME in the value's own type (temporal cursors); numbers have no floor."""
    if isinstance(v, dt.datetime):
        return MIN_DATETIME
    if isinstance(v, dt.date):
        return MIN_DATETIME.date()
    return v


def _key(row: dict, columns) -> tuple:
    return tuple(row[c] for c in columns)


def _slot(gate, plan: TablePlan):
    return (gate or unlimited()).slot(plan.tenant, plan.table)
