"""Deliver one table: plan, read in keyset chunks, stage, MERGE, then move the watermark.

Order of effects for every unit of work, which is what makes a crash anywhere safe to rerun:
  1. chunks are read and appended to local Parquet files (nothing in BigQuery yet);
  2. each file is loaded into a fresh staging table and MERGEd on the primary key (idempotent);
  3. only then does that destination's watermark move (compare-and-set).
A crash before 3 means the next run re-reads rows that are already merged: harmless.

Read once: every chunk read goes to every sink of the table (hakobu.sinks) — the customer's
dataset and, when tenants/warehouse.yaml enables it, the internal warehouse — each with its own
staging file, MERGE and watermark. The source is read once per run whatever the number of sinks.
Everything outside goes through the ports (hakobu.ports): a Source, a ReadGate, Destinations.
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from hakobu.config import Tenant
from hakobu.errors import LoadError, SchemaError
from hakobu.keys import fold_restart, max_key_below
from hakobu.plan import TablePlan
from hakobu.planning import plan_for
from hakobu.ports import Destination, ReadGate, Source
from hakobu.progress import first_load
from hakobu.results import NO_HOOKS, Hooks, TableResult, with_retries
from hakobu.sinks import CUSTOMER, Sink, build_sinks, staging
from hakobu.table_checks import after_table
from hakobu.watermarks import _key_lt, bound_utc, common_start, watermark_utc
from hakobu.gates import unlimited

log = logging.getLogger("hakobu.sync")
MERGE_EVERY_ROWS = int(os.environ.get("HAKOBU_MERGE_EVERY_ROWS", "1000000"))
MAX_DELETE_FRACTION = 0.5          # as hakobu.checksums.repair_deletes' default


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


def sync_table(source: Source, dest: Destination | None, tenant: Tenant,
               table_name: str, *, run_id: str, governor: ReadGate | None = None,
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
        plan or plan_for(source, tenant, table_cfg), table_cfg, dest, warehouse)
    if wh_error:
        res.warehouse, res.warehouse_error = "failed", wh_error
    res.extra.update(name_metadata(plan))
    gov = governor or unlimited()
    run = _TableRun(source, plan, sinks, res, gov, hooks, state_lock or threading.Lock(), run_id)
    if not plan.key_enforced and run.fan.active and (not plan.incremental or plan.key_index):
        refuse_duplicate_keys(source, plan, gov)
    run.fan.each("preparing the table", lambda s: s.prepare())
    if not run.fan.active:
        pass                               # nothing to feed (e.g. only the warehouse, failed)
    elif plan.full_replace:
        run.replace()
    elif not plan.incremental:
        run.full()
    else:
        run.incremental()
    _summarise(res, sinks)
    after_table(source, plan, sinks, res, hooks, gov, run_id, verify=verify)
    res.throttled_s = gov.throttled_seconds(tenant.tenant, table_name)
    res.duration_s = time.monotonic() - t0
    return res


class _TableRun:
    """One table's delivery in one of its modes: reads through the gate, writes every chunk to
    every active sink, merges, then moves each sink's watermark (in that order: crash-safe)."""

    def __init__(self, source: Source, plan: TablePlan, sinks: list[Sink], res: TableResult,
                 gov: ReadGate, hooks: Hooks, lock: threading.Lock, run_id: str):
        self.source, self.plan, self.sinks, self.res = source, plan, sinks, res
        self.gov, self.hooks, self.lock, self.run_id = gov, hooks, lock, run_id
        self.fan = _Fanout(res, sinks)

    def _chunk_read(self, rows: int) -> None:
        self.res.chunks += 1
        self.res.rows_read += rows
        self.hooks("after_chunk", table=self.plan.table, rows=self.res.rows_read)

    def read(self, pass_: str, after, upper):
        yield from self.source.chunks(self.plan, pass_, after, upper,
                                      on_chunk=lambda rows, s: self._chunk_read(rows),
                                      gate=self.gov)

    def flush(self, *, key=None, watermark: bool, delete_scope: str | None = None,
              always: bool = False) -> None:
        """Merge every active sink's staged rows; then move its watermark to `key`."""
        table, hooks = self.plan.table, self.hooks

        def one(s: Sink) -> None:
            rows = s.rows
            if not rows and not always:
                return
            hooks("after_stage", table=table, sink=s.kind)
            files = s.take()
            hooks("before_merge", table=table, sink=s.kind)
            s.merge(files, delete_scope=delete_scope, run_id=f"{self.run_id}_{s.merges}")
            hooks("after_merge", table=table, sink=s.kind)
            if watermark:
                self.mark(s, key, rows)
        self.fan.each("merge", one)

    def mark(self, s: Sink, key, rows: int) -> None:
        with self.lock:
            self.hooks("before_watermark", table=self.plan.table, sink=s.kind)
            s.write_watermark(key, rows, self.run_id)

    def replace(self) -> None:
        """No key: nothing to merge on. Stream the whole table, swap it in atomically."""
        self.res.mode, table, hooks = "replace", self.plan.table, self.hooks
        with staging(self.sinks):
            for batch in self.source.whole_table(self.plan, self.gov):
                self.fan.write(batch)
                self._chunk_read(batch.num_rows)

            def one(s: Sink) -> None:
                hooks("after_stage", table=table, sink=s.kind)
                files = s.take()
                hooks("before_merge", table=table, sink=s.kind)
                s.replace(files, run_id=f"{self.run_id}_r")
                hooks("after_merge", table=table, sink=s.kind)
            self.fan.each("replace", one)
        self.res.watermark = "(full replace)"

    def full(self) -> None:
        """No cursor, or a table smaller than its full_read_below_kib (plan.full_read): the
        whole table every run, merged with deletion of vanished rows. The watermark is left
        where it is: should the table grow past the limit, the incremental runs start from
        it (older than every row read since: they re-read, never skip)."""
        self.res.mode = "full"
        if self.plan.full_read:
            self.res.extra["full_read"] = self.plan.full_read
        with staging(self.sinks):
            for batch, _ in self.read("full", None, None):
                self.fan.write(batch)
            if self.plan.full_read:
                self.refuse_mass_delete()
            self.flush(watermark=False, delete_scope="TRUE", always=True)
        self.res.watermark = "(full read)"

    def refuse_mass_delete(self) -> None:
        """Before a whole read's MERGE deletes what the read did not find: the incremental
        night's safety valve (hakobu.checksums.repair_deletes), so the two modes refuse the same
        mistakes — a tenant_value or schema pointed at other rows would otherwise empty the
        tenant's table and say ok. Judged on the customer's table (its row count: no job)."""
        for s in self.fan.active:
            if s.kind != CUSTOMER:
                continue
            held = s.dest.table_rows(s.table) or 0
            doomed = held - self.res.rows_read
            if held and doomed > MAX_DELETE_FRACTION * held:
                raise LoadError(
                    f"refusing to delete at least {doomed} of {held} BigQuery rows: the whole "
                    f"read found {self.res.rows_read}", tenant=self.plan.tenant, table=s.table,
                    hint="check the tenant's schema and tenant_value; if the source really "
                         "lost that many rows, reload the table (hakobu backfill)")

    def incremental(self) -> None:
        """From the sinks' common watermark up to the source's bound; a first load in pk order
        when the table allows it; then the rows no watermark can hold (NULL or zero cursors)."""
        plan, res, fan = self.plan, self.res, self.fan
        fan.each("reading the watermark", lambda s: s.read_watermark())
        after = common_start([s.previous.key if s.previous else None for s in fan.active])
        if after is None and not plan.key_enforced and not plan.key_index:
            refuse_duplicate_keys(self.source, plan, self.gov)   # a first load: a complete read
        upper, res.bound = self.source.upper_bound(plan, after)
        start = fold_restart(plan, after, bound_utc(res.bound))   # DST fall-back: re-read
        if start != after:
            res.bound["reread_from_dst_fold"], after = str(start[0]), start
        if after is None and plan.initial_in_pk_order:
            self.initial(upper)
        else:
            self.main(after, upper)
        # Rows whose cursor is NULL (or a zero date) cannot sit behind a watermark: they are
        # re-read every run, keyed on the primary key alone, and merged like the others.
        before = res.rows_read
        with staging(self.sinks):
            for pass_ in ("nulls", "zeros") if plan.cursor_is_temporal else ("nulls",):
                for batch, _ in self.read(pass_, None, None):
                    fan.write(batch)
            self.flush(watermark=False)
        res.null_cursor_rows = res.rows_read - before
        res.watermark_utc = watermark_utc(plan, _first_key(self.sinks),
                                          self.source.cluster.timezone)
        res.complete_to_utc = bound_utc(res.bound)

    def main(self, after, upper) -> None:
        """The main pass: (cursor, pk) > after, cursor < upper; the watermark follows every
        merge (every MERGE_EVERY_ROWS rows and at the end)."""
        pending_key = None
        with staging(self.sinks):
            for batch, key in self.read("main", after, upper):
                self.fan.write(batch)
                pending_key = key
                if self.fan.staged_rows >= MERGE_EVERY_ROWS:
                    self.flush(key=pending_key, watermark=True)
                    self.fan.each("staging", lambda s: s.open())
            self.flush(key=pending_key, watermark=True)

    def initial(self, upper) -> None:
        """The first load of a table: every row with cursor < upper, read in primary-key order
        (sequential on the clustered index; the cursor index would cost a random lookup per
        row), over several pk ranges at once for big tables. The watermark becomes the largest
        (cursor, pk) read — every row at or below it has been read — and is written only once
        the whole pass is merged: an interrupted initial load starts over, which the MERGE
        makes harmless."""
        plan, res, fan = self.plan, self.res, self.fan
        res.mode = "initial"
        top = None
        progress = first_load(self.source, plan, self.gov)   # the CLI's bar, if one listens

        def on_chunk(rows: int, seconds: float) -> None:
            self._chunk_read(rows)
            if progress is not None:
                progress.advance(rows)

        parts = res.splits = self.source.initial_splits(plan, self.gov)
        with staging(self.sinks), (progress.finishing() if progress
                                   else contextlib.nullcontext()):
            for batch in self.source.parallel_chunks(plan, "initial", upper, parts, on_chunk,
                                                     self.gov):
                fan.write(batch)
                k = max_key_below(plan, batch, None)   # the pass read only cursor < upper
                if k is not None and (top is None or _key_lt(top, k)):
                    top = k
                if fan.staged_rows >= MERGE_EVERY_ROWS:
                    self.flush(watermark=False)
                    fan.each("staging", lambda s: s.open())
            if fan.staged_rows:
                self.flush(key=top, watermark=top is not None)
            elif top is not None:
                fan.each("watermark", lambda s: self.mark(s, top, 0))


