"""Hard deletes without binlog: per-bucket checksums of primary-key ranges on both sides.

`compare_table` runs ONE aggregate query on the source and ONE on BigQuery. Each returns, per
bucket of primary keys, COUNT(*) and a checksum of the keys computed identically by MariaDB and
BigQuery. Buckets whose (count, checksum) differ are where rows were deleted in MySQL (or are
missing in BigQuery). `repair_deletes` then reads the source keys of those buckets only, stages
them in BigQuery and deletes the BigQuery rows of those buckets whose key is not among them; rows
present in the source but missing in BigQuery are re-read by key and MERGEd. The checksum is about
presence (it also reconciles the load); row *content* is compared by hakobu/verify.py, over the
same buckets.

Buckets (decided once per comparison, from the BigQuery copy's COUNT/MIN/MAX; from the source
only when BigQuery is empty):

- "int"    single integer key (tenant column excluded): bucket = FLOOR(pk / 2^k), the width a
           power of two chosen so a bucket holds ~bucket_rows rows. Computed with shifts of
           non-negative values only, `IF(pk < 0, -1 - ((-1 - pk) >> k), pk >> k)`, because the
           engines disagree about everything else: MariaDB's `/` rounds to 4 decimals (FLOOR of
           -1/100000 is 0), BigQuery SUM(INT64) overflows, the emulator's NUMERIC division goes
           through floats and its `>>` sign-extends where BigQuery's does not. Checksum:
           COUNT, SUM(pk) (DECIMAL in MariaDB, BIGNUMERIC in BigQuery: exact) and BIT_XOR(pk)
           (compared modulo 2^64). BIGINT UNSIGNED (NUMERIC(20, 0) in BigQuery) is shifted in
           two halves around 2^63. A bucket is a primary-key range: repair reads it with a
           range scan of the clustered index, so cost follows the buckets that differ.
- "prefix" composite key whose first column (tenant column excluded) is an integer with enough
           distinct values, e.g. (order_id, line_no): range buckets on that column (still a
           clustered-index range), checksum BIT_XOR of a hash of the whole key (below).
- "hash"   any other key (strings, dates, binary, a low-cardinality leading column): bucket =
           MOD(h, n), n = ceil(rows / bucket_rows), checksum COUNT and BIT_XOR(h). Range
           buckets over strings are impossible to compute identically: MariaDB orders strings
           by collation ('a' < 'B' under utf8mb4_general_ci), BigQuery by code point ('B' <
           'a'), so the same boundaries put rows in different buckets. A hash is engine-neutral.
           Cost: repair finds a hash bucket's keys with one more covering-index scan of the
           tenant's rows (transfers only the differing buckets' keys); the BigQuery DELETE scans
           the key columns.
- "count"  tables without a primary key (loaded by full replace), and keys with a FLOAT/DOUBLE
           column (no text of a binary float both engines print alike): COUNT(*) only, no
           repair; the comparison still says "different" when the counts differ.

h = the first 15 hex digits of MD5 of a canonical text of the key (hakobu/canonical.py: the
text both engines give the same delivered value — integers and DECIMAL as digits, strings as
UTF-8, binary as lowercase hex, dates/datetimes as 'YYYY-MM-DD[ HH:MM:SS.ffffff]', BIT, TIME),
each column prefixed with its length in characters and ':' (netstring-like, so ('a:', 'b') and
('a', ':b') differ). 60 bits, so SUM would be redundant: a set difference hides from (COUNT,
BIT_XOR) with probability 2^-60.

The source query reads only key columns (plus the tenant column), which every InnoDB secondary
index contains, so MariaDB answers it from the smallest secondary index without touching rows
(`Using index`; a test checks EXPLAIN). For shared tables it filters by the tenant column, which
leads the cursor index.
"""

import contextlib
import dataclasses
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from hakobu.canonical import bq_col, bq_key_text, key_comparable, my_key_text
from hakobu.errors import HakobuError, LoadError, SchemaError, SourceError, SourceUnavailable
from hakobu.keys import to_source_value
from hakobu.plan import SRC, TablePlan, col_ref, keyset_after
from hakobu.sqlquote import mysql_literal, quote_ident
from hakobu.types import INT_TYPES, ColumnSpec, to_dest, zero_flag_select

DEFAULT_BUCKET_ROWS = 4000
REPAIR_GROUP_ROWS = 500_000      # source keys held (and staged) at once during a repair
KEYS_PER_QUERY = 1000            # keys per `IN` list when re-reading missing rows
STAGING = "_hakobu_stg_cks_"     # prefix of the key staging tables (under _hakobu_stg_)
TWO_63 = 1 << 63
TWO_64 = 1 << 64
MASK64 = TWO_64 - 1

Mode = Literal["int", "prefix", "hash", "count"]


