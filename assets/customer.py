"""Customer tables (and their warehouse twins): one multi-asset, partitioned by tenant.

One run per tenant (not per table) keeps Dagster's overhead per tenant small; a tenant's tables
load side by side inside that run under the cluster's read budget. A tenant materializes only
the tables its file lists; the others are skipped for its partition.

When tenants/warehouse.yaml enables the internal warehouse, the same step also materializes
`warehouse/<table>` (partition = the tenant's slice): both are fed from one read of the source
(hakobu.sinks), which is why they are outputs of one multi-asset and not two assets.

A run tagged `hakobu/mode: full-reload` (the `backfill` job sets it) reloads the selected
tables in full through shadow tables instead (hakobu.backfill), logging progress lines.

Each customer table carries two checks, declared here (`check_specs`) so the delivery step
reports them itself: `in_sync_with_source` from the comparison the sync made anyway
(assets/checks.py) and `delivered_by_deadline` (assets/deadlines.py). Separate check steps
would cost every tenant's run two more steps per table and a second scan of the source.
"""

import datetime as dt
import logging
import time
import warnings

import dagster as dg

from hakobu.backfill import FULL_RELOAD, MODE_TAG, backfill_tenant
from hakobu.progress import Progress, notify
from hakobu.config import Config
from hakobu.errors import explain
from hakobu.naming import table_name
from hakobu.runs import record_worker
from hakobu.results import TableResult
from hakobu.sync import sync_tenant
from resources.io import LiveIO
from hakobu.warehouse import enabled as warehouse_enabled

GROUP = "customer"
WAREHOUSE_GROUP = "warehouse"
POOL = "hakobu_mysql"
PROGRESS_EVERY_S = 10.0


def customer_key(table: str) -> dg.AssetKey:
    """The asset of a table (its MySQL name, or its BigQuery name: the mapping is idempotent):
    `customer/<BigQuery table name>`, a valid Dagster name whatever MySQL calls the table
    (hakobu.naming: `ord$2024` is `customer/ord_2024_a76493`)."""
    return dg.AssetKey(["customer", table_name(table)])


def warehouse_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", table_name(table)])


def table_names(config: Config) -> list[str]:
    """The asset-key parts (BigQuery table names) of every tenant's tables, once each."""
    return sorted({table_name(t.name) for tenant in config.tenants.values()
                   for t in tenant.tables})


def tenant_partitions(config: Config) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(config.tenants))


def _origin(config: Config, part: str) -> str:
    """` (MySQL table ord$2024)` when the asset's BigQuery name is not the MySQL name."""
    names = sorted({t.name for tenant in config.tenants.values() for t in tenant.tables
                    if table_name(t.name) == part and t.name != part})
    return f" (MySQL table {', '.join(names)})" if names else ""


