"""Deliver one tenant's tables: plan, read in keyset chunks, stage, MERGE, then move the watermark.

Plain Python; the Dagster assets call `sync_tenant` and turn its results into materializations.
Order of effects for every unit of work, which is what makes a crash anywhere safe to rerun:
  1. chunks are read and appended to local Parquet files (nothing in BigQuery yet);
  2. each file is loaded into a fresh staging table and MERGEd on the primary key (idempotent);
  3. only then does that destination's watermark move (compare-and-set).
A crash before 3 means the next run re-reads rows that are already merged: harmless.

Read once: every chunk read goes to every sink of the table (hakobu.sinks) — the customer's
dataset and, when tenants/warehouse.yaml enables it, the internal warehouse — each with its own
staging file, MERGE and watermark. The source is read once per run whatever the number of sinks.
"""

import datetime as dt
import contextlib
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hakobu.config import Config, Tenant
from hakobu.errors import HakobuError
from hakobu.plan import TablePlan, fold_restart
from hakobu.sinks import Sink, build_sinks, staging
from resources.bigquery_client import BigQuerySettings
from resources.bigquery_dest import BigQueryDestination
from resources.mysql_source import MySQLSource, iter_chunks
from resources.pressure import ReadGovernor, governor_for

log = logging.getLogger("hakobu.sync")
MERGE_EVERY_ROWS = int(os.environ.get("HAKOBU_MERGE_EVERY_ROWS", "1000000"))
CUSTOMER, WAREHOUSE = "customer", "warehouse"


@dataclass
class TableResult:
    tenant: str
    table: str
    ok: bool = True
    error: str | None = None
    rows_read: int = 0
    rows_merged: int = 0
    bytes_staged: int = 0
    chunks: int = 0
    null_cursor_rows: int = 0
    merges: int = 0
    watermark: str = "-"
    watermark_utc: str | None = None
    complete_to_utc: str | None = None     # every source row below this instant is delivered
    duration_s: float = 0.0
    throttled_s: float = 0.0
    mode: str = "incremental"
    splits: int = 1                        # pk ranges read at once (initial loads)
    columns_added: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)
    bound: dict = field(default_factory=dict)
    customer: bool = True                  # the customer's dataset was fed
    warehouse: str = "-"                   # "-" not fed, "ok", or "failed"
    warehouse_error: str | None = None
    warehouse_rows_merged: int = 0
    warehouse_watermark: str = "-"
    extra: dict = field(default_factory=dict)   # backfill and hook metadata
    warehouse_extra: dict = field(default_factory=dict)   # the warehouse table's own
    # the customer table compared with the source after this run (verify=True, or every
    # incremental run's reconcile): a hakobu.checksums.Comparison, or None
    check: object = field(default=None, repr=False)
    # per sink kind ("customer", "warehouse"): the BigQuery table written (project.dataset.table)
    # and its columns as (BigQuery name, BigQuery type, MySQL name or None for added columns)
    landed: dict = field(default_factory=dict, repr=False)

    def metadata(self) -> dict:
        return {"rows_read": self.rows_read, "rows_merged": self.rows_merged,
                "bytes_staged": self.bytes_staged, "chunks": self.chunks,
                "merges": self.merges, "watermark": self.watermark,
                "watermark_utc": self.watermark_utc or "-",
                "complete_to_utc": self.complete_to_utc or "-",
                "duration_s": round(self.duration_s, 3), "throttled_s": round(self.throttled_s, 3),
                "mode": self.mode, "splits": self.splits,
                "null_cursor_rows": self.null_cursor_rows,
                "columns_added": ", ".join(self.columns_added) or "-",
                "withheld_columns": ", ".join(self.withheld) or "-",
                "warehouse": self.warehouse,
                **{f"bound_{k}": str(v) for k, v in self.bound.items()},
                **self.extra}

    def warehouse_metadata(self) -> dict:
        return {"rows_read": self.rows_read, "rows_merged": self.warehouse_rows_merged,
                "watermark": self.warehouse_watermark, "watermark_utc": self.watermark_utc or "-",
                "duration_s": round(self.duration_s, 3), "mode": self.mode,
                "read_shared_with_customer": self.customer,
                "withheld_columns": ", ".join(self.withheld) or "-", **self.warehouse_extra}


