"""Deliver one tenant's tables: plan, read in keyset chunks, stage, MERGE, then move the watermark.

Plain Python; the Dagster assets call `sync_tenant` and turn its results into materializations.
Order of effects for every unit of work, which is what makes a crash anywhere safe to rerun:
  1. chunks are read and appended to a local Parquet file (nothing in BigQuery yet);
  2. the file is loaded into a fresh staging table and MERGEd on the primary key (idempotent);
  3. only then does the watermark move (compare-and-set).
A crash before 3 means the next run re-reads rows that are already merged: harmless.
"""

import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hakobu.config import Config, Tenant
from hakobu.errors import HakobuError
from hakobu.plan import TablePlan
from hakobu.types import arrow_schema
from resources.bigquery_client import BigQuerySettings
from resources.bigquery_dest import BigQueryDestination, Watermark
from resources.mysql_source import MySQLSource, iter_chunks
from resources.pressure import ReadGovernor, governor_for

log = logging.getLogger("hakobu.sync")
MERGE_EVERY_ROWS = int(os.environ.get("HAKOBU_MERGE_EVERY_ROWS", "1000000"))


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
    duration_s: float = 0.0
    throttled_s: float = 0.0
    mode: str = "incremental"
    columns_added: list[str] = field(default_factory=list)
    bound: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        return {"rows_read": self.rows_read, "rows_merged": self.rows_merged,
                "bytes_staged": self.bytes_staged, "chunks": self.chunks,
                "merges": self.merges, "watermark": self.watermark,
                "duration_s": round(self.duration_s, 3), "throttled_s": round(self.throttled_s, 3),
                "mode": self.mode, "null_cursor_rows": self.null_cursor_rows,
                "columns_added": ", ".join(self.columns_added) or "-",
                **{f"bound_{k}": str(v) for k, v in self.bound.items()}}


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


def sync_table(source: MySQLSource, dest: BigQueryDestination, tenant: Tenant, table_name: str,
               *, run_id: str, governor: ReadGovernor | None = None,
               hooks: Hooks = NO_HOOKS, state_lock: "threading.Lock | None" = None,
               plan: TablePlan | None = None) -> TableResult:
    t0 = time.monotonic()
    res = TableResult(tenant.tenant, table_name)
    plan = plan or source.plan_table(tenant, tenant.table(table_name))
    specs = list(plan.specs)
    res.columns_added = dest.ensure_table(table_name, specs, list(plan.primary_key))
    gov = governor or ReadGovernor.unlimited()
    lock = state_lock or threading.Lock()

    def read(pass_: str, after, upper):
        def on_chunk(rows: int, seconds: float) -> None:
            res.chunks += 1
            res.rows_read += rows
            hooks("after_chunk", table=table_name, rows=res.rows_read)

        for batch, key in iter_chunks(source, plan, pass_, after, upper, on_chunk=on_chunk,
                                      gate=gov):
            yield batch, key

    def merge(files, delete_scope=None):
        hooks("before_merge", table=table_name)
        stats = dest.merge(table_name, files, specs, list(plan.primary_key),
                           delete_scope=delete_scope, run_id=f"{run_id}_{res.merges}")
        res.merges += 1
        res.rows_merged += stats.dml_rows
        res.bytes_staged += stats.bytes_staged
        hooks("after_merge", table=table_name)

    schema = arrow_schema(specs)
    if plan.full_replace:
        # No key: nothing to merge on. Stream the whole table, swap it in atomically.
        res.mode = "replace"
        from hakobu.plan import replace_sql

        with dest.staging_file(table_name, schema) as sf:
            with gov.slot(tenant.tenant, table_name):
                for batch in source.stream(plan, replace_sql(plan), plan.chunk_rows):
                    sf.write(batch)
                    res.chunks += 1
                    res.rows_read += batch.num_rows
                    hooks("after_chunk", table=table_name, rows=res.rows_read)
            hooks("after_stage", table=table_name)
            files = [sf.close()] if sf.rows else []
            hooks("before_merge", table=table_name)
            stats = dest.replace(table_name, files, specs, run_id=f"{run_id}_r")
            res.merges, res.rows_merged, res.bytes_staged = 1, stats.dml_rows, stats.bytes_staged
            hooks("after_merge", table=table_name)
        res.watermark = "(full replace)"
    elif plan.cursor is None:
        # No cursor: the whole table every run, merged with deletion of vanished rows.
        res.mode = "full"
        with dest.staging_file(table_name, schema) as sf:
            for batch, _ in read("full", None, None):
                sf.write(batch)
            hooks("after_stage", table=table_name)
            merge([sf.close()] if sf.rows else [], delete_scope="TRUE")
        res.watermark = "(full read)"
    else:
        previous = dest.read_watermark(table_name)
        upper, res.bound = source.upper_bound(plan)
        after = previous.key if previous else None
        total = previous.rows_total if previous else 0
        pending_key = None
        sf_cm = dest.staging_file(table_name, schema)
        sf = sf_cm.__enter__()
        try:
            for batch, key in read("main", after, upper):
                sf.write(batch)
                pending_key = key
                if sf.rows >= MERGE_EVERY_ROWS:
                    hooks("after_stage", table=table_name)
                    rows = sf.rows
                    merge([sf.close()])
                    with lock:
                        hooks("before_watermark", table=table_name)
                        previous = dest.write_watermark(
                            table_name, Watermark(pending_key, 0, total + rows), previous, run_id)
                    total += rows
                    sf_cm.__exit__(None, None, None)
                    sf_cm = dest.staging_file(table_name, schema)
                    sf = sf_cm.__enter__()
                    pending_key = None
            if sf.rows:
                hooks("after_stage", table=table_name)
                rows = sf.rows
                merge([sf.close()])
                with lock:
                    hooks("before_watermark", table=table_name)
                    previous = dest.write_watermark(
                        table_name, Watermark(pending_key, 0, total + rows), previous, run_id)
                total += rows
        finally:
            sf_cm.__exit__(None, None, None)
        # Rows whose cursor is NULL (or a zero date) cannot sit behind a watermark: they are
        # re-read every run, keyed on the primary key alone, and merged like the others.
        before = res.rows_read
        with dest.staging_file(table_name, schema) as sf:
            for pass_ in ("nulls", "zeros") if plan.cursor_is_temporal else ("nulls",):
                for batch, _ in read(pass_, None, None):
                    sf.write(batch)
            if sf.rows:
                merge([sf.close()])
        res.null_cursor_rows = res.rows_read - before
        res.watermark = previous.display() if previous else "-"
    res.throttled_s = gov.throttled_seconds(tenant.tenant, table_name)
    res.duration_s = time.monotonic() - t0
    return res


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


