"""Pending slices: how tenant runs write the shared warehouse without one DML statement each.

BigQuery runs at most 2 mutating DML statements per table at once and queues 20 more (the next
fails), and counts every job that writes a table against 1,500 per table per day. A MERGE per
tenant run into the shared warehouse table breaks both at a few hundred tenants. So a tenant run
does not MERGE into the warehouse table; it *stages* its slice:

- `stage`: the sink's staged rows go into a pending table of their own (one DDL statement and
  load jobs, which write that new table, not the warehouse table). Its name records the
  warehouse table (a tag), a sequence (nanoseconds), the tenant and the kind:
  `upsert` (rows to merge on the key), `full` (the tenant's complete slice: rows of the slice
  not in it, nor in a later pending slice, are deleted) or `replace` (no key: the slice becomes
  exactly these rows). The tenant's watermark then moves: the rows are durable in BigQuery.
- `merge_all`: the merge step (hakobu.warehouse_merge, scheduled every few minutes, or at the
  end of a run launched by hand) takes every pending slice of a warehouse table at once, under
  the table's merge lock, and applies them in ONE MERGE: per (tenant, key) the newest slice's
  row wins; a `full` or `replace` slice hides the tenant's older slices and deletes what it
  lacks, scoped to that tenant's partition. Then the merged slices are dropped, oldest first,
  so a crash between MERGE and drop leaves only slices at least as new as any dropped one — a
  MERGE of them again is idempotent and never brings an older value back.
- the lock is a table (`_hakobu_lock_<tag>`): creating it is atomic (409 when it exists). It
  expires by itself (LOCK_TTL_S), and one older than that is taken over, so a crashed merge
  never blocks the warehouse for long.

Mutating DML per warehouse table: one statement per merge step, whatever the tenant count; with
the default schedule (every 5 minutes) at most 288 a day, far below 1,500 with the rest (slice
clears, backfill swaps, repairs) added.
"""

import dataclasses
import hashlib
import logging
import re
import time
from datetime import datetime, timedelta, timezone

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from hakobu.bqschema import SEQ, SYNCED_AT
from hakobu.errors import LoadError
from hakobu.policy import tenant_bucket
from hakobu.sqlquote import bq_string
from hakobu.state import MergeStats

PENDING_PREFIX = "_hakobu_pending_"
LOCK_PREFIX = "_hakobu_lock_"
PSEQ = "_hakobu_pseq"
LOCK_TTL_S = 1800            # a merge lock older than this is a crashed merge's: taken over
PENDING_EXPIRY_DAYS = 30     # a pending slice nobody merges for this long expires (never sooner)
KINDS = ("upsert", "full", "replace")
log = logging.getLogger("hakobu.warehouse")


def tag(table: str) -> str:
    """A warehouse table's tag in pending and lock names (table names may hold underscores,
    so the table's own name could not be told apart from a tenant's in a prefix)."""
    return hashlib.sha256(table.encode()).hexdigest()[:10]


def pending_prefix(table: str) -> str:
    return f"{PENDING_PREFIX}{tag(table)}_"


@dataclasses.dataclass(frozen=True)
class Pending:
    name: str
    table: str
    tenant: str
    bucket: int
    seq: int
    kind: str
    columns: dict            # name (lower) -> (name, BigQuery type)

    @property
    def order(self) -> tuple:
        return (self.tenant, self.seq)


def stage(dest, table: str, files, specs, extra, *, kind: str, run_id: str = "") -> MergeStats:
    """Load a tenant's slice into a pending table of its own (dest: that tenant's
    WarehouseDestination). Returns what was staged; nothing is merged here."""
    if kind not in KINDS:
        raise ValueError(kind)
    name = f"{pending_prefix(table)}{kind[0]}{time.time_ns()}_{dest.tenant}"
    cols = [(s.bq_name, s.staging_bq_type) for s in specs] + list(extra) + [(SEQ, "INT64")]
    stats = MergeStats()
    dest.sql(f"CREATE TABLE {dest.ref(name)} ("
             + ", ".join(f"`{n}` {t}" for n, t in cols)
             + ") OPTIONS(expiration_timestamp=TIMESTAMP_ADD(CURRENT_TIMESTAMP(), "
               f"INTERVAL {PENDING_EXPIRY_DAYS * 24} HOUR))", table=table)
    try:
        for f in files:
            with dest._errors("load job", table):
                stats.rows_staged += dest.load_parquet(f, name)
            stats.bytes_staged += f.stat().st_size
    except BaseException:
        dest.drop_table(name)      # half loaded: never merged (the watermark did not move)
        raise
    stats.dml_rows = stats.rows_staged     # what this slice hands to the warehouse
    return stats