class Hooks:
    """Points where tests inject faults; production never sets them."""

    def __init__(self, **points: Callable[..., None]):
        self.points = points

    def __call__(self, name: str, **info) -> None:
        fn = self.points.get(name)
        if fn is not None:
            fn(**info)


NO_HOOKS = Hooks()


def work_dir() -> Path:
    return Path(os.environ.get("HAKOBU_WORK_DIR") or Path(tempfile.gettempdir()) / "hakobu")


def destination_for(tenant: Tenant, settings: BigQuerySettings) -> BigQueryDestination:
    d = tenant.destination
    return BigQueryDestination(settings, d.project, d.dataset, d.location, work_dir())


# -- one table ----------------------------------------------------------------------------------


class _Fanout:
    """Runs an operation on every active sink: a critical sink's error propagates (the table
    fails), a non-critical one's (the warehouse) is retried if transient, then sets that sink
    aside and is recorded."""

    def __init__(self, res: TableResult, sinks: list[Sink]):
        self.res, self.sinks = res, sinks

    @property
    def active(self) -> list[Sink]:
        return [s for s in self.sinks if s.active]

    def each(self, what: str, fn: Callable[[Sink], object]) -> None:
        for s in self.active:
            if s.critical:
                fn(s)
                continue
            try:
                with_retries(lambda s=s: fn(s), what=f"{self.res.tenant}/{self.res.table} "
                                                     f"{s.kind} {what}")
            except Exception as exc:      # noqa: BLE001 — the warehouse never stops the customer
                log.error("%s/%s: %s sink failed at %s, set aside for this run: %s",
                          self.res.tenant, self.res.table, s.kind, what, exc)
                s.fail(exc)

    def write(self, batch) -> None:
        self.each("staging", lambda s: s.write(batch))

    @property
    def staged_rows(self) -> int:
        return max((s.rows for s in self.active), default=0)


