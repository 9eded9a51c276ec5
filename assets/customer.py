"""Customer tables: one multi-asset, partitioned by tenant, one output per source table.

One run per tenant (not per table) keeps Dagster's overhead per tenant small; a tenant's tables
load side by side inside that run under the cluster's read budget. A tenant materializes only
the tables its file lists; the others are skipped for its partition.
"""

import logging

import dagster as dg

from hakobu.config import Config
from hakobu.sync import TableResult, sync_tenant

GROUP = "customer"
POOL = "hakobu_mysql"


def customer_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["customer", table])


def table_names(config: Config) -> list[str]:
    return sorted({t.name for tenant in config.tenants.values() for t in tenant.tables})


def tenant_partitions(config: Config) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(config.tenants))


def build_customer_assets(config: Config, partitions: dg.StaticPartitionsDefinition):
    specs = [dg.AssetSpec(customer_key(name), group_name=GROUP, skippable=True,
                          kinds={"mysql", "bigquery"},
                          description=f"Table {name} in each tenant's customer dataset, "
                                      "merged on its primary key.",
                          partitions_def=partitions)
             for name in table_names(config)]

    @dg.multi_asset(name="customer_tables", specs=specs, can_subset=True, pool=POOL,
                    partitions_def=partitions)
    def customer_tables(context: dg.AssetExecutionContext):
        tenant_id = context.partition_key
        tenant = config.tenant(tenant_id)
        selected = {k.path[-1] for k in context.selected_asset_keys}
        tables = [t.name for t in tenant.tables if t.name in selected]
        if not tables:
            context.log.info(f"tenant {tenant_id} has none of the selected tables")
            return
        log = context.log

        def progress(r: TableResult) -> None:
            if r.ok:
                rate = r.rows_read / r.duration_s if r.duration_s else 0.0
                log.info(f"{tenant_id}/{r.table}: {r.rows_read} rows read in {r.duration_s:.1f}s "
                         f"({rate:,.0f} rows/s), {r.rows_merged} merged, watermark {r.watermark}")
            else:
                log.error(f"{tenant_id}/{r.table}: {r.error}")

        results = sync_tenant(config, tenant_id, tables=tables, run_id=context.run_id[:12],
                              on_result=progress)
        for r in results:
            if r.ok:
                yield dg.MaterializeResult(asset_key=customer_key(r.table),
                                           metadata={"tenant": tenant_id, **r.metadata()})
        failed = [r for r in results if not r.ok]
        if failed:
            raise dg.Failure(
                description=f"{len(failed)} of {len(results)} tables of tenant {tenant_id} failed: "
                            + "; ".join(f"{r.table}: {r.error}" for r in failed),
                metadata={r.table: r.error or "" for r in failed})

    logging.getLogger("hakobu").setLevel(logging.INFO)
    return customer_tables
