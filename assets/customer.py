"""Customer tables (and their warehouse twins): one multi-asset, partitioned by tenant.

One run per tenant (not per table) keeps Dagster's overhead per tenant small; a tenant's tables
load side by side inside that run under the cluster's read budget. A tenant materializes only
the tables its file lists; the others are skipped for its partition.

When tenants/warehouse.yaml enables the internal warehouse, the same step also materializes
`warehouse/<table>` (partition = the tenant's slice): both are fed from one read of the source
(hakobu.sinks), which is why they are outputs of one multi-asset and not two assets.

The step is handed its IO by the `io` resource (resources.dagster.HakobuIOResource); it builds
no client itself. Its run config says the mode: `mode: full_reload` (the `backfill` job's
config) reloads the selected tables in full through shadow tables (hakobu.backfill), logging
progress lines; `incremental` (the default) delivers what changed. Runs launched before the
mode was run config carry the tag `hakobu/mode: full-reload` instead, which is still honoured.

Each customer table carries two checks, declared here (`check_specs`) so the delivery step
reports them itself: `in_sync_with_source` from the comparison the sync made anyway
(assets/checks.py) and `delivered_by_deadline` (assets/deadlines.py). Separate check steps
would cost every tenant's run two more steps per table and a second scan of the source.
"""

import datetime as dt
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import dagster as dg

from assets import checks, deadlines
from assets.freshness import table_policies
from assets.keys import (GROUP, POOL, WAREHOUSE_GROUP, customer_key, table_names,
                         tenant_partitions, warehouse_key)
from assets.metadata import customer_metadata, warehouse_metadata
from hakobu.backfill import backfill_tenant
from hakobu.progress import Progress, notify
from hakobu.config import Config, Tenant
from hakobu.errors import explain
from hakobu.naming import table_name
from hakobu.runs import record_worker
from hakobu.results import TableResult
from hakobu.sync import sync_tenant
from hakobu.warehouse import enabled as warehouse_enabled
from resources.dagster import HakobuIOResource

__all__ = ["GROUP", "WAREHOUSE_GROUP", "customer_key", "warehouse_key", "table_names",
           "tenant_partitions", "build_customer_assets", "DeliveryConfig"]

PROGRESS_EVERY_S = 10.0
NODE = "customer_tables"
INCREMENTAL, FULL_RELOAD = "incremental", "full_reload"
LEGACY_MODE_TAG, LEGACY_FULL_RELOAD = "hakobu/mode", "full-reload"   # runs launched before


class DeliveryConfig(dg.Config):
    """How the step delivers: what changed (incremental), or everything again (full_reload,
    through shadow tables swapped in atomically: the `backfill` job)."""

    mode: Literal["incremental", "full_reload"] = INCREMENTAL
    # True: the run applies the warehouse's pending slices of its tables at its end and checks
    # its slices (a run launched by hand); False (the schedules): the `warehouse_merge`
    # schedule does, one MERGE per warehouse table for every tenant that staged (README)
    merge_warehouse: bool = False


def mode_run_config(mode: str, merge_warehouse: bool = False) -> dict:
    """The run config that selects a mode for the customer step."""
    cfg: dict = {"mode": mode}
    if merge_warehouse:
        cfg["merge_warehouse"] = True
    return {"ops": {NODE: {"config": cfg}}}


def _origin(config: Config, part: str) -> str:
    """` (MySQL table ord$2024)` when the asset's BigQuery name is not the MySQL name."""
    names = sorted({t.name for tenant in config.tenants.values() for t in tenant.tables
                    if table_name(t.name) == part and t.name != part})
    return f" (MySQL table {', '.join(names)})" if names else ""


def asset_specs(config: Config, partitions: dg.StaticPartitionsDefinition) -> list:
    """customer/<table> for every table, and warehouse/<table> when the warehouse is enabled;
    a cron freshness policy where one tenant's deadline can be said so (assets/freshness.py)."""
    policies = table_policies(config)
    specs = [dg.AssetSpec(customer_key(name), group_name=GROUP, skippable=True,
                          kinds={"mysql", "bigquery"}, freshness_policy=policies.get(name),
                          description=f"Table {name}{_origin(config, name)} in each tenant's "
                                      "customer dataset, merged on its primary key.",
                          partitions_def=partitions)
             for name in table_names(config)]
    if warehouse_enabled(config):
        w = config.warehouse
        specs += [dg.AssetSpec(warehouse_key(name), group_name=WAREHOUSE_GROUP, skippable=True,
                               kinds={"mysql", "bigquery"}, freshness_policy=policies.get(name),
                               description=f"Table {name}{_origin(config, name)} in the "
                                           "internal warehouse "
                                           f"{w.project}.{w.dataset}: every tenant's rows with "
                                           "tenant_id, column policies applied; partition = "
                                           f"the tenant's slice, fed by the same read as "
                                           f"customer/{name}.",
                               partitions_def=partitions)
                  for name in table_names(config)]
    return specs