def sync_table(source: MySQLSource, dest: BigQueryDestination | None, tenant: Tenant,
               table_name: str, *, run_id: str, governor: ReadGovernor | None = None,
               hooks: Hooks = NO_HOOKS, state_lock: "threading.Lock | None" = None,
               plan: TablePlan | None = None, warehouse=None,
               verify: bool = False) -> TableResult:
    """Deliver one table into `dest` (the customer's dataset; None: not this run) and, with a
    hakobu.warehouse.WarehouseTarget, into the warehouse — from one read. With verify, the
    customer table is compared with the source afterwards whatever the mode (res.check): what
    the Dagster check `in_sync_with_source` reports, without a second scan."""
    t0 = time.monotonic()
    res = TableResult(tenant.tenant, table_name, customer=dest is not None)
    table_cfg = tenant.table(table_name)
    plan, sinks, res.withheld, wh_error = build_sinks(
        plan or source.plan_table(tenant, table_cfg), table_cfg, dest, warehouse)
    if wh_error:
        res.warehouse, res.warehouse_error = "failed", wh_error
    res.extra.update(name_metadata(plan))
    fan = _Fanout(res, sinks)
    gov = governor or ReadGovernor.unlimited()
    lock = state_lock or threading.Lock()
    if not plan.key_enforced and fan.active and (plan.cursor is None or plan.key_index):
        refuse_duplicate_keys(source, plan, gov)
    fan.each("preparing the table", lambda s: s.prepare())

    def read(pass_: str, after, upper):
        def on_chunk(rows: int, seconds: float) -> None:
            res.chunks += 1
            res.rows_read += rows
            hooks("after_chunk", table=table_name, rows=res.rows_read)

        for batch, key in iter_chunks(source, plan, pass_, after, upper, on_chunk=on_chunk,
                                      gate=gov):
            yield batch, key

    def flush(*, key=None, watermark: bool, delete_scope: str | None = None,
              always: bool = False) -> None:
        """Merge every active sink's staged rows; then move its watermark to `key`."""
        def one(s: Sink) -> None:
            rows = s.rows
            if not rows and not always:
                return
            hooks("after_stage", table=table_name, sink=s.kind)
            files = s.take()
            hooks("before_merge", table=table_name, sink=s.kind)
            s.merge(files, delete_scope=delete_scope, run_id=f"{run_id}_{s.merges}")
            hooks("after_merge", table=table_name, sink=s.kind)
            if watermark:
                with lock:
                    hooks("before_watermark", table=table_name, sink=s.kind)
                    s.write_watermark(key, rows, run_id)
        fan.each("merge", one)

    if not fan.active:
        pass                               # nothing to feed (e.g. only the warehouse, failed)
    elif plan.full_replace:
        # No key: nothing to merge on. Stream the whole table, swap it in atomically.
        res.mode = "replace"
        from hakobu.plan import replace_sql

        with staging(sinks):
            with gov.slot(tenant.tenant, table_name):
                for batch in source.stream(plan, replace_sql(plan), plan.chunk_rows):
                    fan.write(batch)
                    res.chunks += 1
                    res.rows_read += batch.num_rows
                    hooks("after_chunk", table=table_name, rows=res.rows_read)

            def one(s: Sink) -> None:
                hooks("after_stage", table=table_name, sink=s.kind)
                files = s.take()
                hooks("before_merge", table=table_name, sink=s.kind)
                s.replace(files, run_id=f"{run_id}_r")
                hooks("after_merge", table=table_name, sink=s.kind)
            fan.each("replace", one)
        res.watermark = "(full replace)"
    elif plan.cursor is None:
        # No cursor: the whole table every run, merged with deletion of vanished rows.
        res.mode = "full"
        with staging(sinks):
            for batch, _ in read("full", None, None):
                fan.write(batch)
            flush(watermark=False, delete_scope="TRUE", always=True)
        res.watermark = "(full read)"
    else:
        fan.each("reading the watermark", lambda s: s.read_watermark())
        after = common_start([s.previous.key if s.previous else None for s in fan.active])
        if after is None and not plan.key_enforced and not plan.key_index:
            refuse_duplicate_keys(source, plan, gov)     # a first load: a complete read
        upper, res.bound = source.upper_bound(plan, after)
        start = fold_restart(plan, after, bound_utc(res.bound))   # DST fall-back: re-read
        if start != after:
            res.bound["reread_from_dst_fold"], after = str(start[0]), start
        pending_key = None
        if after is None and plan.initial_in_pk_order:
            initial_load(source, plan, fan, sinks, upper, gov, res, hooks, flush, lock, run_id)
            after = "done"
        with staging(sinks) if after != "done" else contextlib.nullcontext():
            for batch, key in (read("main", after, upper) if after != "done" else ()):
                fan.write(batch)
                pending_key = key
                if fan.staged_rows >= MERGE_EVERY_ROWS:
                    flush(key=pending_key, watermark=True)
                    fan.each("staging", lambda s: s.open())
            if after != "done":
                flush(key=pending_key, watermark=True)
        # Rows whose cursor is NULL (or a zero date) cannot sit behind a watermark: they are
        # re-read every run, keyed on the primary key alone, and merged like the others.
        before = res.rows_read
        with staging(sinks):
            for pass_ in ("nulls", "zeros") if plan.cursor_is_temporal else ("nulls",):
                for batch, _ in read(pass_, None, None):
                    fan.write(batch)
            flush(watermark=False)
        res.null_cursor_rows = res.rows_read - before
        res.watermark_utc = watermark_utc(plan, _first_key(sinks), source.cluster.timezone)
        res.complete_to_utc = bound_utc(res.bound)
    _summarise(res, sinks)
    after_table(source, plan, sinks, res, hooks, gov, run_id, verify=verify)
    res.throttled_s = gov.throttled_seconds(tenant.tenant, table_name)
    res.duration_s = time.monotonic() - t0
    return res