def sync_tenant(config: Config, tenant_id: str, *, tables: list[str] | None = None,
                settings: BigQuerySettings | None = None, run_id: str | None = None,
                hooks: Hooks = NO_HOOKS, on_result: Callable[[TableResult], None] | None = None,
                ) -> list[TableResult]:
    """Deliver the tenant's tables (all, or the named ones) into its customer dataset.

    Tables load side by side up to the cluster's connection budget; a table that fails (schema
    change, bad value) does not stop the others. Every table's outcome is returned.
    """
    tenant = config.tenant(tenant_id)
    names = tables or [t.name for t in tenant.tables]
    for n in names:
        tenant.table(n)  # unknown table → ConfigError before anything happens
    settings = settings or BigQuerySettings.from_env()
    run_id = run_id or uuid.uuid4().hex[:12]
    source = source_for(config, tenant)
    source.ping()
    # Plan every table first (reflection only): a table that does not fit its declaration is
    # reported and skipped before anything is written to BigQuery.
    plans: dict[str, TablePlan] = {}
    results: dict[str, TableResult] = {}
    for n in names:
        try:
            plans[n] = source.plan_table(tenant, tenant.table(n))
        except HakobuError as exc:
            log.error("%s/%s refused: %s", tenant.tenant, n, exc)
            results[n] = TableResult(tenant.tenant, n, ok=False, error=str(exc))
            if on_result is not None:
                on_result(results[n])
    if plans:
        dest = destination_for(tenant, settings)
        created = dest.ensure_dataset(labels={"managed-by": "hakobu", "tenant": tenant.tenant})
        if created:
            _grant_new_dataset(config, dest)
        dest.ensure_state_table()
        dest.drop_stale_staging()
        gov = governor_for(config.cluster_of(tenant))
        lock = threading.Lock()

        def one(name: str) -> TableResult:
            try:
                r = with_retries(
                    lambda: sync_table(source, dest, tenant, name, run_id=run_id, governor=gov,
                                       hooks=hooks, state_lock=lock, plan=plans[name]),
                    what=f"{tenant.tenant}/{name}")
            except HakobuError as exc:
                log.error("%s/%s failed: %s", tenant.tenant, name, exc)
                r = TableResult(tenant.tenant, name, ok=False, error=str(exc))
            if on_result is not None:
                on_result(r)
            return r

        workers = max(1, min(len(plans), config.cluster_of(tenant).read_budget.max_connections))
        if workers == 1:
            done = [one(n) for n in plans]
        else:
            with ThreadPoolExecutor(max_workers=workers,
                                    thread_name_prefix=f"hakobu-{tenant_id}") as ex:
                done = list(ex.map(one, plans))
        results.update({r.table: r for r in done})
    return [results[n] for n in names]


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
