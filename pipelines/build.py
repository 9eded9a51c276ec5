"""Builds the Dagster Definitions (assets, jobs, schedules, sensors) from a validated Config."""

import dagster as dg

from assets.customer import GROUP, WAREHOUSE_GROUP, build_customer_assets, tenant_partitions
from assets.deadlines import build_deadline_sensor
from assets.tenant_files import build_tenant_files_sensor
from hakobu.backfill import FULL_RELOAD, MODE_TAG
from hakobu.config import Config

NIGHTLY = "nightly"
BACKFILL = "backfill"


def build_definitions(config: Config) -> dg.Definitions:
    partitions = tenant_partitions(config)
    customer = build_customer_assets(config, partitions)
    delivered = dg.AssetSelection.groups(GROUP, WAREHOUSE_GROUP)   # with the tables' checks
    # Runs of a partition launched from the UI or a Dagster backfill get the same tags as the
    # schedule's (hakobu/tenant, hakobu/cluster), so the queue's per-tenant and per-cluster
    # limits hold for them too: a backfill never overlaps the same tenant's nightly run.
    tagged = dg.PartitionedConfig(partitions_def=partitions,
                                  run_config_for_partition_key_fn=lambda key: {},
                                  tags_for_partition_key_fn=lambda key: run_tags(config, key))
    nightly = dg.define_asset_job(
        NIGHTLY, selection=delivered, partitions_def=partitions, config=tagged,
        executor_def=dg.in_process_executor,   # one step per run: no extra worker process
        description="Deliver one tenant's changed rows into its customer dataset and, read "
                    "once, into the internal warehouse when enabled (partition = tenant).")
    backfill = dg.define_asset_job(
        BACKFILL, selection=delivered, partitions_def=partitions, config=tagged,
        executor_def=dg.in_process_executor,
        tags={MODE_TAG: FULL_RELOAD},
        description="Full reload of one tenant (partition = tenant) through shadow tables, "
                    "reconciled and swapped in atomically; throttled by the same read budget. "
                    "Launch a backfill of this job for the tenant's partition, or run "
                    "`hakobu backfill TENANT [--tables ...]`.")
    schedules = [tenant_schedule(config, t, nightly) for t in sorted(config.tenants)]
    assets: list = [customer]
    jobs: list = [nightly, backfill]
    sensors: list = [build_deadline_sensor(config), build_tenant_files_sensor(config)]
    try:
        from assets.grants import GRANTS_ASSETS, GRANTS_JOBS, GRANTS_SENSORS
    except ImportError:
        pass
    else:
        assets += GRANTS_ASSETS
        jobs += GRANTS_JOBS
        sensors += GRANTS_SENSORS
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors)


def definition_problems(config: Config) -> list[str]:
    """What would stop the code location from loading, found by building it (`hakobu validate`
    runs this after its own checks, which name file and line for everything known to go wrong:
    this is the net under them). A failure is traced to the tenant file whose tenant alone
    cannot be built, when there is one."""
    import dataclasses

    try:
        dg.Definitions.validate_loadable(build_definitions(config))
        return []
    except Exception as exc:                      # noqa: BLE001 — reported, with the file
        whole = f"{type(exc).__name__}: {exc}"
    out = []
    for tid, tenant in sorted(config.tenants.items()):
        alone = dataclasses.replace(config, tenants={tid: tenant})
        try:
            dg.Definitions.validate_loadable(build_definitions(alone))
        except Exception as exc:                  # noqa: BLE001
            out.append(f"{tenant.file}:1: the Dagster code location would not load: "
                       f"{type(exc).__name__}: {exc}")
    return out or [f"the Dagster code location would not load: {whole}"]


def run_tags(config: Config, tenant_id: str) -> dict[str, str]:
    """Tags that the queued run coordinator limits on (one cluster never gets more than its
    share) and that keep two runs of one tenant apart."""
    tenant = config.tenant(tenant_id)
    return {"hakobu/tenant": tenant_id, "hakobu/cluster": tenant.cluster}


def tenant_schedule(config: Config, tenant_id: str, job) -> dg.ScheduleDefinition:
    tenant = config.tenant(tenant_id)

    @dg.schedule(name=f"nightly_{tenant_id}", cron_schedule=tenant.schedule.cron,
                 execution_timezone=tenant.schedule.timezone, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Nightly delivery for {tenant_id}, due by "
                             f"{tenant.deliver_by:%H:%M} {tenant.schedule.timezone}")
    def _schedule(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(partition_key=tenant_id, tags=run_tags(config, tenant_id))

    return _schedule