def name_metadata(plan: TablePlan) -> dict:
    """Where the table landed in BigQuery, and the columns delivered under another name than
    MySQL's (hakobu.naming), for the materialization: the original names stay findable."""
    renamed = [f"{s.name} → {s.bq_name}" for s in plan.specs if s.renamed]
    return {"bigquery_table": plan.bq_table, "mysql_table": plan.table,
            "columns_renamed": "; ".join(renamed) or "-"}


def refuse_duplicate_keys(source: MySQLSource, plan: TablePlan, gov: ReadGovernor) -> None:
    """Stop the table, before anything is written, when rows share a declared primary key that
    no UNIQUE index enforces: merged on it they would collapse into one row in BigQuery (or one
    would overwrite the other on a later run), silently. Run before every run where an index
    is ordered by the key (an index scan, no temp table), else before every complete read
    (first load, full read, backfill), where the whole table is read anyway."""
    from hakobu.errors import SchemaError
    from hakobu.plan import duplicate_key_sql

    with gov.slot(plan.tenant, plan.table):
        rows = source.query(duplicate_key_sql(plan))
    if rows:
        *values, n = rows[0]
        key = dict(zip(plan.primary_key, values))
        raise SchemaError(
            f"declared primary key {list(plan.primary_key)} of {plan.schema}.{plan.table} is not "
            f"unique: {n} rows have {key}; merged on it they would become one row in BigQuery",
            tenant=plan.tenant, table=plan.table,
            hint="declare columns that identify a row as primary_key: (a UNIQUE index on them "
                 "in MySQL makes the source enforce it), or remove primary_key: and set "
                 "without_primary_key: replace (the table is then reloaded whole)")


def initial_load(source, plan, fan, sinks, upper, gov, res, hooks, flush, lock, run_id) -> None:
    """The first load of a table: every row with cursor < upper, read in primary-key order
    (sequential on the clustered index; the cursor index would cost a random lookup per row),
    over several pk ranges at once for big tables. The watermark becomes the largest
    (cursor, pk) read — every row at or below it has been read — and is written only once the
    whole pass is merged: an interrupted initial load starts over, which the MERGE makes
    harmless."""
    from hakobu.plan import max_key_below
    from hakobu.progress import first_load
    from resources.mysql_source import initial_splits, iter_parallel

    res.mode = "initial"
    top = None
    progress = first_load(source, plan, gov)     # the CLI's bar; None when nobody listens

    def on_chunk(rows: int, seconds: float) -> None:
        res.chunks += 1
        res.rows_read += rows
        hooks("after_chunk", table=plan.table, rows=res.rows_read)
        if progress is not None:
            progress.advance(rows)

    parts = res.splits = initial_splits(source, plan, gov)
    with staging(sinks), (progress.finishing() if progress else contextlib.nullcontext()):
        for batch in iter_parallel(source, plan, "initial", upper, parts, on_chunk, gov):
            fan.write(batch)
            k = max_key_below(plan, batch, None)   # the pass read only cursor < upper
            if k is not None and (top is None or _key_lt(top, k)):
                top = k
            if fan.staged_rows >= MERGE_EVERY_ROWS:
                flush(watermark=False)
                fan.each("staging", lambda s: s.open())
        if fan.staged_rows:
            flush(key=top, watermark=top is not None)
        elif top is not None:
            def mark(s) -> None:
                with lock:
                    hooks("before_watermark", table=plan.table, sink=s.kind)
                    s.write_watermark(top, 0, run_id)
            fan.each("watermark", mark)


def _key_lt(a: tuple, b: tuple) -> bool:
    return a < b