# -- bucketing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bucketing:
    """How keys are put in buckets, identical for both sides of one comparison."""

    mode: Mode
    column: str | None = None       # range column ("int", "prefix")
    shift: int = 0                  # bucket = FLOOR(column / 2**shift)
    modulus: int = 1                # "hash": bucket = MOD(h, modulus)
    unsigned: bool = False          # BIGINT UNSIGNED range column (NUMERIC(20, 0) in BigQuery)

    def bounds(self, bucket: int) -> tuple[int, int] | None:
        """Inclusive key range of a bucket (range modes)."""
        if self.mode not in ("int", "prefix"):
            return None
        lo = bucket << self.shift
        return lo, lo + (1 << self.shift) - 1

    def describe(self) -> str:
        if self.mode in ("int", "prefix"):
            return (f"{self.mode}: FLOOR({self.column} / 2^{self.shift}) "
                    f"({1 << self.shift} keys wide)")
        if self.mode == "hash":
            return f"hash: MOD(md5_60(key), {self.modulus})"
        return "count only (no primary key, or a FLOAT key)"


def key_columns(plan: TablePlan) -> tuple[str, ...]:
    """The primary key without the tenant column (constant within one tenant's rows)."""
    if plan.tenant_column is None:
        return plan.primary_key
    rest = tuple(c for c in plan.primary_key if c.lower() != plan.tenant_column.lower())
    return rest or plan.primary_key


def _is_int(spec: ColumnSpec) -> bool:
    return spec.info.data_type in INT_TYPES


def _is_unsigned_bigint(spec: ColumnSpec) -> bool:
    return spec.info.data_type == "bigint" and spec.info.unsigned


def choose_bucketing(plan: TablePlan, rows: int, lo: Any = None, hi: Any = None,
                     distinct: int | None = None, bucket_rows: int = DEFAULT_BUCKET_ROWS
                     ) -> Bucketing:
    """Pure: the bucketing for a table of `rows` keys whose range column spans lo..hi."""
    if plan.full_replace or not plan.primary_key:
        return Bucketing("count")
    keys = key_columns(plan)
    if not all(key_comparable(plan.spec(k)) for k in keys):
        return Bucketing("count")    # e.g. a FLOAT key: no text both engines agree on
    first = plan.spec(keys[0])
    bucket_rows = max(1, int(bucket_rows))
    if _is_int(first):
        mode: Mode = "int" if len(keys) == 1 else "prefix"
        wanted = max(1, math.ceil(rows / bucket_rows))
        if mode == "prefix" and distinct is not None and distinct < wanted:
            mode = "hash"   # too few values of the leading column to cut the table finely
        if mode != "hash":
            unsigned = _is_unsigned_bigint(first)
            shift = 0
            if rows and lo is not None and hi is not None:
                span = int(hi) - int(lo) + 1
                shift = max(0, round(math.log2(max(1.0, span * bucket_rows / rows))))
            shift = min(shift, 63 if unsigned else 62)
            if unsigned:
                shift = max(shift, 1)   # bucket ids of unsigned keys must fit INT64
            return Bucketing(mode, column=first.name, shift=shift, unsigned=unsigned)
    return Bucketing("hash", modulus=max(1, math.ceil(rows / bucket_rows)))


# -- SQL: MySQL side ----------------------------------------------------------------------------

def _my_hash(plan: TablePlan) -> str:
    text = my_key_text([plan.spec(k) for k in key_columns(plan)])
    return f"CAST(CONV(LEFT(MD5({text}), 15), 16, 10) AS UNSIGNED)"


def _my_bucket(plan: TablePlan, b: Bucketing) -> str:
    if b.mode == "hash":
        return f"({_my_hash(plan)} MOD {int(b.modulus)})"
    if b.mode == "count":
        return "0"
    c, k = col_ref(b.column), int(b.shift)
    if not plan.spec(b.column).info.unsigned:
        return f"IF({c} < 0, -1 - CAST((-1 - {c}) >> {k} AS SIGNED), CAST({c} >> {k} AS SIGNED))"
    return f"CAST({c} >> {k} AS SIGNED)"


def _from(plan: TablePlan, index: str | None = None) -> str:
    hint = f" FORCE INDEX ({quote_ident(index)})" if index else ""
    return f"{quote_ident(plan.schema)}.{quote_ident(plan.table)} AS {SRC}{hint}"


def _tenant_where(plan: TablePlan) -> list[str]:
    if plan.tenant_column is None:
        return []
    from hakobu.plan import tenant_predicate  # the one rule for selecting a tenant's rows
    return [tenant_predicate(plan)]


