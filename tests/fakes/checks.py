"""The comparison ports (hakobu.ports.SourceChecks / DestinationChecks) in Python, for the fast
unit tier: mixins for the fake source and the fake destination (tests/fakes/source.py,
tests/fakes/destination.py), as resources.mysql_checks / resources.bigquery_checks are for the
real ones.

Both sides render values with ONE function (`text`) into the canonical texts of
hakobu/canonical.py, and bucket, hash and XOR them as the SQL does. What the SQL must get right
between two engines (how each prints a value) is the integration tier's business
(tests/integration/test_verify_types.py); here both sides agree by construction, so a test that
sees DIFFERENT sees a real difference of values.

FakeSourceChecks needs `visible_rows(plan) -> list[dict]` (MySQL names, the plan's tenant only).
FakeDestinationChecks needs `tables: dict[str, list[dict]]` (BigQuery names); a fake shared
destination may set `check_filter(row) -> bool`, its tenant's slice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
from decimal import Decimal

import pyarrow as pa

from hakobu.bucketing import Bucketing, key_specs, ranges
from hakobu.canonical import HASH_RE, Part, kind, split_parts
from hakobu.plan import TablePlan
from hakobu.ports import ContentRow, KeyRead, KeyStats
from hakobu.types import ColumnSpec, conform, python_column


# -- the canonical text, in Python --------------------------------------------------------------

def text(spec: ColumnSpec, v) -> str | None:
    """The canonical text of a value of column `spec`, as read or as delivered."""
    if v is None:
        return None
    k = kind(spec)
    if k == "json":
        return json.dumps(json.loads(v) if isinstance(v, str) else v, separators=(",", ":"),
                          sort_keys=True)
    if k == "int":
        return str(int.from_bytes(v, "big") if isinstance(v, bytes) else int(v))
    if k == "decimal":
        t = format(Decimal(v), "f")
        return t.rstrip("0").rstrip(".") if "." in t else t
    if k == "float":
        return "F"
    if k == "bool":
        on = any(v) if isinstance(v, bytes) else bool(v)
        return "true" if on else "false"
    if k == "binary":
        return bytes(v).hex()
    if k == "date":
        return v.isoformat()
    if k == "datetime":
        if v.tzinfo is not None:       # a delivered TIMESTAMP: the source reads UTC
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    return v.decode() if isinstance(v, bytes) else str(v)


def _part(p: Part, v, delivered: bool) -> str:
    if p.hashed:                       # the source holds the clear value, the warehouse a hash
        if v is None:
            return "N"
        return "H" if not delivered or re.match(HASH_RE, str(v)) else str(v)
    t = text(p.spec, v)
    return "N" if t is None else f"{len(t)}:{t}"


def _md5_60(s: str) -> int:
    return int(hashlib.md5(s.encode()).hexdigest()[:15], 16)


def row_hash(parts: list[Part], row: dict, delivered: bool) -> int:
    name = (lambda p: p.dest_name) if delivered else (lambda p: p.spec.name)
    return _md5_60("".join(_part(p, row.get(name(p)), delivered) for p in parts))


def key_text(plan: TablePlan, row: dict, delivered: bool) -> str:
    out = []
    for s in key_specs(plan):
        t = text(s, row[s.bq_name if delivered else s.name])
        out.append(f"{len(t)}:{t}")
    return "".join(out)


def bucket_of(plan: TablePlan, b: Bucketing, row: dict, delivered: bool) -> int:
    if b.mode == "count":
        return 0
    if b.mode == "hash":
        return _md5_60(key_text(plan, row, delivered)) % b.modulus
    return int(row[plan.bq(b.column) if delivered else b.column]) >> b.shift   # floor, as SQL


def _checksums(plan: TablePlan, b: Bucketing, rows: list[dict], delivered: bool) -> list[tuple]:
    out: dict[int, list[int]] = {}
    for r in rows:
        acc = out.setdefault(bucket_of(plan, b, r, delivered), [0, 0, 0])
        acc[0] += 1
        if b.mode == "int":
            v = int(r[plan.bq(b.column) if delivered else b.column])
            acc[1] += v
            acc[2] ^= v
        elif b.mode != "count":
            acc[2] ^= _md5_60(key_text(plan, r, delivered))
    return [(k, n, s, x) for k, (n, s, x) in out.items()]


def _in(plan, b, rows, buckets, delivered) -> list[dict]:
    if buckets is None:
        return list(rows)
    want = set(buckets)
    return [r for r in rows if bucket_of(plan, b, r, delivered) in want]


def _digests(plan, b, parts, rows, buckets, delivered) -> list[tuple]:
    out: dict[int, list[int]] = {}
    for r in _in(plan, b, rows, buckets, delivered):
        acc = out.setdefault(bucket_of(plan, b, r, delivered), [0, 0])
        acc[0] += 1
        acc[1] ^= row_hash(parts, r, delivered)
    return [(k, n, x) for k, (n, x) in out.items()]


def _content_rows(plan, b, parts, rows, buckets, delivered) -> list[ContentRow]:
    hashed, json_parts = split_parts(parts)
    name = (lambda p: p.dest_name) if delivered else (lambda p: p.spec.name)
    return [ContentRow(bucket_of(plan, b, r, delivered), key_text(plan, r, delivered),
                       row_hash(hashed, r, delivered),
                       tuple(text(p.spec, r.get(name(p))) for p in json_parts),
                       None if delivered else tuple(r[k] for k in plan.primary_key))
            for r in _in(plan, b, rows, buckets, delivered)]


def _batch(specs, rows: list[dict]) -> pa.Table:
    arrays = [python_column([r.get(s.name) for r in rows], s) for s in specs]
    return conform(pa.Table.from_arrays(arrays, names=[s.name for s in specs]), list(specs))


def _stats(rows: list[dict], column: str | None, distinct: bool) -> KeyStats:
    if column is None:
        return KeyStats(len(rows))
    values = [r[column] for r in rows if r.get(column) is not None]
    if not values:
        return KeyStats(len(rows), None, None, 0 if distinct else None)
    return KeyStats(len(rows), min(values), max(values), len(set(values)) if distinct else None)


# -- the source side ----------------------------------------------------------------------------

class FakeSourceChecks:
    """hakobu.ports.SourceChecks (and Source.rows_by_keys) over visible_rows(plan)."""

    check_queries = 0                  # queries a real source would have run

    def _ran(self) -> None:
        self.check_queries += 1

    def key_stats(self, plan: TablePlan, column: str | None, distinct: bool = False) -> KeyStats:
        self._ran()
        return _stats(self.visible_rows(plan), column, distinct)

    def key_checksums(self, plan: TablePlan, bucketing: Bucketing) -> list[tuple]:
        self._ran()
        return _checksums(plan, bucketing, self.visible_rows(plan), False)

    def content_digests(self, plan, bucketing, parts, buckets) -> list[tuple]:
        self._ran()
        return _digests(plan, bucketing, parts, self.visible_rows(plan), buckets, False)

    def content_rows(self, plan, bucketing, parts, buckets) -> list[ContentRow]:
        self._ran()
        return _content_rows(plan, bucketing, parts, self.visible_rows(plan), buckets, False)

    def keys_in_buckets(self, plan, bucketing, buckets, gate=None) -> KeyRead:
        with _slot(gate, plan):
            rows = _in(plan, bucketing, self.visible_rows(plan), buckets, False)
        rows.sort(key=lambda r: tuple(r[k] for k in plan.primary_key))
        specs = [plan.spec(k) for k in plan.primary_key]
        if bucketing.mode == "hash":
            return KeyRead(_batch(specs, rows), queries=1, index_passes=1)
        return KeyRead(_batch(specs, rows), queries=len(ranges(bucketing, buckets)))

    def rows_by_keys(self, plan: TablePlan, keys: list[tuple], gate=None) -> pa.Table:
        want = {tuple(k) for k in keys}
        with _slot(gate, plan):
            rows = [r for r in self.visible_rows(plan)
                    if tuple(r[k] for k in plan.primary_key) in want]
        self._ran()
        return _batch(plan.specs, rows)


# -- the destination side -----------------------------------------------------------------------

class FakeDestinationChecks:
    """hakobu.ports.DestinationChecks over tables[table] (its slice: check_filter)."""

    check_filter = None                # a shared destination's tenant slice: row -> bool

    def _check_rows(self, table: str) -> list[dict]:
        rows = self.tables.get(table, [])
        f = self.check_filter
        return [r for r in rows if f(r)] if f is not None else list(rows)

    def key_stats(self, table, plan, column, distinct=False) -> KeyStats:
        return _stats(self._check_rows(table), column and plan.bq(column), distinct)

    def key_checksums(self, table, plan, bucketing) -> list[tuple]:
        return _checksums(plan, bucketing, self._check_rows(table), True)

    def content_digests(self, table, plan, bucketing, parts, buckets) -> list[tuple]:
        return _digests(plan, bucketing, parts, self._check_rows(table), buckets, True)

    def content_rows(self, table, plan, bucketing, parts, buckets) -> list[ContentRow]:
        return _content_rows(plan, bucketing, parts, self._check_rows(table), buckets, True)

    def delete_keys(self, table: str, plan: TablePlan, key_texts: list[str]) -> int:
        doomed = set(key_texts)
        mine = {id(r) for r in self._check_rows(table)}
        before = len(self.tables[table])
        self.tables[table] = [r for r in self.tables[table]
                              if id(r) not in mine or key_text(plan, r, True) not in doomed]
        return before - len(self.tables[table])

    @contextlib.contextmanager
    def staged_keys(self, table, plan, bucketing, buckets, keys: pa.Table, tag: str):
        yield _Staged(self, table, plan, bucketing, buckets, keys.to_pylist())


@dataclasses.dataclass
class _Staged:
    dest: FakeDestinationChecks
    table: str
    plan: TablePlan
    bucketing: Bucketing
    buckets: list[int]
    keys: list[dict]

    def _gone(self) -> list[dict]:
        staged = {key_text(self.plan, k, True) for k in self.keys}
        rows = _in(self.plan, self.bucketing, self.dest._check_rows(self.table), self.buckets,
                   True)
        return [r for r in rows if key_text(self.plan, r, True) not in staged]

    def count_gone(self) -> int:
        return len(self._gone())

    def delete_gone(self) -> int:
        gone = {id(r) for r in self._gone()}
        before = len(self.dest.tables[self.table])
        self.dest.tables[self.table] = [r for r in self.dest.tables[self.table]
                                        if id(r) not in gone]
        return before - len(self.dest.tables[self.table])

    def missing(self) -> list[dict]:
        rows = _in(self.plan, self.bucketing, self.dest._check_rows(self.table), self.buckets,
                   True)
        have = {key_text(self.plan, r, True) for r in rows}
        return [k for k in self.keys if key_text(self.plan, k, True) not in have]


def _slot(gate, plan: TablePlan):
    return gate.slot(plan.tenant, plan.table) if gate is not None else contextlib.nullcontext()
