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
from hakobu.errors import HakobuError, LoadError, SourceUnavailable
from hakobu.plan import NOTHING, SRC, TablePlan, max_key_below, tenant_predicate
from hakobu.progress import (Progress, add_listener, count_sql, estimate,  # noqa: F401
                             notify, remove_listener)
from hakobu.sinks import Sink, build_sinks, staging
from hakobu.sync import (NO_HOOKS, Hooks, TableResult, TenantRun, _Fanout, _summarise,
                         name_metadata, refuse_duplicate_keys,
                         after_table, bound_utc, common_start, open_tenant_run, run_tables,
                         sync_table,
                         watermark_utc, with_retries)
from resources.bigquery_client import BigQuerySettings
from resources.bigquery_dest import Watermark
from resources.mysql_source import iter_chunks

log = logging.getLogger("hakobu.backfill")

MODE_TAG = "hakobu/mode"
FULL_RELOAD = "full-reload"
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
    tenant, source, gov = run.tenant, run.source, run.gov
    res = TableResult(tenant.tenant, name, mode="backfill", customer=run.dest is not None)
    plan, sinks, res.withheld, wh_error = build_sinks(plan0, tenant.table(name), run.dest,
                                                      run.warehouse)
    if wh_error:
        res.warehouse, res.warehouse_error = "failed", wh_error
    res.extra.update(name_metadata(plan))
    fan = _Fanout(res, sinks)
    if not plan.key_enforced:
        refuse_duplicate_keys(source, plan, gov)     # a complete read: before any shadow
    if plan.cursor is not None:
        fan.each("reading the watermark", lambda s: s.read_watermark())
    total, basis = estimate_rows(run, plan)
    progress = Progress(tenant.tenant, name, total, basis)
    report = on_progress or (lambda p: None)
    fan.each("creating the shadow table", lambda s: s.prepare_shadow())
    upper = None
    if plan.cursor is not None:
        held_at = common_start([s.previous.key if s.previous else None for s in fan.active])
        upper, res.bound = source.upper_bound(plan, held_at)
        if upper is NOTHING or res.bound.get("held_by_trx_ids"):
            # A numeric cursor's bound held by an open writer: the shadow would lack every row
            # changed since the last watermark, and the swap would hide them until the next run.
            raise SourceUnavailable(
                "a transaction that started before the cursor's maximum was read is still open, "
                "so rows changed since the last delivery cannot be read safely; nothing was "
                "swapped", tenant=tenant.tenant, table=name,
                hint=f"retry when it has finished (InnoDB trx {res.bound.get('held_by_trx_ids')})")
    # the whole table: in primary-key order where the plan allows it (sequential on the
    # clustered index, like an initial load), else through the cursor index; then the rows
    # whose cursor is NULL or a zero date
    first = "initial" if plan.initial_in_pk_order else "main"
    passes = ("full",) if plan.cursor is None else \
        ((first, "nulls", "zeros") if plan.cursor_is_temporal else (first, "nulls"))
    last_key = None
    try:
        def into_shadow() -> None:
            def one(s: Sink) -> None:
                files = s.take()
                if files:
                    hooks("before_merge", table=name, sink=s.kind)
                    s.merge(files, run_id=f"{run.run_id}_bf{s.merges}", into=s.shadow)
            fan.each("merge into the shadow", one)

        with staging(sinks):
            for pass_ in passes:
                def on_chunk(rows: int, seconds: float) -> None:
                    res.chunks += 1
                    res.rows_read += rows
                    progress.done += rows
                    report(progress)
                    hooks("after_chunk", table=name, rows=res.rows_read)

                for batch, key in iter_chunks(source, plan, pass_, None,
                                              upper if pass_ in ("main", "initial") else None,
                                              on_chunk=on_chunk, gate=gov):
                    fan.write(batch)
                    if pass_ == "main":
                        last_key = key
                    elif pass_ == "initial":      # the largest (cursor, pk) read so far
                        k = max_key_below(plan, batch, None)
                        if k is not None and (last_key is None or last_key < k):
                            last_key = k
                    if fan.staged_rows >= _merge_every():
                        into_shadow()
                        fan.each("staging", lambda s: s.open())
            into_shadow()

        def reconcile(s: Sink) -> None:
            n = s.count_shadow()
            if n != res.rows_read:
                raise ReconcileError(
                    f"{s.kind} shadow holds {n} rows, the source read gave {res.rows_read}; "
                    "nothing was swapped", tenant=tenant.tenant, table=name,
                    hint="rerun the backfill (rows deleted or re-keyed during the read show up "
                         "here)")
            res.extra[f"{s.kind}_shadow_rows"] = n
        fan.each("reconcile", reconcile)
        hooks("before_swap", table=name)

        def swap(s: Sink) -> None:
            if plan.cursor is not None:
                now = s.dest.read_watermark(s.table)
                if _version(now) != _version(s.previous):
                    raise LoadError("the watermark moved during the backfill (another run of this "
                                    "tenant loaded the table); nothing was swapped",
                                    tenant=tenant.tenant, table=name,
                                    hint="runs of one tenant must not overlap; rerun the backfill")
            s.swap()
            hooks("after_swap", table=name, sink=s.kind)
            if plan.cursor is not None:
                _set_watermark(s, last_key, res.rows_read, run.run_id, run.lock)
        fan.each("swap", swap)
    except BaseException:
        for s in sinks:
            try:
                s.drop_shadow()
            except Exception as exc:      # noqa: BLE001 — best effort; the next backfill drops it
                log.warning("%s/%s: could not drop %s: %s", tenant.tenant, name, s.shadow, exc)
        raise
    finally:
        progress.finished = True
        report(progress)
    for s in sinks:
        if not s.active:
            try:
                s.drop_shadow()
            except Exception:             # noqa: BLE001
                pass
    _summarise(res, sinks)
    res.mode = "backfill"
    res.watermark = "-" if last_key is None else str(last_key[0])
    if plan.cursor is None:
        res.watermark = "(full read)"
    res.watermark_utc = watermark_utc(plan, last_key, source.cluster.timezone)
    res.complete_to_utc = bound_utc(res.bound)
    res.extra.update({"rows_total_estimate": total if total is not None else -1,
                      "rows_total_basis": basis,
                      "rows_per_s": round(progress.rate, 1)})
    after_table(source, plan, sinks, res, hooks)
    res.throttled_s = gov.throttled_seconds(tenant.tenant, name)
    res.duration_s = time.monotonic() - t0
    return res


def _merge_every() -> int:
    from hakobu import sync

    return sync.MERGE_EVERY_ROWS


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


def backfill_tenant(config: Config, tenant_id: str, *, io, tables: list[str] | None = None,
                    run_id: str | None = None,
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
