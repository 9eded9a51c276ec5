"""Deliver one tenant's tables: plan them all, open the destinations, run the tables side by side.

Plain Python; the Dagster assets and the CLI call `sync_tenant` with the run's IO (hakobu.ports.IO:
resources.io.LiveIO in production, tests/fakes in the unit tier) and turn its results into
materializations. Tables load side by side up to the cluster's connection budget; one table's
failure is its result, never the tenant's.
"""

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hakobu.config import Config, Tenant
from hakobu.errors import ConfigError
from hakobu.planning import plan_for
from hakobu.plan import TablePlan
from hakobu.ports import IO, Destination, ReadGate, Source
from hakobu.results import NO_HOOKS, Hooks, TableResult, failed_result, with_retries
from hakobu.table import sync_table
from hakobu.warehouse import WarehouseTarget, open_warehouse, table_names
from hakobu.warehouse_merge import fold_merge, merge_warehouse_tables

log = logging.getLogger("hakobu.sync")


@dataclass
class TenantRun:
    """What every table of one tenant's run shares: plans, destinations, the cluster's governor."""

    config: Config
    tenant: Tenant
    source: Source
    run_id: str
    names: list[str]
    plans: dict[str, TablePlan]
    results: dict[str, TableResult]          # tables refused at planning
    dest: Destination | None = None
    warehouse: WarehouseTarget | None = None
    gov: ReadGate | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def workers(self, share: float = 1.0) -> int:
        budget = self.config.cluster_of(self.tenant).read_budget.max_connections
        return max(1, min(len(self.plans), int(budget * share)))


def open_tenant_run(config: Config, tenant_id: str, *, io: IO, tables: list[str] | None,
                    run_id: str, customer: bool = True,
                    warehouse: bool | None = None,
                    on_result: Callable[[TableResult], None] | None = None,
                    defer_warehouse: bool = False, realtime: bool = False) -> TenantRun:
    """Plan every table first (reflection only): a table that does not fit its declaration is
    reported and skipped before anything is written to BigQuery. Then the destinations.

    A `delivery: realtime` table is `hakobu stream`'s: a nightly run (the default) leaves it
    out, and refuses it by name — two writers of one table would undo each other's rows.
    `realtime=True` is the stream's snapshot of such tables (hakobu.stream)."""
    tenant = config.tenant(tenant_id)
    names = tables or (tenant.realtime_tables if realtime else tenant.nightly_tables)
    for n in names:
        tenant.table(n)  # unknown table → ConfigError before anything happens
    cluster = config.cluster_of(tenant)
    source = io.source(cluster)
    source.ping()
    run = TenantRun(config, tenant, source, run_id, names, {}, {})
    for n in names:
        if not realtime and tenant.table(n).delivery == "realtime":
            run.results[n] = failed_result(tenant.tenant, n, _streamed(tenant, n), "refused")
            if on_result is not None:
                on_result(run.results[n])
            continue
        try:
            run.plans[n] = plan_for(source, tenant, tenant.table(n))
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
        run.warehouse = open_warehouse(config, tenant, io, list(run.plans.values()),
                                       defer=defer_warehouse)
        wdest = run.warehouse.dest if run.warehouse is not None else None
        if wdest is not None and hasattr(wdest, "prefetch_watermarks"):
            wdest.prefetch_watermarks(table_names(list(run.plans.values()), config.warehouse))
    run.gov = io.gate(cluster)
    return run


def _streamed(tenant: Tenant, name: str) -> ConfigError:
    return ConfigError(f"table {name!r} has delivery: realtime: `hakobu stream` delivers it, "
                       "not the nightly job", tenant=tenant.tenant, table=name,
                       hint=f"`hakobu stream --recover {tenant.tenant} --tables {name}` reloads "
                            "it; `hakobu verify` compares it; or set delivery: nightly in "
                            f"{tenant.file or 'the tenant file'}")


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


def sync_tenant(config: Config, tenant_id: str, *, io: IO, tables: list[str] | None = None,
                run_id: str | None = None,
                hooks: Hooks = NO_HOOKS, on_result: Callable[[TableResult], None] | None = None,
                customer: bool = True, warehouse: bool | None = None, verify: bool = False,
                merge_warehouse: bool = True, realtime: bool = False) -> list[TableResult]:
    """Deliver the tenant's tables (all, or the named ones) into its customer dataset and, when
    tenants/warehouse.yaml enables it (and `warehouse` is not False), into the warehouse too —
    from the same reads.

    Tables load side by side up to the cluster's connection budget; a table that fails (schema
    change, bad value) does not stop the others. Every table's outcome is returned.

    The warehouse part of each table is staged as a pending slice (hakobu.warehouse_merge):
    with `merge_warehouse` (a run by hand, a test) the merge step applies every pending slice
    of these tables at the end, and checks this tenant's slices; a scheduled night leaves that
    to the `warehouse_merge` schedule, so a warehouse table takes one MERGE per merge step, not
    one per tenant.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    run = open_tenant_run(config, tenant_id, io=io, tables=tables, run_id=run_id,
                          customer=customer, warehouse=warehouse, on_result=on_result,
                          defer_warehouse=True, realtime=realtime)
    if not run.plans:
        return [run.results[n] for n in run.names]

    def one(name: str) -> TableResult:
        return with_retries(
            lambda: sync_table(run.source, run.dest, run.tenant, name, run_id=run_id,
                               governor=run.gov, hooks=hooks, state_lock=run.lock,
                               plan=run.plans[name], warehouse=run.warehouse, verify=verify),
            what=f"{tenant_id}/{name}")

    # The tables' watermark moves and rotation notes go in one statement per dataset at the
    # end (resources.bigquery_state.hold_watermarks: safe, each is held after its MERGE).
    held = [d for d in (run.dest, run.warehouse.dest if run.warehouse else None)
            if d is not None and hasattr(d, "hold_watermarks")]
    for d in held:
        d.hold_watermarks()
    try:
        results = run_tables(run, one, run.workers(), on_result)
    except BaseException:
        for d in held:             # keep what the finished tables merged; the cause goes on
            try:
                d.flush_state()
            except Exception as exc:  # noqa: BLE001 — the run's own error is the one to see
                log.error("%s: writing the held watermarks failed too: %s", tenant_id, exc)
        raise
    for d in held:
        d.flush_state()
    if merge_warehouse and run.warehouse is not None and run.warehouse.deferred:
        fold_merge(results, merge_warehouse_tables(config, io, tenants=[run.tenant.tenant],
                                                   tables=[r.table for r in results if r.ok],
                                                   run_id=run_id,
                                                   modes={r.table: r.mode for r in results}),
                   run.tenant.tenant)
    return results