def name_metadata(plan: TablePlan) -> dict:
    """Where the table landed in BigQuery, and the columns delivered under another name than
    MySQL's (hakobu.naming), for the materialization: the original names stay findable."""
    renamed = [f"{s.name} → {s.bq_name}" for s in plan.specs if s.renamed]
    return {"bigquery_table": plan.bq_table, "mysql_table": plan.table,
            "columns_renamed": "; ".join(renamed) or "-"}


def refuse_duplicate_keys(source: Source, plan: TablePlan, gov: ReadGate) -> None:
    """Stop the table, before anything is written, when rows share a declared primary key that
    no UNIQUE index enforces: merged on it they would collapse into one row in BigQuery (or one
    would overwrite the other on a later run), silently. Run before every run where an index
    is ordered by the key (an index scan, no temp table), else before every complete read
    (first load, full read, backfill), where the whole table is read anyway."""
    row = source.duplicate_key(plan, gov)
    if row:
        *values, n = row
        key = dict(zip(plan.primary_key, values))
        raise SchemaError(
            f"declared primary key {list(plan.primary_key)} of {plan.schema}.{plan.table} is not "
            f"unique: {n} rows have {key}; merged on it they would become one row in BigQuery",
            tenant=plan.tenant, table=plan.table,
            hint="declare columns that identify a row as primary_key: (a UNIQUE index on them "
                 "in MySQL makes the source enforce it), or remove primary_key: and set "
                 "without_primary_key: replace (the table is then reloaded whole)")


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
            if getattr(s.dest, "deferred", False):
                res.warehouse_extra["merge"] = "pending"     # staged; the merge step applies it
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
