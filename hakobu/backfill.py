"""Backfill a tenant: a full, throttled reload that customers never see half done.

For every table (all of the tenant's, or the named ones):
  1. a fresh shadow table `_hakobu_shadow_<table>` is created with the source's *current* schema
     (so a backfill is also the way through an incompatible type change);
  2. the whole table is read — keyset chunks in primary-key order like an initial load (or
     through the cursor index where the key does not allow it), through the same cluster
     governor (`gate=`), one read at a time per table and at most half the cluster's read slots
     so other tenants' nightly loads keep their share — and merged into the shadow (and, read
     once, into the warehouse sink's own shadow);
  3. reconcile: the shadow's row count must equal the rows read, else the backfill fails;
  4. swap: the watermark must not have moved meanwhile (no other run of this tenant); then
     `CREATE OR REPLACE TABLE target CLUSTER BY ... AS SELECT * FROM shadow` (one statement:
     readers see the old table or the new one) — the warehouse slice by one tenant-scoped MERGE;
  5. the watermark is set by compare-and-set to the last key the backfill read.
A failure before 4 drops the shadows and leaves the old table and the old watermark. A crash
between 4 and 5 leaves the new table with the old watermark: the next nightly run re-reads from
there and merges idempotently.

Progress (rows done / estimated total, rows/s, ETA) goes to `on_progress`: the CLI draws a bar,
the Dagster asset logs lines.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable

from hakobu.config import Config
from hakobu.errors import LoadError, SourceUnavailable
from hakobu.keys import max_key_below
from hakobu.plan import NOTHING, TablePlan
from hakobu import table as table_sync
from hakobu.progress import Progress, estimate
from hakobu.sinks import Sink, build_sinks, staging
from hakobu.ports import IO
from hakobu.results import NO_HOOKS, Hooks, TableResult, with_retries
from hakobu.sync import TenantRun, open_tenant_run, run_tables
from hakobu.table import _Fanout, _summarise, name_metadata, refuse_duplicate_keys, sync_table
from hakobu.table_checks import after_table
from hakobu.watermarks import bound_utc, common_start, watermark_utc
from hakobu.state import Watermark

log = logging.getLogger("hakobu.backfill")

SLOT_SHARE = 0.5          # tables of one backfill side by side: at most half the cluster's slots


class ReconcileError(LoadError):
    """The shadow table does not hold the rows that were read; nothing was swapped."""


def estimate_rows(run: TenantRun, plan: TablePlan) -> tuple[int | None, str]:
    return estimate(run.source, plan, run.gov)


def backfill_table(run: TenantRun, name: str, *, hooks: Hooks = NO_HOOKS,
                   on_progress: Callable[[Progress], None] | None = None) -> TableResult:
    """Reload one table into shadows, reconcile, swap, set the watermark. See the module doc."""
    plan0 = run.plans[name]
    if plan0.full_replace:
        # without a primary key every run is already a complete, atomic replace
        r = sync_table(run.source, run.dest, run.tenant, name, run_id=run.run_id,
                       governor=run.gov, hooks=hooks, state_lock=run.lock, plan=plan0,
                       warehouse=run.warehouse)
        r.mode = "backfill (replace)"
        return r
    t0 = time.monotonic()
    bf = _Backfill(run, name, hooks, on_progress or (lambda p: None))
    try:
        bf.fan.each("creating the shadow table", lambda s: s.prepare_shadow())
        bf.bound()
        bf.read_into_shadows()
        bf.fan.each("reconcile", bf.reconcile)
        hooks("before_swap", table=name)
        bf.fan.each("swap", bf.swap)
    except BaseException:
        for s in bf.sinks:
            try:
                s.drop_shadow()
            except Exception as exc:      # noqa: BLE001 — best effort; the next backfill drops it
                log.warning("%s/%s: could not drop %s: %s", run.tenant.tenant, name, s.shadow, exc)
        raise
    finally:
        bf.progress.finished = True
        bf.report(bf.progress)
    res = bf.finish()
    res.duration_s = time.monotonic() - t0
    return res


class _Backfill:
    """One table's backfill: its sinks' shadows, the read, the reconcile and the swap."""

    def __init__(self, run: TenantRun, name: str, hooks: Hooks,
                 report: Callable[[Progress], None]):
        self.run, self.name, self.hooks, self.report = run, name, hooks, report
        self.source, self.gov, tenant = run.source, run.gov, run.tenant
        res = self.res = TableResult(tenant.tenant, name, mode="backfill",
                                     customer=run.dest is not None)
        self.plan, self.sinks, res.withheld, wh_error = build_sinks(
            run.plans[name], tenant.table(name), run.dest, run.warehouse)
        if wh_error:
            res.warehouse, res.warehouse_error = "failed", wh_error
        res.extra.update(name_metadata(self.plan))
        self.fan = _Fanout(res, self.sinks)
        if not self.plan.key_enforced:
            refuse_duplicate_keys(self.source, self.plan, self.gov)   # before any shadow
        if self.plan.cursor is not None:
            self.fan.each("reading the watermark", lambda s: s.read_watermark())
        self.total, self.basis = estimate_rows(run, self.plan)
        self.progress = Progress(tenant.tenant, name, self.total, self.basis)
        self.upper = self.last_key = None

    def bound(self) -> None:
        """The run's upper bound; a numeric cursor's bound held by an open writer stops the
        backfill: the shadow would lack every row changed since the last watermark, and the
        swap would hide them until the next run."""
        plan, res = self.plan, self.res
        if plan.cursor is None:
            return
        held_at = common_start([s.previous.key if s.previous else None for s in self.fan.active])
        self.upper, res.bound = self.source.upper_bound(plan, held_at)
        if self.upper is NOTHING or res.bound.get("held_by_trx_ids"):
            raise SourceUnavailable(
                "a transaction that started before the cursor's maximum was read is still open, "
                "so rows changed since the last delivery cannot be read safely; nothing was "
                "swapped", tenant=res.tenant, table=self.name,
                hint=f"retry when it has finished (InnoDB trx {res.bound.get('held_by_trx_ids')})")

    def _into_shadow(self) -> None:
        def one(s: Sink) -> None:
            files = s.take()
            if files:
                self.hooks("before_merge", table=self.name, sink=s.kind)
                s.merge(files, run_id=f"{self.run.run_id}_bf{s.merges}", into=s.shadow)
        self.fan.each("merge into the shadow", one)

    def _on_chunk(self, rows: int, seconds: float) -> None:
        self.res.chunks += 1
        self.res.rows_read += rows
        self.progress.done += rows
        self.report(self.progress)
        self.hooks("after_chunk", table=self.name, rows=self.res.rows_read)

    def read_into_shadows(self) -> None:
        """The whole table: in primary-key order where the plan allows it (sequential on the
        clustered index, like an initial load), else through the cursor index; then the rows
        whose cursor is NULL or a zero date."""
        plan, fan = self.plan, self.fan
        first = "initial" if plan.initial_in_pk_order else "main"
        passes = ("full",) if plan.cursor is None else \
            ((first, "nulls", "zeros") if plan.cursor_is_temporal else (first, "nulls"))
        with staging(self.sinks):
            for pass_ in passes:
                upper = self.upper if pass_ in ("main", "initial") else None
                for batch, key in self.source.chunks(plan, pass_, None, upper,
                                                     on_chunk=self._on_chunk, gate=self.gov):
                    fan.write(batch)
                    if pass_ == "main":
                        self.last_key = key
                    elif pass_ == "initial":      # the largest (cursor, pk) read so far
                        k = max_key_below(plan, batch, None)
                        if k is not None and (self.last_key is None or self.last_key < k):
                            self.last_key = k
                    if fan.staged_rows >= _merge_every():
                        self._into_shadow()
                        fan.each("staging", lambda s: s.open())
            self._into_shadow()

    def reconcile(self, s: Sink) -> None:
        n = s.count_shadow()
        if n != self.res.rows_read:
            raise ReconcileError(
                f"{s.kind} shadow holds {n} rows, the source read gave {self.res.rows_read}; "
                "nothing was swapped", tenant=self.res.tenant, table=self.name,
                hint="rerun the backfill (rows deleted or re-keyed during the read show up "
                     "here)")
        self.res.extra[f"{s.kind}_shadow_rows"] = n

    def swap(self, s: Sink) -> None:
        if self.plan.cursor is not None:
            now = s.dest.read_watermark(s.table)
            if _version(now) != _version(s.previous):
                raise LoadError("the watermark moved during the backfill (another run of this "
                                "tenant loaded the table); nothing was swapped",
                                tenant=self.res.tenant, table=self.name,
                                hint="runs of one tenant must not overlap; rerun the backfill")
        s.swap()
        self.hooks("after_swap", table=self.name, sink=s.kind)
        if self.plan.cursor is not None:
            _set_watermark(s, self.last_key, self.res.rows_read, self.run.run_id, self.run.lock)

    def finish(self) -> TableResult:
        plan, res, last_key = self.plan, self.res, self.last_key
        for s in self.sinks:
            if not s.active:
                try:
                    s.drop_shadow()
                except Exception:             # noqa: BLE001
                    pass
        _summarise(res, self.sinks)
        res.mode = "backfill"
        res.watermark = "-" if last_key is None else str(last_key[0])
        if plan.cursor is None:
            res.watermark = "(full read)"
        res.watermark_utc = watermark_utc(plan, last_key, self.source.cluster.timezone)
        res.complete_to_utc = bound_utc(res.bound)
        res.extra.update({"rows_total_estimate": self.total if self.total is not None else -1,
                          "rows_total_basis": self.basis,
                          "rows_per_s": round(self.progress.rate, 1)})
        after_table(self.source, plan, self.sinks, res, self.hooks)
        res.throttled_s = self.gov.throttled_seconds(res.tenant, self.name)
        return res


def _merge_every() -> int:
    return table_sync.MERGE_EVERY_ROWS      # read at call time: tests lower it


def _version(wm: Watermark | None) -> int:
    return 0 if wm is None else wm.version


def _set_watermark(s: Sink, key, rows: int, run_id: str, lock: threading.Lock) -> None:
    """Compare-and-set from the watermark read before the swap. The table now holds exactly the
    backfill's rows, so if a run slipped in between, the backfill's key is still the truth: set
    it from whatever is there now (and say so)."""
    wm = s.watermark(key, rows)        # the warehouse's records the column generations
    with lock:
        try:
            s.previous = s.dest.write_watermark(s.table, wm, s.previous, run_id)
        except LoadError:
            now = s.dest.read_watermark(s.table)
            log.warning("%s: watermark moved during the swap; setting it to the backfill's key",
                        s.table)
            s.previous = s.dest.write_watermark(s.table, wm, now, run_id)


def backfill_tenant(config: Config, tenant_id: str, *, tables: list[str] | None = None,
                    io: IO, run_id: str | None = None,
                    hooks: Hooks = NO_HOOKS, customer: bool = True, warehouse: bool | None = None,
                    on_progress: Callable[[Progress], None] | None = None,
                    on_result: Callable[[TableResult], None] | None = None) -> list[TableResult]:
    """Full reload of a tenant's tables (all, or the named ones). Tables run side by side on at
    most half of the cluster's read slots (one at a time with the default budget of 2)."""
    run_id = run_id or uuid.uuid4().hex[:12]
    run = open_tenant_run(config, tenant_id, io=io, tables=tables, run_id=run_id,
                          customer=customer, warehouse=warehouse, on_result=on_result)
    if not run.plans:
        return [run.results[n] for n in run.names]

    def one(name: str) -> TableResult:
        return with_retries(lambda: backfill_table(run, name, hooks=hooks,
                                                   on_progress=on_progress),
                            what=f"{tenant_id}/{name} backfill")

    return run_tables(run, one, run.workers(SLOT_SHARE), on_result)