def check_specs(config: Config, partitions: dg.StaticPartitionsDefinition) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)   # partitioned checks: preview
        return [dg.AssetCheckSpec(name, asset=customer_key(table), description=text,
                                  partitions_def=partitions)
                for table in table_names(config)
                for name, text in ((checks.CHECK_NAME, checks.DESCRIPTION),
                                   (deadlines.CHECK_NAME, deadlines.DESCRIPTION))]


@dataclass
class Selection:
    """What this step was asked for, in the tenant's MySQL table names."""

    customer: set[str]
    warehouse: set[str]
    checks: set[tuple[str, str]]          # (table, check name)

    @classmethod
    def of(cls, context: dg.AssetExecutionContext, tenant: Tenant) -> "Selection":
        # asset-key parts are BigQuery names: back to the tenant's MySQL names
        mysql = {table_name(t.name): t.name for t in tenant.tables}
        keys = context.selected_asset_keys
        cust = {mysql.get(k.path[-1], k.path[-1]) for k in keys if k.path[0] == "customer"}
        wh = {mysql.get(k.path[-1], k.path[-1]) for k in keys if k.path[0] == "warehouse"}
        wanted = {(mysql.get(k.asset_key.path[-1], k.asset_key.path[-1]), k.name)
                  for k in context.selected_asset_check_keys}
        return cls(cust, wh, wanted)

    def tables(self, tenant: Tenant) -> list[str]:
        # a realtime table is `hakobu stream`'s (hakobu.stream): the nightly job leaves it out
        return [t.name for t in tenant.tables
                if t.delivery == "nightly" and t.name in self.customer | self.warehouse]


def is_full_reload(context: dg.AssetExecutionContext, config: DeliveryConfig) -> bool:
    return (config.mode == FULL_RELOAD
            or context.run.tags.get(LEGACY_MODE_TAG) == LEGACY_FULL_RELOAD)


def build_customer_assets(cfg: Config, partitions: dg.StaticPartitionsDefinition):
    @dg.multi_asset(name=NODE, specs=asset_specs(cfg, partitions),
                    check_specs=check_specs(cfg, partitions),
                    can_subset=True, pool=POOL, partitions_def=partitions)
    def customer_tables(context: dg.AssetExecutionContext, config: DeliveryConfig,
                        io: HakobuIOResource):
        tenant_id = context.partition_key
        tenant = cfg.tenant(tenant_id)
        record_worker(context.instance, context.run)   # so a dead worker's run can be failed
        sel = Selection.of(context, tenant)
        tables = sel.tables(tenant)
        if not tables:
            context.log.info(f"tenant {tenant_id} delivers none of the selected tables")
            yield from check_results(cfg, context, io.io, tenant_id, sel.checks, {}, set())
            return
        counts = RowCounts(cfg, tenant, io.io, context.log)
        results = deliver(cfg, context, io.io, tenant_id, tables, sel,
                          full_reload=is_full_reload(context, config), counts=counts,
                          merge_warehouse=config.merge_warehouse)
        yield from materializations(tenant_id, results, sel, counts)
        delivered = {r.table: r for r in results if r.ok and r.table in sel.customer}
        yield from check_results(cfg, context, io.io, tenant_id, sel.checks, delivered,
                                 {r.table for r in results if not r.ok})
        raise_problems(tenant_id, results, sel)

    logging.getLogger("hakobu").setLevel(logging.INFO)
    return customer_tables


class RowCounts:
    """The rows in each delivered table, counted as each table finishes (in its worker
    thread, through the run's IO): `dagster/row_count`. A count that fails is left out (and
    logged); it never fails the delivery."""

    def __init__(self, config: Config, tenant: Tenant, io, log):
        self.config, self.tenant, self.io, self.log = config, tenant, io, log
        self.customer: dict[str, int] = {}
        self.warehouse: dict[str, tuple[int | None, int | None]] = {}

    def count(self, r: TableResult, customer: bool, warehouse: bool) -> None:
        bq = table_name(r.table)
        try:
            if customer and r.ok:
                self.customer[r.table] = self.customer_rows(r, bq)
            if warehouse and r.ok and r.warehouse == "ok" \
                    and r.warehouse_extra.get("merge", "merged") == "merged":
                # a slice still pending is not in the table yet: counted after its merge
                dest = self.io.warehouse(self.config, self.tenant)
                part = getattr(dest, "count_slice", None)
                self.warehouse[r.table] = (dest.count(bq), part(bq) if part else None)
        except Exception as exc:     # noqa: BLE001 — metadata only: the delivery stands
            self.log.warning(f"{self.tenant.tenant}/{r.table}: no row count: {exc}")

    def customer_rows(self, r: TableResult, bq: str) -> int:
        """The run's own key comparison already counted the customer table (after its
        repair): when it found the table equal to the source, that count is exact and no
        query is needed — one BigQuery job less per table and night."""
        cmp = r.check
        if cmp is not None and cmp.dest_exists and cmp.equal:
            return cmp.dest_rows
        return self.io.customer(self.tenant).count(bq)


