"""Realtime delivery (issue #15), the pure part: where a binlog change goes and what it becomes.

`hakobu stream` (hakobu.stream) follows each source cluster's binary log with one reader and
appends every change of a `delivery: realtime` table to that table's change log in the
customer's dataset (resources.changelog); a MERGE every `merge_every_minutes` applies the
latest change per key to the customer's table. This module decides, without any IO:

- the order of changes (`change_seq`): `_hakobu_seq` is the commit's position in the log —
  file number and offset in one INT64 — and `_hakobu_idx` the change's index within its
  transaction. The binlog gives both again on a replay, so a change read twice has the same
  (seq, idx) and is one change to the merge (latest per key wins; a duplicate is the same
  row). One INT64 cannot hold a 32-bit offset, a file number and an unbounded row index, so
  the index has its own column;
- where a change goes (`Router`): schema-per-tenant tables by schema, shared tables by the
  value of the tenant column in the row. A row whose value is no tenant's is dropped and
  counted, never delivered. An update that moves a row to another key (or another tenant) is
  a delete of the old key (for the old tenant) and an upsert of the new one;
- the row as the change log stores it (`log_rows`): the plan's columns through the nightly
  path's own Arrow contract (hakobu.types.python_column, conform, to_dest), so a value has
  one form whichever path delivered it;
- the per-table state (`RealtimeState`), kept in the dataset's `_hakobu_state`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable

import pyarrow as pa

from hakobu.binlog import (BinlogPosition, ChangeKind, Checkpoint, RowChange, ServerIdentity,
                           file_number)
from hakobu.errors import SchemaError
from hakobu.plan import BYTES_TYPES, TablePlan
from hakobu.types import SPATIAL_TYPES, conform, python_column, to_dest

UPSERT, DELETE = "upsert", "delete"
OP, SEQ, IDX, COMMITTED_AT = "_hakobu_op", "_hakobu_seq", "_hakobu_idx", "_hakobu_committed_at"
GEN = "_hakobu_gen"
STATE_SUFFIX = "#realtime"          # the table's realtime row in _hakobu_state
SNAPSHOT, STREAMING = "snapshot", "streaming"
CHECKPOINT_TABLE = "_hakobu_rt_checkpoint"
OFFSET_BITS = 32                    # binlog offsets are 32-bit (max_binlog_size <= 1 GiB)


def change_seq(position: BinlogPosition) -> int:
    """The INT64 order of a commit in one server's log: file number, then offset."""
    n = file_number(position.file)
    if n is None:
        raise ValueError(f"binlog file {position.file!r} has no sequence number")
    return (n << OFFSET_BITS) | position.pos


# -- checkpoints as stored -------------------------------------------------------------------

def checkpoint_json(cp: Checkpoint, *, acked_at: dt.datetime | None = None,
                    tables: Iterable[str] | None = None) -> str:
    """A recorded cluster checkpoint also carries `acked_at` (up to when the source's commits
    are read at it: the `realtime_lag` check) and the BigQuery tables whose changes it
    covers (a table not among them was not streamed: hakobu.stream snapshots it again).
    checkpoint_of ignores both."""
    data: dict[str, Any] = {"position": asdict(cp.position), "identity": asdict(cp.identity)}
    if acked_at is not None:
        data["acked_at"] = acked_at.astimezone(dt.timezone.utc).isoformat()
    if tables is not None:
        data["tables"] = sorted(tables)
    return json.dumps(data, sort_keys=True)


def recover_commands(cluster: str, tables: dict[str, Iterable[str] | None]) -> str:
    """The `hakobu stream --cluster C --recover TENANT [--tables a,b]` command of each tenant
    (tables None: all of its realtime tables), joined by "; " — what every refusal names."""
    return "; ".join(f"`hakobu stream --cluster {cluster} --recover {t}"
                     + (f" --tables {','.join(sorted(names))}" if names is not None else "")
                     + "`" for t, names in sorted(tables.items()))


def covered_tables(text: str | None) -> set[str] | None:
    """The tables a recorded checkpoint covers; None: all (no checkpoint, or one that
    predates the list)."""
    if not text:
        return None
    tables = json.loads(text).get("tables")
    return None if tables is None else set(tables)