RECONCILE = os.environ.get("HAKOBU_RECONCILE", "1") != "0"
VERIFY_CONTENT = os.environ.get("HAKOBU_VERIFY_CONTENT", "1") != "0"


def after_table(source: MySQLSource, plan: TablePlan, sinks: list[Sink], res: TableResult,
                hooks: Hooks, gov: ReadGovernor | None = None, run_id: str = "",
                verify: bool = False) -> None:
    """At the end of every incremental table, after every sink merged and moved its watermark:
    hard deletes, then tonight's slice of content verification.

    Keys: per-bucket key checksums of the source and of each sink's table are compared
    (hakobu/checksums.py); only buckets that differ are re-read, and rows that vanished from
    the source are deleted (missing rows are merged, for the customer's table). Content: the
    buckets of tonight's slice of the rotation (hakobu/verify.py: every bucket once every
    `verify_every` nights) are compared value by value, and rows that differ are re-read and
    merged through the sink (the warehouse's too). A customer sink's error fails the table; the
    warehouse's sets that sink aside.

    The customer's comparison is kept as res.check — after a repair, compared again, so it
    says what the table holds now. With verify, tables loaded in the other modes (first load,
    full read) are compared too (keys and tonight's content slice); tables without a key
    cannot be."""
    from hakobu.checksums import compare_table, repair_deletes

    reconcile = RECONCILE and res.mode == "incremental"
    if (reconcile or verify) and plan.primary_key and res.mode != "replace":
        for s in sinks:
            if not s.active or (not reconcile and s.kind != CUSTOMER):
                continue
            pre = "" if s.kind == CUSTOMER else "warehouse_"
            try:
                cmp = compare_table(source, s.dest, plan, table=s.table, gate=gov)
                if reconcile:
                    rep = repair_deletes(source, s.dest, plan, cmp, gate=gov,
                                         run_id=f"{run_id}_cks", merge_missing=s.kind == CUSTOMER)
                    res.extra.update({pre + k: v for k, v in rep.metadata().items()})
                    res.extra[pre + "checksum_buckets_differing"] = cmp.buckets_differing
                    if not cmp.equal:
                        cmp = compare_table(source, s.dest, plan, table=s.table, gate=gov)
                if VERIFY_CONTENT and cmp.dest_exists and res.mode != "initial":
                    content_pass(source, s, plan, cmp, res, gov, run_id, pre)
                if s.kind == CUSTOMER:
                    res.check = cmp
            except HakobuError as exc:
                if s.critical:
                    raise
                s.fail(exc)              # reported as a failed warehouse/<table>, never "ok"
                res.warehouse, res.warehouse_error = "failed", str(exc)
    hooks("table_done", table=res.table, plan=plan, sinks=sinks, result=res)


def content_pass(source, sink: Sink, plan: TablePlan, cmp, res: TableResult, gov, run_id: str,
                 pre: str) -> None:
    """Tonight's content slice for one sink; its outcome goes on the key comparison (what the
    check reports) and into the metadata. A slice that still differs after its repair fails
    the customer's `in_sync_with_source` check (the rows merged this run stay delivered); for
    the warehouse, which has no such check, it fails that sink (a failed warehouse/<table>)."""
    from hakobu.errors import LoadError
    from hakobu.verify import nightly_content

    content, note = nightly_content(source, sink, plan, cmp, every=plan.verify_every, gate=gov,
                                    run_id=f"{run_id}_vfy")
    cmp.content, cmp.note = content, note
    res.extra.update({pre + k: v for k, v in content.metadata().items()})
    if note is not None:
        res.extra.update({pre + k: v for k, v in note.metadata().items()})
    if not (content.equal or content.repaired or content.skipped):
        if sink.kind == CUSTOMER:
            log.error("%s/%s: content still differs after its repair: %s", plan.tenant,
                      sink.table, content.summary())
            return
        raise LoadError(f"content still differs after its repair: {content.summary()}",
                        tenant=plan.tenant, table=sink.table,
                        hint=f"run `hakobu verify {plan.tenant} --tables {plan.table}` for the "
                             "rows; a backfill reloads the table")