def deliver(cfg: Config, context, io, tenant_id: str, tables: list[str], sel: Selection, *,
            full_reload: bool, counts: RowCounts, merge_warehouse: bool = False
            ) -> list[TableResult]:
    """Run the engine for the tenant's selected tables, logging each table as it finishes."""
    log = context.log

    def on_result(r: TableResult) -> None:
        if r.ok:
            rate = r.rows_read / r.duration_s if r.duration_s else 0.0
            log.info(f"{tenant_id}/{r.table}: {r.rows_read} rows read in {r.duration_s:.1f}s "
                     f"({rate:,.0f} rows/s), {r.rows_merged} merged, watermark {r.watermark}"
                     + (f"; warehouse {r.warehouse}" if r.warehouse != "-" else ""))
            if r.warehouse_error:
                log.error(f"{tenant_id}/{r.table} warehouse: {r.warehouse_error}")
        else:
            log.error(f"{tenant_id}/{r.table}: {r.error}")
        counts.count(r, r.table in sel.customer, r.table in sel.warehouse)

    kw = dict(io=io, tables=tables, run_id=context.run_id[:12], on_result=on_result,
              customer=bool(sel.customer), warehouse=None if sel.warehouse else False)
    try:
        if full_reload:
            log.info(f"full reload (backfill) of {tenant_id}: {', '.join(tables)}")
            return backfill_tenant(cfg, tenant_id, on_progress=progress_logger(log), **kw)
        verify = any(name == checks.CHECK_NAME and t in sel.customer for t, name in sel.checks)
        return sync_tenant(cfg, tenant_id, verify=verify, merge_warehouse=merge_warehouse, **kw)
    except Exception as exc:
        # the tenant as a whole (its source unreachable, credentials, its dataset not
        # writable): this tenant's run fails with the reason, in one line; other tenants'
        # runs are their own
        why = explain(exc, tenant=tenant_id)
        raise dg.Failure(description=f"tenant {tenant_id} was not delivered: {why}",
                         metadata={"tenant": tenant_id, "error": str(why)}) from exc


def progress_logger(log):
    last: dict[str, float] = {}

    def progress(p: Progress) -> None:
        notify(p)
        now = time.monotonic()
        if p.finished or now - last.get(p.table, 0.0) >= PROGRESS_EVERY_S:
            last[p.table] = now
            log.info(p.line())

    return progress


def materializations(tenant_id: str, results: list[TableResult], sel: Selection,
                     counts: RowCounts):
    for r in results:
        if r.ok and r.table in sel.customer:
            yield dg.MaterializeResult(
                asset_key=customer_key(r.table),
                metadata=customer_metadata(tenant_id, r, counts.customer.get(r.table)))
        if r.ok and r.table in sel.warehouse and r.warehouse == "ok":
            rows, part = counts.warehouse.get(r.table, (None, None))
            yield dg.MaterializeResult(asset_key=warehouse_key(r.table),
                                       metadata=warehouse_metadata(tenant_id, r, rows, part))


def raise_problems(tenant_id: str, results: list[TableResult], sel: Selection) -> None:
    failed = [r for r in results if not r.ok]
    wh_failed = [r for r in results if r.ok and r.table in sel.warehouse and r.warehouse != "ok"]
    if failed or wh_failed:
        problems = [f"{r.table}: {r.error}" for r in failed] + \
                   [f"warehouse/{r.table}: {r.warehouse_error}" for r in wh_failed]
        raise dg.Failure(
            description=f"{len(problems)} problem(s) delivering tenant {tenant_id}: "
                        + "; ".join(problems),
            metadata={**{r.table: r.error or "" for r in failed},
                      **{f"warehouse/{r.table}": r.warehouse_error or "" for r in wh_failed}})


def check_results(cfg: Config, context, io, tenant_id: str, wanted: set, delivered: dict,
                  failed: set):
    """The selected checks' results: from this run's deliveries where there are some, else
    evaluated on their own (a check-only run). A table that failed to load gets none: the
    step's failure says it, and the deadline sensor reports it once the deadline passes."""
    now = dt.datetime.now(dt.timezone.utc)
    for table, name in sorted(wanted):
        if table in failed:
            continue
        if name == checks.CHECK_NAME:
            r = delivered.get(table)
            if r is not None and r.check is not None:
                yield checks.result(tenant_id, table, r.check)
            else:
                yield checks.evaluate(cfg, tenant_id, table, io=io)
        elif name == deadlines.CHECK_NAME:
            yield deadlines.result(cfg, context.instance, tenant_id, table, now,
                                   delivered=table in delivered)