_NAME = re.compile(r"([ufr])(\d+)_([a-z][a-z0-9_]*)")
_KIND = {k[0]: k for k in KINDS}
_TAG_LEN = len(tag(""))


def parse_name(name: str) -> tuple[str, str, int, str] | None:
    """A pending table's name as (table tag, kind, sequence, tenant); None: not one."""
    if not name.startswith(PENDING_PREFIX):
        return None
    rest = name[len(PENDING_PREFIX):]
    m = _NAME.fullmatch(rest[_TAG_LEN + 1:]) if rest[_TAG_LEN:_TAG_LEN + 1] == "_" else None
    return (rest[:_TAG_LEN], _KIND[m.group(1)], int(m.group(2)), m.group(3)) if m else None


def list_pending(dest, table: str, tenant: str | None = None) -> list[Pending]:
    """The pending slices of a warehouse table (of one tenant), oldest first. The name holds
    the kind, the sequence and the tenant; the columns are the table's own (tables.get)."""
    out = []
    for name in dest.list_tables((pending_prefix(table),)):
        parsed = parse_name(name)
        if parsed is None or (tenant is not None and parsed[3] != tenant):
            continue
        _, kind, seq, who = parsed
        cols = dest.columns(name)
        if cols is None:
            continue                       # merged and dropped meanwhile
        out.append(Pending(name, table, who, tenant_bucket(who), seq, kind,
                           {k: (c.name, c.type.name) for k, c in cols.items()}))
    return sorted(out, key=lambda p: p.order)


def live_slices(pendings: list[Pending]) -> tuple[list[Pending], dict[str, Pending]]:
    """Per tenant, the slices that count: from its newest `full`/`replace` slice on (older
    ones are superseded by it). Returns (slices to merge, tenant -> its newest complete slice)."""
    by_tenant: dict[str, list[Pending]] = {}
    for p in pendings:
        by_tenant.setdefault(p.tenant, []).append(p)
    keep, complete = [], {}
    for tenant, ps in by_tenant.items():
        ps.sort(key=lambda p: p.seq)
        last = max((i for i, p in enumerate(ps) if p.kind != "upsert"), default=None)
        if last is not None:
            complete[tenant] = ps[last]
        keep.extend(ps if last is None else ps[last:])
    return keep, complete


def _select(p: Pending, ref, target: dict, json_cols: set[str]) -> str:
    """One pending slice as rows of the warehouse table's columns (`target`: lower name ->
    (name, type)); a column the slice lacks (added since, or one this tenant does not
    deliver) is NULL, a column the table no longer has is left out."""
    parts = []
    for low, (name, typ) in target.items():
        if low == SYNCED_AT.lower():
            continue
        have = p.columns.get(low)
        if have is None:
            parts.append(f"CAST(NULL AS {'STRING' if name in json_cols else typ}) AS `{name}`")
        elif name in json_cols or have[1] == typ:
            parts.append(f"`{have[0]}` AS `{name}`")
        else:
            parts.append(f"CAST(`{have[0]}` AS {typ}) AS `{name}`")
    return (f"SELECT {', '.join(parts)}, {p.seq} AS `{PSEQ}`, `{SEQ}` "
            f"FROM {ref(p.name)}")


def merge_sql(ref, table: str, target: dict, pk: list[str], slices: list[Pending],
              complete: dict[str, Pending], json_cols: set[str]) -> str:
    """The one MERGE that applies every live slice (see the module docstring). `ref(name)`
    quotes a table of the dataset; `pk` is empty for a table without a key (replace)."""
    names = [n for low, (n, _) in target.items() if low != SYNCED_AT.lower()]
    union = " UNION ALL ".join(_select(p, ref, target, json_cols) for p in slices)
    cols = ", ".join(f"`{n}`" for n in names)

    def val(n: str) -> str:
        return f"PARSE_JSON(S.`{n}`)" if n in json_cols else f"S.`{n}`"

    buckets = sorted({p.bucket for p in slices})
    in_buckets = f"T.`_hakobu_tenant_bucket` IN ({', '.join(map(str, buckets))})"
    ins = (f"WHEN NOT MATCHED THEN INSERT ({cols}, `{SYNCED_AT}`) "
           f"VALUES ({', '.join(val(n) for n in names)}, CURRENT_TIMESTAMP())")
    if pk:
        part = ", ".join(f"`{k}`" for k in pk)
        using = (f"(SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {part} "
                 f"ORDER BY `{PSEQ}` DESC, `{SEQ}` DESC) AS _hakobu_rn FROM ({union})) "
                 f"WHERE _hakobu_rn = 1)")
        on = " AND ".join([in_buckets] + [f"T.`{k}` = S.`{k}`" for k in pk])
        sets = ", ".join([f"`{n}` = {val(n)}" for n in names if n not in pk]
                         + [f"`{SYNCED_AT}` = CURRENT_TIMESTAMP()"])
        sql = (f"MERGE {ref(table)} T USING {using} S ON {on} "
               f"WHEN MATCHED THEN UPDATE SET {sets} {ins}")
    else:
        sql = f"MERGE {ref(table)} T USING ({union}) S ON FALSE {ins}"
    if complete:
        scopes = " OR ".join(f"(T.`tenant_id` = {bq_string(p.tenant)} AND "
                             f"T.`_hakobu_tenant_bucket` = {p.bucket})"
                             for p in sorted(complete.values(), key=lambda p: p.tenant))
        sql += f" WHEN NOT MATCHED BY SOURCE AND ({scopes}) THEN DELETE"
    return sql


