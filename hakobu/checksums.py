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

Here: the comparison and the repair decisions. The buckets are hakobu/bucketing.py's; the
queries of each side are its adapter's, behind hakobu.ports.SourceChecks / DestinationChecks
(resources/mysql_checks.py: it reads only key columns, so MariaDB answers from a covering
secondary index; resources/bigquery_checks.py).
"""
import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from hakobu.bucketing import (DEFAULT_BUCKET_ROWS, MASK64, Bucketing, choose_bucketing,
                              key_columns, key_specs)
from hakobu.errors import LoadError
from hakobu.keys import to_source_value
from hakobu.plan import TablePlan
from hakobu.key_stats import keep_stats, recall
from hakobu.ports import KeyStats
from hakobu.rotation import night_number
from hakobu.types import dest_schema, to_dest

REPAIR_GROUP_ROWS = 500_000      # source keys held (and staged) at once during a repair
KEYS_PER_QUERY = 1000            # keys per source read when re-reading rows by key

__all__ = ["DEFAULT_BUCKET_ROWS", "Bucketing", "BucketDiff", "Comparison", "RepairStats",
           "choose_bucketing", "compare_table", "diff_buckets", "key_columns", "read_by_keys",
           "repair_deletes", "size_bucketing"]


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


def _norm(rows: Iterable[tuple]) -> dict[int, tuple]:
    out = {}
    for b, n, s, x in rows:
        out[int(b)] = (int(n), int(s or 0), int(x or 0) & MASK64)
    return out


def slot(gate, plan: TablePlan):
    """The read slot of one source query (none without a gate)."""
    return gate.slot(plan.tenant, plan.table) if gate is not None else contextlib.nullcontext()


def size_bucketing(source, dest, plan: TablePlan, table: str, *, gate=None,
                   dest_exists: bool | None = None,
                   bucket_rows: int = DEFAULT_BUCKET_ROWS,
                   remembered: KeyStats | None = None) -> Bucketing:
    """The bucketing of one comparison, sized from the BigQuery copy's COUNT/MIN/MAX (the
    source's when BigQuery is empty), or from `remembered` ones: the same for the key checksums
    and the content digests."""
    return _sized(source, dest, plan, table, gate, dest_exists, bucket_rows, remembered)[0]


def _sized(source, dest, plan, table, gate, dest_exists, bucket_rows, remembered):
    """(bucketing, the stats that sized it, whether they were queried now)."""
    probe = choose_bucketing(plan, 1)          # which column sizes the buckets (and type check)
    if probe.mode == "count":
        return probe, None, False
    column = probe.column if probe.ranged else None
    distinct = probe.mode == "prefix"
    stats, fresh = remembered, False
    if stats is None:
        if dest_exists is None:
            dest_exists = dest.table_schema(table) is not None
        stats = dest.key_stats(table, plan, column, distinct) if dest_exists else None
        if stats is None or not stats.rows:
            with slot(gate, plan):
                stats = source.key_stats(plan, column, distinct)
        fresh = True
    return (choose_bucketing(plan, stats.rows, stats.lo, stats.hi, stats.distinct, bucket_rows),
            stats, fresh)


def compare_table(source, dest, plan: TablePlan, *, bucket_rows: int = DEFAULT_BUCKET_ROWS,
                  gate=None, table: str | None = None, remember: bool = False,
                  bucketing: Bucketing | None = None, run_id: str = "") -> "Comparison":
    """Compare the tenant's table in MySQL with its BigQuery copy, bucket by bucket.

    Three queries: the BigQuery copy's COUNT/MIN/MAX (to size the buckets; the source's when
    BigQuery is empty), one aggregate on the source, one on BigQuery. Read-only. `table`: the
    BigQuery table when it is not named like the source table. A destination with a `scope`
    (a shared table, e.g. the warehouse) is compared on that tenant's slice only.

    With `remember` (the nightly checks, where the destination keeps state), the stats that
    sized last night's buckets size tonight's (REMEMBER_NIGHTS, DRIFT): two queries, not
    three, on most nights. `bucketing`: reuse a comparison's (a check after its repair).
    """
    table = table or plan.bq_table
    dest_exists = dest.table_schema(table) is not None
    night = night_number()
    keeps = remember and hasattr(dest, "read_key_stats")
    if bucketing is not None:
        b, stats, fresh = bucketing, None, False
    else:
        remembered = recall(dest, table, plan, night) if keeps and dest_exists else None
        b, stats, fresh = _sized(source, dest, plan, table, gate, dest_exists, bucket_rows,
                                 remembered)
    cmp = Comparison(plan.tenant, table, b, dest_exists=dest_exists)
    t0 = time.monotonic()
    with slot(gate, plan):
        src = _norm(source.key_checksums(plan, b))
    cmp.source_seconds = time.monotonic() - t0
    t0 = time.monotonic()
    dst = _norm(dest.key_checksums(table, plan, b)) if dest_exists else {}
    cmp.dest_seconds = time.monotonic() - t0
    cmp.source_rows = sum(v[0] for v in src.values())
    cmp.dest_rows = sum(v[0] for v in dst.values())
    cmp.bucket_ids = set(src) | set(dst)
    cmp.buckets_total = len(cmp.bucket_ids)
    cmp.differing = diff_buckets(b, src, dst)
    if keeps and stats is not None and dest_exists:
        keep_stats(dest, table, plan, stats, fresh, cmp.source_rows, night, run_id)
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
    of a primary-key range scan, or one covering-index pass for hash buckets), stage them beside
    the table, DELETE the BigQuery rows of those buckets whose key is not staged, then
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
    for i, group in enumerate(_groups(comparison.differing)):
        _repair_group(source, dest, plan, comparison.table, b, [d.bucket for d in group],
                      stats, merge_missing, gate, f"{run_id}_{i}", allowed)
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
                  buckets: list[int], stats: RepairStats, merge_missing: bool, gate, tag: str,
                  allowed: float) -> None:
    read = source.keys_in_buckets(plan, b, buckets, gate)
    stats.source_queries += read.queries
    stats.source_index_passes += read.index_passes
    stats.source_rows_read += read.keys.num_rows
    keys = to_dest(read.keys, key_specs(plan))
    with dest.staged_keys(name, plan, b, buckets, keys, tag) as staged:
        doomed = staged.count_gone()
        if stats.rows_deleted + doomed > allowed:
            raise LoadError(
                f"refusing to delete {stats.rows_deleted + doomed} BigQuery rows, more than "
                f"{allowed:.0f} allowed (max_delete_fraction)", tenant=plan.tenant, table=name,
                hint="check the tenant's schema and tenant_value, and that both sides render "
                     "the keys alike; if the source really lost that many rows, repair with "
                     "max_delete_fraction=1.0 or reload the table")
        if doomed:
            stats.rows_deleted += staged.delete_gone()
        missing = staged.missing()
    stats.rows_missing += len(missing)
    if missing and merge_missing:
        stats.rows_merged += _merge_missing(source, dest, plan, name, missing, stats, gate, tag)


def read_by_keys(source, plan: TablePlan, keys: list[tuple], gate=None,
                 on_query=None) -> Iterator[pa.Table]:
    """The source rows with these primary keys (tenant column included), as the sync reads
    them, KEYS_PER_QUERY keys at a time (each read under the read gate)."""
    for i in range(0, len(keys), KEYS_PER_QUERY):
        batch = source.rows_by_keys(plan, keys[i:i + KEYS_PER_QUERY], gate)
        if on_query is not None:
            on_query()
        if batch.num_rows:
            yield batch


def _merge_missing(source, dest, plan: TablePlan, target: str, missing: list[dict],
                   stats: RepairStats, gate, tag: str) -> int:
    """Re-read the source rows BigQuery lacks, by key, and MERGE them (as a sync would)."""
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
