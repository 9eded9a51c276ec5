"""Builds the Dagster Definitions (assets, jobs, schedules, sensors) from a validated Config."""

import dagster as dg

from assets.customer import build_customer_assets, tenant_partitions
from hakobu.config import Config

NIGHTLY = "nightly"


def build_definitions(config: Config) -> dg.Definitions:
    partitions = tenant_partitions(config)
    customer = build_customer_assets(config, partitions)
    nightly = dg.define_asset_job(
        NIGHTLY, selection=dg.AssetSelection.groups("customer"), partitions_def=partitions,
        description="Deliver one tenant's changed rows into its customer dataset "
                    "(partition = tenant).")
    schedules = [tenant_schedule(config, t, nightly) for t in sorted(config.tenants)]
    assets: list = [customer]
    jobs: list = [nightly]
    sensors: list = []
    try:
        from assets.grants import GRANTS_ASSETS, GRANTS_JOBS, GRANTS_SENSORS
    except ImportError:
        pass
    else:
        assets += GRANTS_ASSETS
        jobs += GRANTS_JOBS
        sensors += GRANTS_SENSORS
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors)


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