@dataclasses.dataclass
class MergeDone:
    table: str
    slices: int = 0
    tenants: list[str] = dataclasses.field(default_factory=list)
    rows_affected: int = 0
    statements: int = 0
    locked_out: bool = False      # (a merge that would not wait for the lock)
    # tenant -> "full" when every slice merged for it was complete (a whole read: the MERGE
    # deleted what it lacks), else "upsert" (its checks must look for deletes)
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)


def merge_all(dest, table: str, pk: list[str]) -> MergeDone:
    """Apply every pending slice of `table` in one MERGE; the caller holds the table's merge
    lock (WarehouseDestination.merge_lock). Returns what was merged."""
    done = MergeDone(table)
    pendings = list_pending(dest, table)
    if not pendings:
        return done
    slices, complete = live_slices(pendings)
    target = {k: (c.name, c.type.name) for k, c in (dest.columns(table) or {}).items()}
    if not target:
        raise LoadError(f"warehouse table {table} is gone; its pending slices are kept",
                        table=table)
    json_cols = {n for n, t in target.values() if t == "JSON"}
    job = dest.sql(merge_sql(dest.ref, table, target, pk, slices, complete, json_cols),
                   table=table)
    done.statements, done.rows_affected = 1, job.num_dml_affected_rows or 0
    done.slices, done.tenants = len(pendings), sorted({p.tenant for p in pendings})
    for p in slices:
        if p.kind == "upsert" or done.kinds.get(p.tenant) == "upsert":
            done.kinds[p.tenant] = "upsert"
        else:
            done.kinds[p.tenant] = "full"
    for p in sorted(pendings, key=lambda p: p.seq):   # oldest first (module docstring)
        dest.drop_table(p.name)
    return done


def acquire(dest, table: str) -> bool:
    """Take the table's merge lock (create its lock table); take over one older than
    LOCK_TTL_S."""
    name = f"{LOCK_PREFIX}{tag(table)}"
    for _ in range(2):
        lock = bigquery.Table(dest.table_id(name), schema=[bigquery.SchemaField("held_by",
                                                                                "STRING")])
        lock.description = table
        lock.expires = datetime.now(timezone.utc) + timedelta(seconds=LOCK_TTL_S)
        with dest._errors("taking the merge lock", table):
            try:      # tables.insert (an API call, not a job): 409 when it exists
                dest.client.create_table(lock, exists_ok=False, retry=dest.retry)
                return True
            except gexc.Conflict:
                pass
        try:
            t = dest.client.get_table(dest.table_id(name), retry=dest.retry)
        except gexc.NotFound:
            continue
        age = (datetime.now(timezone.utc) - t.created).total_seconds() if t.created else 0
        if age < LOCK_TTL_S:
            return False
        log.warning("%s: taking over a merge lock %.0fs old (a crashed merge's)", table, age)
        dest.drop_table(name)
    return False


def release(dest, table: str) -> None:
    dest.drop_table(f"{LOCK_PREFIX}{tag(table)}")


def drop_columns(dest, pendings: list[Pending], columns: set[str]) -> list[str]:
    """Remove `columns` (lower case) from pending slices that hold them: a column a policy now
    withholds (or hashes anew) keeps no value in a slice that waits to be merged; the slice's
    other columns still merge."""
    changed = []
    for p in pendings:
        for low in sorted(columns & set(p.columns)):
            dest.sql(f"ALTER TABLE {dest.ref(p.name)} DROP COLUMN IF EXISTS "
                     f"`{p.columns[low][0]}`", table=p.name)
            changed.append(f"{p.name}.{p.columns[low][0]}")
    return changed
