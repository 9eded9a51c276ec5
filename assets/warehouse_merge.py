"""The warehouse merge step in Dagster: the `warehouse_merge` asset, job and schedule.

Scheduled tenant runs stage their warehouse slices (hakobu.warehouse_merge); this asset applies
every pending slice of every warehouse table — one MERGE per table whatever the number of
tenants — then checks each merged tenant's slice against its source. It runs every
`merge_every_minutes` (tenants/warehouse.yaml), one run at a time (job and schedule `merge_warehouse`, tag `hakobu/warehouse_merge`,
limited to 1 in deploy/dagster.yaml; the merge lock in BigQuery holds even without it). A tick
with nothing pending costs one table listing.
"""

import dagster as dg

from hakobu.config import Config
from hakobu.warehouse_merge import TableMerge, merge_warehouse_tables
from resources.dagster import HakobuIOResource

MERGE_ASSET = dg.AssetKey(["warehouse_merge"])
MERGE_JOB = "merge_warehouse"
MERGE_GROUP = "warehouse_merge"
MERGE_TAG = "hakobu/warehouse_merge"


def _table(merges: list[TableMerge]) -> str:
    rows = ["| table | slices | tenants | DML | rows | checked | failed |",
            "|---|---|---|---|---|---|---|"]
    for m in merges:
        md = m.metadata()
        rows.append(f"| {m.table} | {md['slices']} | {md['tenants']} | {md['dml_statements']} | "
                    f"{md['rows_affected']} | {md['checked']} | "
                    f"{m.error or md['checks_failed']} |")
    return "\n".join(rows)


def build_warehouse_merge(config: Config):
    """(asset, job, schedule) of the merge step; None when the warehouse is not enabled."""
    w = config.warehouse
    if w is None or not w.enabled:
        return None

    @dg.asset(key=MERGE_ASSET, group_name=MERGE_GROUP,
              description="Every tenant's pending warehouse slices, one MERGE per warehouse "
                          "table, then each merged slice checked against its source.")
    def warehouse_merge(context: dg.AssetExecutionContext, io: HakobuIOResource):
        merges = merge_warehouse_tables(config, io.io, run_id=context.run_id[:12])
        failed = [m for m in merges if m.error or any(
            r.warehouse == "failed" for r in m.checks.values())]
        for m in failed:
            bad = {t: r.warehouse_error for t, r in m.checks.items() if r.warehouse == "failed"}
            context.log.error(f"warehouse {m.table}: {m.error or bad}")
        metadata = {"tables": dg.MetadataValue.md(_table(merges)),
                    "slices_merged": sum(m.slices for m in merges),
                    "dml_statements": sum(m.statements for m in merges),
                    "tenants_merged": len({t for m in merges for t in m.tenants}),
                    "tables_failed": len(failed)}
        if failed:
            raise dg.Failure(description="warehouse merge: " + "; ".join(
                f"{m.table}: {m.error or 'a slice still differs after its repair'}"
                for m in failed), metadata=metadata)
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(MERGE_JOB, selection=[MERGE_ASSET], tags={MERGE_TAG: "1"},
                              executor_def=dg.in_process_executor,
                              description="Apply every tenant's pending warehouse slices.")
    every = w.merge_every_minutes
    schedule = dg.ScheduleDefinition(
        name=MERGE_JOB, job=job, cron_schedule=f"*/{every} * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The warehouse merge step, every {every} minutes")
    return warehouse_merge, job, schedule