def _where(conds: list[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def source_stats_sql(plan: TablePlan, column: str | None, distinct: bool = False) -> str:
    cols = ["COUNT(*) AS n"]
    if column is not None:
        c = col_ref(column)
        cols += [f"MIN({c}) AS lo", f"MAX({c}) AS hi"]
        if distinct:
            cols.append(f"COUNT(DISTINCT {c}) AS d")
    return f"SELECT {', '.join(cols)} FROM {_from(plan)}{_where(_tenant_where(plan))}"


def source_aggregate_sql(plan: TablePlan, b: Bucketing) -> str:
    """One aggregate over the tenant's keys: (bucket, rows, sum, xor). Key columns only, so any
    secondary index covers it. ORDER BY NULL: no sort of the (small) grouped result."""
    if b.mode == "int":
        c = col_ref(b.column)
        agg = f"SUM({c}) AS s, BIT_XOR({c}) AS x"
    elif b.mode == "count":
        agg = "0 AS s, 0 AS x"
    else:
        agg = f"0 AS s, BIT_XOR({_my_hash(plan)}) AS x"
    # GROUP BY 1, not the alias: MariaDB resolves a name in GROUP BY to a column before an alias
    group = "" if b.mode == "count" else " GROUP BY 1 ORDER BY NULL"
    return (f"SELECT {_my_bucket(plan, b)} AS b, COUNT(*) AS n, {agg} FROM {_from(plan)}"
            f"{_where(_tenant_where(plan))}{group}")


def _my_range(plan: TablePlan, b: Bucketing, ranges: list[tuple[int, int]]) -> str:
    c = col_ref(b.column)
    return "(" + " OR ".join(f"{c} BETWEEN {int(lo)} AND {int(hi)}" for lo, hi in ranges) + ")"


def _key_list_sql(plan: TablePlan, keys: list[tuple]) -> str:
    """`pk IN (...)`, or an OR of key equalities for composite keys (range-optimised)."""
    pk = plan.primary_key
    if len(pk) == 1:
        return f"{col_ref(pk[0])} IN ({', '.join(mysql_literal(k[0]) for k in keys)})"
    return "(" + " OR ".join(
        "(" + " AND ".join(f"{col_ref(c)} = {mysql_literal(v)}" for c, v in zip(pk, k)) + ")"
        for k in keys) + ")"


# -- SQL: BigQuery side -------------------------------------------------------------------------

_bq_col = bq_col


def _bq_hash(plan: TablePlan, alias: str = "") -> str:
    text = bq_key_text([plan.spec(k) for k in key_columns(plan)], alias)
    return f"CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5({text})), 1, 15)) AS INT64)"


def _bq_num(value: int) -> str:
    return str(int(value)) if -TWO_63 <= value < TWO_63 else f"BIGNUMERIC '{int(value)}'"


def _bq_bucket(plan: TablePlan, b: Bucketing, alias: str = "") -> str:
    if b.mode == "hash":
        return f"MOD({_bq_hash(plan, alias)}, {int(b.modulus)})"
    if b.mode == "count":
        return "0"
    c, k = _bq_range(plan, b, alias), int(b.shift)
    if b.unsigned:   # NUMERIC(20, 0): shift the two halves around 2^63 separately (k >= 1)
        return (f"IF({c} >= BIGNUMERIC '{TWO_63}', (CAST({c} - BIGNUMERIC '{TWO_63}' AS INT64)"
                f" >> {k}) + {TWO_63 >> k}, CAST({c} AS INT64) >> {k})")
    return f"IF({c} < 0, -1 - ((-1 - {c}) >> {k}), {c} >> {k})"


def _bq_range(plan: TablePlan, b: Bucketing, alias: str = "") -> str:
    """The range column in BigQuery (b.column is its MySQL name)."""
    return _bq_col(plan.bq(b.column), alias)


def _bq_signed64(plan: TablePlan, b: Bucketing, alias: str = "") -> str:
    c = _bq_range(plan, b, alias)
    if b.unsigned:
        return f"CAST(IF({c} >= BIGNUMERIC '{TWO_63}', {c} - BIGNUMERIC '{TWO_64}', {c}) AS INT64)"
    return c


def _bq_where(dest_slice: str | None) -> str:
    return f" WHERE {dest_slice}" if dest_slice else ""


def dest_stats_sql(table_ref: str, column: str | None, distinct: bool = False,
                   dest_slice: str | None = None) -> str:
    cols = ["COUNT(*) AS n"]
    if column is not None:
        c = _bq_col(column, "T")
        cols += [f"MIN({c}) AS lo", f"MAX({c}) AS hi"]
        if distinct:
            cols.append(f"COUNT(DISTINCT {c}) AS d")
    return f"SELECT {', '.join(cols)} FROM {table_ref} T{_bq_where(dest_slice)}"


def dest_aggregate_sql(plan: TablePlan, b: Bucketing, table_ref: str,
                       dest_slice: str | None = None) -> str:
    """The same (bucket, rows, sum, xor) over the BigQuery table: a customer table holds one
    tenant; in a shared table `dest_slice` (a condition on alias T) selects the tenant's rows."""
    if b.mode == "int":
        agg = (f"SUM(CAST({_bq_range(plan, b, 'T')} AS BIGNUMERIC)) AS s, "
               f"BIT_XOR({_bq_signed64(plan, b, 'T')}) AS x")
    elif b.mode == "count":
        agg = "0 AS s, 0 AS x"
    else:
        agg = f"0 AS s, BIT_XOR({_bq_hash(plan, 'T')}) AS x"
    group = "" if b.mode == "count" else " GROUP BY 1"   # (the emulator mis-groups a constant)
    return (f"SELECT {_bq_bucket(plan, b, 'T')} AS b, COUNT(*) AS n, {agg} FROM {table_ref} T"
            f"{_bq_where(dest_slice)}{group}")


def _bq_scope(plan: TablePlan, b: Bucketing, buckets: list[int], alias: str) -> str:
    """BigQuery condition selecting the rows of the given buckets."""
    if b.mode in ("int", "prefix"):
        c = _bq_range(plan, b, alias)
        return "(" + " OR ".join(f"{c} BETWEEN {_bq_num(lo)} AND {_bq_num(hi)}"
                                 for lo, hi in _ranges(b, buckets)) + ")"
    return f"{_bq_bucket(plan, b, alias)} IN ({', '.join(str(int(x)) for x in buckets)})"


def _ranges(b: Bucketing, buckets: Iterable[int]) -> list[tuple[int, int]]:
    """Adjacent buckets merged into inclusive key ranges."""
    out: list[list[int]] = []
    for x in sorted(buckets):
        lo, hi = b.bounds(x)
        if out and out[-1][1] + 1 == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


# -- comparison ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BucketDiff:
    bucket: int
    lo: int | None              # inclusive key range (range modes)
    hi: int | None
    source_rows: int
    dest_rows: int

    def describe(self) -> str:
        where = f"[{self.lo}..{self.hi}]" if self.lo is not None else f"#{self.bucket}"
        return f"{where} source {self.source_rows} / BigQuery {self.dest_rows}"


@dataclass
class Comparison:
    tenant: str
    table: str                  # the BigQuery table compared (usually the source table's name)
    bucketing: Bucketing
    source_rows: int = 0
    dest_rows: int = 0
    buckets_total: int = 0
    differing: list[BucketDiff] = field(default_factory=list)
    dest_exists: bool = True
    source_seconds: float = 0.0
    dest_seconds: float = 0.0
    bucket_ids: set = field(default_factory=set)
    # the content comparison of this run (hakobu.verify.ContentComparison), if one ran, and
    # the verification state after it (hakobu.verify.VerifyNote)
    content: object = None
    note: object = None

    @property
    def equal(self) -> bool:
        """The keys are equal (every bucket's count and key checksum)."""
        return not self.differing and self.source_rows == self.dest_rows

    @property
    def in_sync(self) -> bool:
        """Keys equal, and the content compared this run equal (or repaired)."""
        c = self.content
        return self.equal and (c is None or c.equal or c.repaired)

    @property
    def buckets_differing(self) -> int:
        return len(self.differing)

    @property
    def ranges(self) -> list[tuple[int | None, int | None]]:
        return [(d.lo, d.hi) for d in self.differing]

    @property
    def rows_extra_at_least(self) -> int:
        """BigQuery rows that must go (at least: a bucket may also miss as many as it has extra)."""
        return sum(max(0, d.dest_rows - d.source_rows) for d in self.differing)

    @property
    def rows_missing_at_least(self) -> int:
        return sum(max(0, d.source_rows - d.dest_rows) for d in self.differing)

    def summary(self) -> str:
        if self.equal:
            text = f"keys equal: {self.source_rows} rows in {self.buckets_total} buckets"
        else:
            text = (f"keys DIFFERENT: source {self.source_rows} rows, BigQuery "
                    f"{self.dest_rows}; {self.buckets_differing} of {self.buckets_total} "
                    "buckets differ")
        if self.content is not None:
            text += "; " + self.content.summary()
        if self.note is not None:
            text += "; " + self.note.describe()
        return text

    def metadata(self, limit: int = 20) -> dict:
        shown = "; ".join(d.describe() for d in self.differing[:limit])
        if len(self.differing) > limit:
            shown += f"; … {len(self.differing) - limit} more"
        return {"source_rows": self.source_rows, "bigquery_rows": self.dest_rows,
                "row_difference": self.dest_rows - self.source_rows,
                "buckets_total": self.buckets_total,
                "buckets_differing": self.buckets_differing,
                "rows_extra_at_least": self.rows_extra_at_least,
                "rows_missing_at_least": self.rows_missing_at_least,
                "bucketing": self.bucketing.describe(),
                "differing_buckets": shown or "-",
                "bigquery_table_exists": self.dest_exists,
                "source_seconds": round(self.source_seconds, 3),
                "bigquery_seconds": round(self.dest_seconds, 3),
                "compared": (f"keys in all {self.buckets_total} buckets; content: "
                             + (self.content.slice_desc if self.content is not None
                                else "not compared in this run")),
                **(self.content.metadata() if self.content is not None else {}),
                **(self.note.metadata() if self.note is not None else {})}


def diff_buckets(b: Bucketing, source: dict[int, tuple], dest: dict[int, tuple]
                 ) -> list[BucketDiff]:
    """Pure: the buckets whose (rows, sum, xor) differ. Values are normalised ints; XOR is
    compared modulo 2^64 (MariaDB's BIT_XOR is unsigned, BigQuery's signed)."""
    out = []
    for bucket in sorted(set(source) | set(dest)):
        s, d = source.get(bucket, (0, 0, 0)), dest.get(bucket, (0, 0, 0))
        if s != d:
            lo_hi = b.bounds(bucket) or (None, None)
            out.append(BucketDiff(bucket, lo_hi[0], lo_hi[1], s[0], d[0]))
    return out


def _norm(rows: Iterable) -> dict[int, tuple]:
    out = {}
    for b, n, s, x in rows:
        out[int(b)] = (int(n), int(s or 0), int(x or 0) & MASK64)
    return out


def size_bucketing(source, dest, plan: TablePlan, table: str, *, gate=None,
                   dest_exists: bool | None = None,
                   bucket_rows: int = DEFAULT_BUCKET_ROWS) -> Bucketing:
    """The bucketing of one comparison, sized from the BigQuery copy's COUNT/MIN/MAX (the
    source's when BigQuery is empty): the same for the key checksums and the content digests."""
    probe = choose_bucketing(plan, 1)          # which column sizes the buckets (and type check)
    if probe.mode == "count":
        return probe
    column = probe.column if probe.mode in ("int", "prefix") else None
    distinct = probe.mode == "prefix"
    if dest_exists is None:
        dest_exists = dest.table_schema(table) is not None
    stats = None
    if dest_exists:
        row = dest.rows(dest_stats_sql(dest.ref(table), column and plan.bq(column), distinct,
                                       _dest_slice(dest)))[0]
        if int(row["n"]):
            stats = (int(row["n"]), row.get("lo"), row.get("hi"), row.get("d"))
    if stats is None:
        with _slot(gate, plan):
            n, *rest = _my_rows(source, source_stats_sql(plan, column, distinct), plan)[0]
        stats = (int(n), *(rest + [None, None, None])[:3])
    n, lo, hi, d = stats
    return choose_bucketing(plan, n, lo, hi, None if d is None else int(d), bucket_rows)


def compare_table(source, dest, plan: TablePlan, *, bucket_rows: int = DEFAULT_BUCKET_ROWS,
                  gate=None, table: str | None = None) -> "Comparison":
    """Compare the tenant's table in MySQL with its BigQuery copy, bucket by bucket.

    Three queries: the BigQuery copy's COUNT/MIN/MAX (to size the buckets; the source's when
    BigQuery is empty), one aggregate on the source, one on BigQuery. Read-only. `table`: the
    BigQuery table when it is not named like the source table. A destination with a `scope`
    (a shared table, e.g. the warehouse) is compared on that tenant's slice only.
    """
    table = table or plan.bq_table
    table_ref = dest.ref(table)
    dest_slice = _dest_slice(dest)
    dest_exists = dest.table_schema(table) is not None
    b = size_bucketing(source, dest, plan, table, gate=gate, dest_exists=dest_exists,
                       bucket_rows=bucket_rows)
    cmp = Comparison(plan.tenant, table, b, dest_exists=dest_exists)
    t0 = time.monotonic()
    with _slot(gate, plan):
        src = _norm(_my_rows(source, source_aggregate_sql(plan, b), plan))
    cmp.source_seconds = time.monotonic() - t0
    t0 = time.monotonic()
    dst: dict[int, tuple] = {}
    if dest_exists:
        dst = _norm((r["b"], r["n"], r["s"], r["x"])
                    for r in dest.rows(dest_aggregate_sql(plan, b, table_ref, dest_slice)))
    cmp.dest_seconds = time.monotonic() - t0
    cmp.source_rows = sum(v[0] for v in src.values())
    cmp.dest_rows = sum(v[0] for v in dst.values())
    cmp.bucket_ids = set(src) | set(dst)
    cmp.buckets_total = len(cmp.bucket_ids)
    cmp.differing = diff_buckets(b, src, dst)
    return cmp


# -- repair -------------------------------------------------------------------------------------

@dataclass
class RepairStats:
    rows_deleted: int = 0           # BigQuery rows whose key is gone from the source
    rows_missing: int = 0           # source rows that BigQuery did not have
    rows_merged: int = 0            # of those, re-read and merged
    buckets_repaired: int = 0
    source_rows_read: int = 0       # source keys read (only in differing buckets)
    source_queries: int = 0
    source_index_passes: int = 0    # whole covering-index passes (hash buckets only)
    seconds: float = 0.0

    def metadata(self) -> dict:
        return {"deletes_rows_deleted": self.rows_deleted,
                "deletes_rows_missing": self.rows_missing,
                "deletes_rows_merged": self.rows_merged,
                "deletes_buckets_repaired": self.buckets_repaired,
                "deletes_source_rows_read": self.source_rows_read,
                "deletes_source_index_passes": self.source_index_passes,
                "deletes_seconds": round(self.seconds, 3)}


def repair_deletes(source, dest, plan: TablePlan, comparison: Comparison, *,
                   merge_missing: bool = True, gate=None, run_id: str | None = None,
                   max_delete_fraction: float = 0.5) -> RepairStats:
    """Make BigQuery hold exactly the source's keys in the buckets that differ.

    For each group of differing buckets: read the source keys of those buckets (keyset chunks
    of a primary-key range scan, or one covering-index pass for hash buckets), stage them in
    `_hakobu_stg_cks_*`, DELETE the BigQuery rows of those buckets whose key is not staged, then
    re-read by key and MERGE the source rows BigQuery lacks (merge_missing: only where BigQuery
    holds the plan's columns as they are, i.e. the customer's table). Buckets that are equal are
    never read. Idempotent: a rerun after a crash finds what is left.

    Safety valve: a repair that would delete more than `max_delete_fraction` of the BigQuery rows
    (a wrong tenant_value or schema, keys rendered differently) stops with a LoadError before
    the DELETE that would cross the line (each group's deletions are counted first); pass 1.0
    to allow it.
    """
    stats = RepairStats()
    b = comparison.bucketing
    if comparison.equal or b.mode == "count" or not comparison.dest_exists:
        return stats
    allowed = max_delete_fraction * comparison.dest_rows
    if comparison.rows_extra_at_least > allowed:
        raise LoadError(
            f"refusing to delete at least {comparison.rows_extra_at_least} of "
            f"{comparison.dest_rows} BigQuery rows ({comparison.summary()})",
            tenant=plan.tenant, table=comparison.table,
            hint="check the tenant's schema and tenant_value; if the source really lost that "
                 "many rows, repair with max_delete_fraction=1.0 or reload the table")
    t0 = time.monotonic()
    run_id = run_id or uuid.uuid4().hex[:8]
    index = range_index(source, plan, b) if b.mode in ("int", "prefix") else None
    for i, group in enumerate(_groups(comparison.differing)):
        _repair_group(source, dest, plan, comparison.table, b, [d.bucket for d in group],
                      index, stats, merge_missing, gate, f"{run_id}_{i}", allowed)
        stats.buckets_repaired += len(group)
    stats.seconds = time.monotonic() - t0
    return stats


def _groups(diffs: list[BucketDiff]) -> list[list[BucketDiff]]:
    out: list[list[BucketDiff]] = [[]]
    rows = 0
    for d in diffs:
        if out[-1] and rows + d.source_rows > REPAIR_GROUP_ROWS:
            out.append([])
            rows = 0
        out[-1].append(d)
        rows += d.source_rows
    return [g for g in out if g]


def _repair_group(source, dest, plan: TablePlan, name: str, b: Bucketing,
                  buckets: list[int], index: str | None, stats: RepairStats,
                  merge_missing: bool, gate, tag: str, allowed: float) -> None:
    # the key without the tenant column: constant in the compared slice, and of another type
    # in the warehouse (tenant_id STRING there, the source's discriminator here)
    kcols = list(key_columns(plan))
    pk_specs = [plan.spec(k) for k in kcols]
    keys = to_dest(_read_source_keys(source, plan, b, buckets, index, stats, gate), pk_specs)
    bcols = [s.bq_name for s in pk_specs]
    table = dest.ref(name)
    # the tenant in the name: in a shared dataset another tenant's repair may run meanwhile
    stg_name = f"{STAGING}{plan.tenant}_{name}_{tag}"[:1024]
    stg = dest.ref(stg_name)
    cols = ", ".join(f"{_bq_col(s.bq_name)} {s.staging_bq_type}" for s in pk_specs)
    dest.sql(f"DROP TABLE IF EXISTS {stg}", table=name)
    dest.sql(f"CREATE TABLE {stg} ({cols}) OPTIONS(expiration_timestamp=TIMESTAMP_ADD("
             "CURRENT_TIMESTAMP(), INTERVAL 2 DAY))", table=name)
    try:
        if keys.num_rows:
            _load(dest, plan, stg_name, keys)
        match = " AND ".join(f"{_bq_col(k, 'S')} = {_bq_col(k, 'T')}" for k in bcols)
        scope = _bq_scope(plan, b, buckets, "T")
        dest_slice = _dest_slice(dest)
        if dest_slice:
            scope = f"({dest_slice}) AND {scope}"
        gone = f"{scope} AND NOT EXISTS (SELECT 1 FROM {stg} S WHERE {match})"
        doomed = int(dest.rows(f"SELECT COUNT(*) AS n FROM {table} T WHERE {gone}")[0]["n"])
        if stats.rows_deleted + doomed > allowed:
            raise LoadError(
                f"refusing to delete {stats.rows_deleted + doomed} BigQuery rows, more than "
                f"{allowed:.0f} allowed (max_delete_fraction)", tenant=plan.tenant, table=name,
                hint="check the tenant's schema and tenant_value, and that both sides render "
                     "the keys alike; if the source really lost that many rows, repair with "
                     "max_delete_fraction=1.0 or reload the table")
        if doomed:
            job = dest.sql(f"DELETE FROM {table} T WHERE {gone}", table=name)
            stats.rows_deleted += job.num_dml_affected_rows or 0
        sel = ", ".join(_bq_col(k, "S") for k in bcols)
        missing = dest.rows(f"SELECT {sel} FROM {stg} S WHERE NOT EXISTS (SELECT 1 FROM "
                            f"{table} T WHERE {scope} AND {match})")
        stats.rows_missing += len(missing)
        if missing and merge_missing:
            stats.rows_merged += _merge_missing(source, dest, plan, name, missing, stats,
                                                gate, tag)
    finally:
        with contextlib.suppress(HakobuError):
            dest.sql(f"DROP TABLE IF EXISTS {stg}", table=name)


def _key_plan(plan: TablePlan) -> TablePlan:
    """The plan narrowed to the primary-key columns (their SELECT expressions and types)."""
    specs = tuple(plan.spec(k) for k in plan.primary_key)
    return dataclasses.replace(plan, specs=specs, zero_dates="to_null")


def source_keys_sql(plan: TablePlan, b: Bucketing, key_range: tuple[int, int],
                    after: tuple | None, index: str | None, limit: int) -> str:
    """The next keyset chunk of the tenant's keys in one range of the range column: a range
    scan of `index` (PRIMARY, or one starting with (tenant column, range column))."""
    select = ", ".join(plan.spec(k).select_sql for k in plan.primary_key)
    where = _tenant_where(plan) + [_my_range(plan, b, [key_range])]
    if after is not None:
        where.append(f"({keyset_after(plan.primary_key, after)})")
    order = ", ".join(col_ref(k) + " ASC" for k in plan.primary_key)
    return (f"SELECT {select} FROM {_from(plan, index)}{_where(where)} "
            f"ORDER BY {order} LIMIT {int(limit)}")


def _read_source_keys(source, plan: TablePlan, b: Bucketing, buckets: list[int],
                      index: str | None, stats: RepairStats, gate) -> pa.Table:
    kplan = _key_plan(plan)
    select = ", ".join(s.select_sql for s in kplan.specs)
    batches = []
    if b.mode == "hash":
        # one covering-index pass over the tenant's keys, returning only these buckets' keys
        where = _tenant_where(plan) + [f"{_my_bucket(plan, b)} IN "
                                       f"({', '.join(str(int(x)) for x in buckets)})"]
        with _slot(gate, plan):
            batches.append(source.read_chunk(kplan, f"SELECT {select} FROM {_from(plan)}"
                                                    f"{_where(where)}"))
        stats.source_queries += 1
        stats.source_index_passes += 1
    else:
        limit = max(1, int(plan.chunk_rows))
        for lo, hi in _ranges(b, buckets):
            after = None
            while True:
                sql = source_keys_sql(plan, b, (lo, hi), after, index, limit)
                with _slot(gate, plan):
                    batch = source.read_chunk(kplan, sql)
                stats.source_queries += 1
                if batch.num_rows:
                    batches.append(batch)
                if batch.num_rows < limit:
                    break
                last = batch.num_rows - 1
                after = tuple(to_source_value(plan.spec(k), batch.column(k)[last].as_py())
                              for k in plan.primary_key)
    keys = (pa.concat_tables(batches) if batches
            else pa.schema([pa.field(s.name, s.arrow_type) for s in kplan.specs]).empty_table())
    stats.source_rows_read += keys.num_rows
    return keys


def range_index(source, plan: TablePlan, b: Bucketing) -> str | None:
    """An index to range-scan keys of a bucket: one starting with (tenant column,) range column
    (the tenant's keys only), else one starting with the range column (usually PRIMARY)."""
    refl = source.reflect(plan.schema, plan.table)
    if refl is None:
        raise SchemaError(f"table {plan.schema}.{plan.table} does not exist",
                          tenant=plan.tenant, table=plan.table)
    wants = ([[plan.tenant_column.lower(), b.column.lower()]] if plan.tenant_column else [])
    wants.append([b.column.lower()])
    for want in wants:
        for name in sorted(refl.indexes, key=lambda n: (n != "PRIMARY", n)):
            cols = [c.lower() for c in refl.indexes[name]]
            if cols[:len(want)] == want:
                return name
    return None


def _load(dest, plan: TablePlan, stg_name: str, keys: pa.Table) -> None:
    from resources.bigquery_dest import BigQueryDestination

    dest.work_dir.mkdir(parents=True, exist_ok=True)
    path = dest.work_dir / f"{dest.dataset}.{stg_name}.{uuid.uuid4().hex[:8]}.parquet"
    try:
        pq.write_table(keys, path, compression="snappy")
        try:
            BigQueryDestination.load_parquet(dest, path, stg_name)
        except HakobuError:
            raise
        except Exception as exc:
            raise LoadError(f"loading keys into {stg_name} failed: {type(exc).__name__}: "
                            f"{str(exc)[:300]}", tenant=plan.tenant, table=plan.table) from exc
    finally:
        path.unlink(missing_ok=True)


def read_by_keys(source, plan: TablePlan, keys: list[tuple], gate=None, on_query=None):
    """The source rows with these primary keys, as the sync reads them (its SELECT expressions
    and zero-date policy), KEYS_PER_QUERY keys a query, each query under the read gate."""
    selects = [s.select_sql for s in plan.specs]
    selects += [zero_flag_select(s, i) for i, s in plan.zero_flag_columns]
    for i in range(0, len(keys), KEYS_PER_QUERY):
        where = _tenant_where(plan) + [_key_list_sql(plan, keys[i:i + KEYS_PER_QUERY])]
        sql = f"SELECT {', '.join(selects)} FROM {_from(plan)}{_where(where)}"
        with _slot(gate, plan):
            batch = source.read_chunk(plan, sql)
        if on_query is not None:
            on_query()
        if batch.num_rows:
            yield batch


def _merge_missing(source, dest, plan: TablePlan, target: str, missing: list[dict],
                   stats: RepairStats, gate, tag: str) -> int:
    """Re-read the source rows BigQuery lacks, by key, and MERGE them (as a sync would)."""
    from hakobu.types import dest_schema

    keys = [tuple(to_source_value(plan.spec(k), r[plan.bq(k)]) if plan.bq(k) in r
                  else plan.tenant_value for k in plan.primary_key) for r in missing]

    def counted() -> None:
        stats.source_queries += 1

    merged = 0
    with dest.staging_file(target, dest_schema(list(plan.specs))) as sf:
        for batch in read_by_keys(source, plan, keys, gate, on_query=counted):
            sf.write(to_dest(batch, list(plan.specs)))
        path = sf.close()
        if path is not None:
            m = dest.merge(target, [path], list(plan.specs),
                           [plan.bq(k) for k in plan.primary_key], run_id=f"cks_{tag}")
            merged = m.rows_staged
    return merged


# -- plumbing -----------------------------------------------------------------------------------

def _dest_slice(dest) -> str | None:
    """A destination shared by tenants (resources.warehouse_dest) exposes `scope`, a condition
    on alias T selecting this tenant's rows; a customer's dataset has none."""
    scope = getattr(dest, "scope", None)
    return scope if isinstance(scope, str) and scope else None


def _slot(gate, plan: TablePlan):
    return gate.slot(plan.tenant, plan.table) if gate is not None else contextlib.nullcontext()


def _my_rows(source, sql: str, plan: TablePlan) -> list[tuple]:
    """Run an aggregate on the source through a raw DB-API cursor (no bind-parameter parsing
    of the SQL text, whose literals contain ':' and '%')."""
    from hakobu.errors import is_transient

    try:
        conn = source.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            rows = [tuple(r) for r in cur.fetchall()]
            cur.close()
        finally:
            conn.close()
        return rows
    except HakobuError:
        raise
    except Exception as exc:
        cls = SourceUnavailable if is_transient(exc) else SourceError
        raise cls(f"checksum query failed: {type(exc).__name__}: {str(exc)[:300]}",
                  tenant=plan.tenant, table=plan.table) from exc