def _summarise(res: TableResult, sinks: list[Sink]) -> None:
    for s in sinks:
        res.landed[s.kind] = (f"{s.dest.project}.{s.dest.dataset}.{s.table}",
                              [(c.bq_name, c.bq_type, c.name) for c in s.specs]
                              + [(n, t, None) for n, t in s.extra])
        shown = s.previous.display() if s.previous else "-"
        if res.mode == "replace":
            shown = "(full replace)"
        elif res.mode == "full":
            shown = "(full read)"
        if s.kind == CUSTOMER:
            res.merges, res.rows_merged, res.bytes_staged = s.merges, s.rows_merged, s.bytes_staged
            res.columns_added = s.columns_added
            res.watermark = shown
            res.extra.update(s.evolution_metadata())       # policy and type changes applied
        else:
            res.warehouse_extra.update(s.evolution_metadata())
            res.warehouse_rows_merged, res.warehouse_watermark = s.rows_merged, shown
            if s.active:
                res.warehouse = "ok"
            else:
                res.warehouse, res.warehouse_error = "failed", s.error
            if not res.customer:
                res.watermark = shown


def _first_key(sinks: list[Sink]):
    for s in sinks:
        if s.active and s.previous is not None:
            return s.previous.key
    return None


def common_start(keys: list[tuple | None]) -> tuple | None:
    """Where the one shared read starts when sinks' watermarks differ (a warehouse that failed
    or was enabled later): at the earliest. Cursor values (temporal or numeric) compare exactly
    in Python; primary keys may not (MySQL collations), so when the earliest cursor value is
    shared by keys with different primary keys, the read starts just below that cursor value —
    re-reading a little, which the idempotent MERGE makes harmless, instead of skipping a row."""
    if not keys:
        return None
    if any(k is None for k in keys):
        return None
    if all(k == keys[0] for k in keys):
        return keys[0]
    low = min(k[0] for k in keys)
    at_low = [k for k in keys if k[0] == low]
    if all(k == at_low[0] for k in at_low):
        return at_low[0]
    return (_just_below(low), *at_low[0][1:])


def _just_below(v):
    if isinstance(v, dt.datetime):
        return v - dt.timedelta(microseconds=1)
    if isinstance(v, dt.date):
        return v - dt.timedelta(days=1)
    if isinstance(v, (int, Decimal)):
        return v - 1
    if isinstance(v, float):
        return v - 1.0
    raise TypeError(f"cursor value of type {type(v).__name__} has no predecessor")


def watermark_utc(plan: TablePlan, key: tuple | None, cluster_zone: str) -> str | None:
    """The watermark's cursor as a UTC instant (for `hakobu status`' lag), when it is a time."""
    if key is None or not plan.cursor:
        return None
    v = key[0]
    spec = plan.spec(plan.cursor)
    if isinstance(v, dt.datetime):
        zone = dt.timezone.utc if spec.info.data_type == "timestamp" else ZoneInfo(cluster_zone)
        return v.replace(tzinfo=zone).astimezone(dt.timezone.utc).isoformat()
    if isinstance(v, dt.date):
        return dt.datetime.combine(v, dt.time(), ZoneInfo(cluster_zone)).astimezone(
            dt.timezone.utc).isoformat()
    return None


def bound_utc(bound: dict) -> str | None:
    """The run's exclusive upper bound as a UTC instant (from source.upper_bound's facts): the
    data is complete up to it, whether or not rows changed — what `hakobu status` calls fresh."""
    if "source_now_utc" not in bound:
        return None
    t = dt.datetime.fromisoformat(bound["source_now_utc"]) - dt.timedelta(
        seconds=float(bound.get("lag_seconds", 0)))
    held = bound.get("held_by_open_transaction_since")
    if held:
        t = min(t, dt.datetime.fromisoformat(held))
    return t.astimezone(dt.timezone.utc).isoformat()