def build_customer_assets(config: Config, partitions: dg.StaticPartitionsDefinition):
    specs = [dg.AssetSpec(customer_key(name), group_name=GROUP, skippable=True,
                          kinds={"mysql", "bigquery"},
                          description=f"Table {name}{_origin(config, name)} in each tenant's "
                                      "customer dataset, merged on its primary key.",
                          partitions_def=partitions)
             for name in table_names(config)]
    if warehouse_enabled(config):
        w = config.warehouse
        specs += [dg.AssetSpec(warehouse_key(name), group_name=WAREHOUSE_GROUP, skippable=True,
                               kinds={"mysql", "bigquery"},
                               description=f"Table {name}{_origin(config, name)} in the "
                                           "internal warehouse "
                                           f"{w.project}.{w.dataset}: every tenant's rows with "
                                           "tenant_id, column policies applied; partition = "
                                           f"the tenant's slice, fed by the same read as "
                                           f"customer/{name}.",
                               partitions_def=partitions)
                  for name in table_names(config)]

    from assets import checks, deadlines

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)   # partitioned checks: preview
        check_specs = [dg.AssetCheckSpec(name, asset=customer_key(table), description=text,
                                         partitions_def=partitions)
                       for table in table_names(config)
                       for name, text in ((checks.CHECK_NAME, checks.DESCRIPTION),
                                          (deadlines.CHECK_NAME, deadlines.DESCRIPTION))]

    @dg.multi_asset(name="customer_tables", specs=specs, check_specs=check_specs,
                    can_subset=True, pool=POOL, partitions_def=partitions)
    def customer_tables(context: dg.AssetExecutionContext):
        tenant_id = context.partition_key
        tenant = config.tenant(tenant_id)
        record_worker(context.instance, context.run)   # so a dead worker's run can be failed
        # asset-key parts are BigQuery names: back to the tenant's MySQL names
        mysql = {table_name(t.name): t.name for t in tenant.tables}
        selected = context.selected_asset_keys
        cust = {mysql.get(k.path[-1], k.path[-1]) for k in selected if k.path[0] == "customer"}
        wh = {mysql.get(k.path[-1], k.path[-1]) for k in selected if k.path[0] == "warehouse"}
        wanted = {(mysql.get(k.asset_key.path[-1], k.asset_key.path[-1]), k.name)
                  for k in context.selected_asset_check_keys}
        tables = [t.name for t in tenant.tables if t.name in cust | wh]
        if not tables:
            context.log.info(f"tenant {tenant_id} delivers none of the selected tables")
            yield from check_results(context, tenant_id, wanted, {}, set())
            return
        log = context.log
        full_reload = context.run.tags.get(MODE_TAG) == FULL_RELOAD

        def result(r: TableResult) -> None:
            if r.ok:
                rate = r.rows_read / r.duration_s if r.duration_s else 0.0
                log.info(f"{tenant_id}/{r.table}: {r.rows_read} rows read in {r.duration_s:.1f}s "
                         f"({rate:,.0f} rows/s), {r.rows_merged} merged, watermark {r.watermark}"
                         + (f"; warehouse {r.warehouse}" if r.warehouse != "-" else ""))
                if r.warehouse_error:
                    log.error(f"{tenant_id}/{r.table} warehouse: {r.warehouse_error}")
            else:
                log.error(f"{tenant_id}/{r.table}: {r.error}")

        kw = dict(tables=tables, run_id=context.run_id[:12], on_result=result,
                  customer=bool(cust), warehouse=None if wh else False)
        verify = any(name == checks.CHECK_NAME and t in cust for t, name in wanted)
        try:
            if full_reload:
                log.info(f"full reload (backfill) of {tenant_id}: {', '.join(tables)}")
                last: dict[str, float] = {}

                def progress(p: Progress) -> None:
                    notify(p)
                    now = time.monotonic()
                    if p.finished or now - last.get(p.table, 0.0) >= PROGRESS_EVERY_S:
                        last[p.table] = now
                        log.info(p.line())

                results = backfill_tenant(config, tenant_id, io=LiveIO.from_env(),
                                          on_progress=progress, **kw)
            else:
                results = sync_tenant(config, tenant_id, io=LiveIO.from_env(), verify=verify, **kw)
        except Exception as exc:
            # the tenant as a whole (its source unreachable, credentials, its dataset not
            # writable): this tenant's run fails with the reason, in one line; other tenants'
            # runs are their own
            why = explain(exc, tenant=tenant_id)
            raise dg.Failure(description=f"tenant {tenant_id} was not delivered: {why}",
                             metadata={"tenant": tenant_id, "error": str(why)}) from exc
        for r in results:
            if r.ok and r.table in cust:
                yield dg.MaterializeResult(asset_key=customer_key(r.table),
                                           metadata={"tenant": tenant_id, **r.metadata()})
            if r.ok and r.table in wh and r.warehouse == "ok":
                yield dg.MaterializeResult(asset_key=warehouse_key(r.table),
                                           metadata={"tenant": tenant_id,
                                                     **r.warehouse_metadata()})
        delivered = {r.table: r for r in results if r.ok and r.table in cust}
        yield from check_results(context, tenant_id, wanted, delivered,
                                 {r.table for r in results if not r.ok})
        failed = [r for r in results if not r.ok]
        wh_failed = [r for r in results if r.ok and r.table in wh and r.warehouse != "ok"]
        if failed or wh_failed:
            problems = [f"{r.table}: {r.error}" for r in failed] + \
                       [f"warehouse/{r.table}: {r.warehouse_error}" for r in wh_failed]
            raise dg.Failure(
                description=f"{len(problems)} problem(s) delivering tenant {tenant_id}: "
                            + "; ".join(problems),
                metadata={**{r.table: r.error or "" for r in failed},
                          **{f"warehouse/{r.table}": r.warehouse_error or "" for r in wh_failed}})

    def check_results(context, tenant_id: str, wanted: set, delivered: dict, failed: set):
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
                    yield checks.evaluate(config, tenant_id, table)
            elif name == deadlines.CHECK_NAME:
                yield deadlines.result(config, context.instance, tenant_id, table, now,
                                       delivered=table in delivered)

    logging.getLogger("hakobu").setLevel(logging.INFO)
    return customer_tables