def checkpoint_of(text: str) -> Checkpoint:
    data = json.loads(text)
    return Checkpoint(BinlogPosition(**data["position"]), ServerIdentity(**data["identity"]))


@dataclass(frozen=True)
class RealtimeState:
    """One realtime table's progress, the JSON of its `<table>#realtime` state row.

    phase:   "snapshot" — being read from `start` on by the nightly machinery (a crash
             restarts the read, `start` kept); "streaming" — the snapshot is merged, changes
             after `start` are merged from the change log.
    start:   the checkpoint recorded before the snapshot's first read (JSON, checkpoint_json).
    gen:     the generation: a re-snapshot (`hakobu stream --recover`) starts the next one;
             the merge and the live view only read change-log rows of the current generation
             (a reset log starts its positions again at 1: old rows could look newer).
    merged:  every change with seq <= merged is in the customer's table.
    version: the compare-and-set version of the state row (not in the JSON)."""

    phase: str
    start: str
    gen: int
    merged: int
    version: int = 0

    def to_json(self) -> str:
        return json.dumps({"phase": self.phase, "start": self.start, "gen": self.gen,
                           "merged": self.merged}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, version: int) -> RealtimeState:
        d = json.loads(text)
        return cls(d["phase"], d["start"], int(d["gen"]), int(d["merged"]), version)

    @property
    def start_seq(self) -> int:
        return change_seq(checkpoint_of(self.start).position)

    def merged_to(self, upto: int) -> RealtimeState:
        return replace(self, merged=upto)


# -- routing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    """One tenant's realtime table: what its changes are turned into and where they go."""

    tenant: str
    table: str                   # MySQL name
    plan: TablePlan              # the exported plan (hakobu.policy.export_plan)

    @property
    def bq_table(self) -> str:
        return self.plan.bq_table


@dataclass(frozen=True)
class Delivery:
    """One change-log row before conversion: op, the row (MySQL names), its order."""

    route: Route
    op: str
    row: dict
    seq: int
    idx: int
    committed_at: dt.datetime