# -- one tenant ---------------------------------------------------------------------------------

_sources: dict = {}
_sources_lock = threading.Lock()


def source_for(config: Config, tenant: Tenant) -> MySQLSource:
    """One MySQLSource (connection pool) per cluster and process."""
    cluster = config.cluster_of(tenant)
    key = cluster  # the whole frozen model: same name with another zone or budget is another
    with _sources_lock:
        if key not in _sources:
            _sources[key] = MySQLSource(cluster)
        return _sources[key]


@dataclass
class TenantRun:
    """What every table of one tenant's run shares: plans, destinations, the cluster's governor."""

    config: Config
    tenant: Tenant
    source: MySQLSource
    run_id: str
    names: list[str]
    plans: dict[str, TablePlan]
    results: dict[str, TableResult]          # tables refused at planning
    dest: BigQueryDestination | None = None
    warehouse: object = None                 # hakobu.warehouse.WarehouseTarget
    gov: ReadGovernor | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def workers(self, share: float = 1.0) -> int:
        budget = self.config.cluster_of(self.tenant).read_budget.max_connections
        return max(1, min(len(self.plans), int(budget * share)))


def open_tenant_run(config: Config, tenant_id: str, *, io, tables: list[str] | None,
                    run_id: str, customer: bool = True,
                    warehouse: bool | None = None,
                    on_result: Callable[[TableResult], None] | None = None) -> TenantRun:
    """Plan every table first (reflection only): a table that does not fit its declaration is
    reported and skipped before anything is written to BigQuery. Then the destinations."""
    from hakobu.warehouse import open_warehouse

    tenant = config.tenant(tenant_id)
    names = tables or [t.name for t in tenant.tables]
    for n in names:
        tenant.table(n)  # unknown table → ConfigError before anything happens
    source = io.source(config.cluster_of(tenant))
    source.ping()
    run = TenantRun(config, tenant, source, run_id, names, {}, {})
    for n in names:
        try:
            run.plans[n] = source.plan_table(tenant, tenant.table(n))
        except Exception as exc:    # noqa: BLE001 — one table's failure is its result
            run.results[n] = failed_result(tenant.tenant, n, exc, "refused")
            if on_result is not None:
                on_result(run.results[n])
    if not run.plans:
        return run
    if customer:
        dest = io.customer(tenant)
        created = dest.ensure_dataset(labels={"managed-by": "hakobu", "tenant": tenant.tenant})
        if created:
            io.grant_new_dataset(config, dest)
        dest.ensure_state_table()
        dest.drop_stale_staging()
        dest.prefetch_watermarks([p.bq_table for p in run.plans.values()])
        run.dest = dest
    if warehouse is not False:
        run.warehouse = open_warehouse(config, tenant, io, list(run.plans.values()))
    run.gov = io.gate(config.cluster_of(tenant))
    return run


def failed_result(tenant: str, table: str, exc: Exception, what: str = "failed") -> TableResult:
    """A table's failure as its result, so the tenant's other tables still load.

    hakobu's own errors (HakobuError) already say what happened and what to do. Anything else
    (a KeyError, a TypeError, a pyarrow error) is a bug or a case nobody foresaw: it must not
    take the tenant's other tables down with it, so it is caught here too (Exception only — a
    KeyboardInterrupt or a dying process still stops the run), named with its type, and logged
    with its traceback at debug level. Every unit of work is idempotent, so a rerun after the
    fix resumes from the table's last watermark."""
    if isinstance(exc, HakobuError):
        log.error("%s/%s %s: %s", tenant, table, what, exc)
        return TableResult(tenant, table, ok=False, error=str(exc))
    log.error("%s/%s %s with an unexpected %s: %s", tenant, table, what, type(exc).__name__, exc)
    log.debug("%s/%s: traceback of the unexpected error", tenant, table, exc_info=exc)
    text = str(HakobuError(
        f"unexpected {type(exc).__name__} in table {table!r}: {exc!r}", tenant=tenant, table=table,
        hint="only this table stopped; the tenant's other tables went on. Its watermark moves "
             "only after a merge, so a rerun is exact; run with debug logging (hakobu.sync) for "
             "the traceback and report it"))
    return TableResult(tenant, table, ok=False, error=text)


def run_tables(run: TenantRun, fn: Callable[[str], TableResult], workers: int,
               on_result: Callable[[TableResult], None] | None = None) -> list[TableResult]:
    """Run fn per planned table, side by side up to `workers`; a table's failure is its result."""
    def one(name: str) -> TableResult:
        try:
            r = fn(name)
        except Exception as exc:    # noqa: BLE001 — one table's failure is its result
            r = failed_result(run.tenant.tenant, name, exc)
        if on_result is not None:
            on_result(r)
        return r

    if workers == 1:
        done = [one(n) for n in run.plans]
    else:
        with ThreadPoolExecutor(max_workers=workers,
                                thread_name_prefix=f"hakobu-{run.tenant.tenant}") as ex:
            done = list(ex.map(one, run.plans))
    run.results.update({r.table: r for r in done})
    return [run.results[n] for n in run.names]


def sync_tenant(config: Config, tenant_id: str, *, io, tables: list[str] | None = None,
                run_id: str | None = None,
                hooks: Hooks = NO_HOOKS, on_result: Callable[[TableResult], None] | None = None,
                customer: bool = True, warehouse: bool | None = None, verify: bool = False,
                ) -> list[TableResult]:
    """Deliver the tenant's tables (all, or the named ones) into its customer dataset and, when
    tenants/warehouse.yaml enables it (and `warehouse` is not False), into the warehouse too —
    from the same reads.

    Tables load side by side up to the cluster's connection budget; a table that fails (schema
    change, bad value) does not stop the others. Every table's outcome is returned.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    run = open_tenant_run(config, tenant_id, io=io, tables=tables, run_id=run_id,
                          customer=customer, warehouse=warehouse, on_result=on_result)
    if not run.plans:
        return [run.results[n] for n in run.names]

    def one(name: str) -> TableResult:
        return with_retries(
            lambda: sync_table(run.source, run.dest, run.tenant, name, run_id=run_id,
                               governor=run.gov, hooks=hooks, state_lock=run.lock,
                               plan=run.plans[name], warehouse=run.warehouse, verify=verify),
            what=f"{tenant_id}/{name}")

    return run_tables(run, one, run.workers(), on_result)


RETRIES = int(os.environ.get("HAKOBU_RETRIES", "3"))
RETRY_BASE_S = float(os.environ.get("HAKOBU_RETRY_BASE_SECONDS", "1"))


def with_retries(fn, *, what: str, attempts: int | None = None, base_s: float | None = None):
    """Run fn; on a transient error wait (base, 4x base, ...) and run it again. Every unit of
    work is idempotent (MERGE on the key, watermark after it), so a retry resumes where the
    last committed watermark stands. Terminal errors are raised at once."""
    from hakobu.errors import is_transient

    attempts = RETRIES if attempts is None else attempts
    base_s = RETRY_BASE_S if base_s is None else base_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = base_s * 4 ** (attempt - 1)
            log.warning("%s: transient error (attempt %d of %d), retrying in %.0fs: %s",
                        what, attempt, attempts, delay, exc)
            time.sleep(delay)


def _grant_new_dataset(config: Config, dest: BigQueryDestination) -> None:
    """A customer dataset gets its declared grants as soon as it exists."""
    try:
        from hakobu.grants.apply import apply_dataset_grants
    except ImportError:
        return
    apply_dataset_grants(dest.client, config, f"{dest.project}.{dest.dataset}")