class Router:
    """Every realtime table of one cluster, by (schema, table) and, for shared tables, by the
    tenant column's value. `dropped` counts the rows no tenant owns, per (schema, table)."""

    def __init__(self, routes: Iterable[Route]):
        self._by_table: dict[tuple[str, str], dict[Any, Route] | Route] = {}
        for r in routes:
            key = (r.plan.schema, r.plan.table)
            if r.plan.tenant_column is None:
                self._by_table[key] = r
            else:
                self._by_table.setdefault(key, {})[_declared(r.plan)] = r
        self.dropped: Counter = Counter()

    @property
    def tables(self) -> list[tuple[str, str]]:
        return sorted(self._by_table)

    @property
    def owners(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """(schema, table) -> its (tenant, table name) pairs: whom a refusal names."""
        out: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for key, target in self._by_table.items():
            routes = target.values() if isinstance(target, dict) else [target]
            out[key] = sorted((r.tenant, r.table) for r in routes)
        return out

    def route(self, change: RowChange) -> list[Delivery]:
        """The change-log rows a change makes (none for a table nobody streams)."""
        target = self._by_table.get((change.schema, change.table))
        if target is None:
            return []
        seq, idx = change_seq(change.position), 2 * change.seq
        after = self._owner(target, change.row, change)
        if change.kind is ChangeKind.DELETE:
            return [Delivery(after, DELETE, dict(change.row), seq, idx,
                             change.committed_at)] if after else []
        out = []
        if change.kind is ChangeKind.UPDATE and change.before is not None:
            before = self._owner(target, change.before, change)
            if before is not None and (before is not after or _key(before, change.before)
                                       != _key(before, change.row)):
                # the row left its key (or its tenant): the old one is gone; idx 2n, 2n+1
                # keep both changes of one row event apart and in order
                out.append(Delivery(before, DELETE, dict(change.before), seq, idx,
                                    change.committed_at))
        if after is not None:
            out.append(Delivery(after, UPSERT, dict(change.row), seq, idx + 1,
                                change.committed_at))
        return out

    def _owner(self, target, row, change: RowChange) -> Route | None:
        if isinstance(target, Route):
            return target
        any_route = next(iter(target.values()))
        value = row.get(any_route.plan.tenant_column)
        try:
            owner = target.get(_tv(value))
        except TypeError:                 # an unhashable value (no tenant column type has it)
            owner = None
        if owner is None:
            self.dropped[(change.schema, change.table)] += 1
        return owner


def _tv(value: Any) -> Any:
    """A tenant value as compared: exactly, in the column's own type, as the nightly's
    byte-exact predicate (hakobu.plan.tenant_predicate) selects — an integer column's value is
    an int, a string column's the exact str, a binary column's the bytes. Nothing is guessed
    from text ('12' is no 12, '１２' no '12'); a collation that takes 'ACME' for 'acme' is not
    followed. A value that equals no declared one is dropped and counted, never delivered to a
    tenant that did not declare it, and never an error."""
    return value


def _declared(plan: TablePlan) -> Any:
    """The plan's tenant_value as a row of its column carries it (the planning validated that
    it has the column's own type: int for an integer column, str for a string or binary one)."""
    value, t = plan.tenant_value, plan.tenant_type
    if t is None and plan.tenant_column in plan.spec_by_name:
        t = plan.spec(plan.tenant_column).info.data_type
    if t is not None and t.lower() in BYTES_TYPES and isinstance(value, str):
        return value.encode("utf-8")
    return value


def _key(route: Route, row) -> tuple:
    return tuple(row.get(k) for k in route.plan.primary_key)


# -- rows as the change log stores them ------------------------------------------------------

def log_rows(route: Route, deliveries: list[Delivery], *, gen: int) -> list[dict]:
    """The change-log rows of one table (BigQuery names), through the nightly Arrow contract:
    the binlog's values (already in the nightly's Python forms, resources.binlog_values) become
    the plan's Arrow columns exactly as a SELECT's would (python_column, conform), then Python
    values again for the client's insertAll serialization."""
    specs = list(route.plan.specs)
    _refuse_other_columns(route, deliveries, specs)
    arrays = {s.name: python_column([d.row.get(s.name) for d in deliveries], s) for s in specs}
    table = to_dest(conform(pa.table(arrays), specs), specs)
    out = table.to_pylist()
    for row, d in zip(out, deliveries):
        row.update({OP: d.op, SEQ: d.seq, IDX: d.idx, GEN: gen, COMMITTED_AT: d.committed_at})
    return out


def _refuse_other_columns(route: Route, deliveries: list[Delivery], specs) -> None:
    """A row without one of the plan's columns comes from a table whose shape changed (a
    column renamed or dropped by a DDL the reader did not see, such as one run with
    sql_log_bin=0): delivering it would write NULL for the missing column, so it is refused."""
    wanted = [s.name for s in specs]
    for d in deliveries:
        missing = [c for c in wanted if c not in d.row]
        if missing:
            plan = route.plan
            raise SchemaError(
                f"a binlog row of {plan.schema}.{plan.table} lacks the planned column(s) "
                f"{missing} (it has {sorted(d.row)}): the table's columns changed since it "
                "was planned", tenant=route.tenant, table=route.table,
                hint="recover after the schema change: `hakobu stream --recover "
                     f"{route.tenant} --tables {route.table}` (docs/realtime.md)")


def streamable(plan: TablePlan) -> TablePlan:
    """Refuse what the binlog reader cannot give in the nightly's form (docs/realtime.md)."""
    spatial = [s.name for s in plan.specs if s.info.data_type in SPATIAL_TYPES]
    if spatial:
        raise SchemaError(f"spatial column(s) {spatial} of {plan.schema}.{plan.table}: the "
                          "binlog carries their internal bytes, the nightly delivers WKT",
                          tenant=plan.tenant, table=plan.table,
                          hint="exclude them (exclude: [...]) or deliver the table nightly")
    if not plan.primary_key:
        raise SchemaError(f"{plan.schema}.{plan.table} has no primary key to merge changes on",
                          tenant=plan.tenant, table=plan.table,
                          hint="declare primary_key: [...] or deliver the table nightly")
    return replace(plan, cursor=None, cursor_index=None, cursor_years=None)


def merges_per_day(merge_every_minutes: int) -> int:
    """The MERGEs a realtime table takes a day at its cadence (the budget in docs/realtime.md)."""
    return -(-1440 // merge_every_minutes)
