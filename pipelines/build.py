"""Builds the Dagster Definitions (assets, jobs, schedules, sensors, resources) from a
validated Config.

Resources (resources.dagster): `io` (the run's MySQL sources, read governors and BigQuery
destinations), `bigquery`, `mysql`. By default they are configured from the environment
(resources_from_env: settings set there are EnvVars, resolved where the run executes); a test
or another deployment passes its own.
"""

import dataclasses

import dagster as dg

from assets.customer import FULL_RELOAD, INCREMENTAL, build_customer_assets, mode_run_config
from assets.deadlines import build_deadline_sensor
from assets.grants import GRANTS_ASSETS, GRANTS_JOBS, GRANTS_SENSORS
from assets.keys import GROUP, WAREHOUSE_GROUP, customer_key, tenant_partitions, warehouse_key
from assets.night import NIGHT_PLAN, build_night_check, build_night_sensor
from assets.realtime import build_lag_check, build_lag_sensor
from assets.tenant_files import build_tenant_files_sensor
from assets.warehouse_merge import build_warehouse_merge
from hakobu.config import Config
from hakobu.warehouse import enabled as warehouse_enabled
from resources.dagster import resources_from_env

NIGHTLY = "nightly"
BACKFILL = "backfill"
MODES = {NIGHTLY: INCREMENTAL, BACKFILL: FULL_RELOAD}


def job_run_config(job_name: str, merge_warehouse: bool = False) -> dict:
    """The run config of a delivery job's run (its mode), for a run launched by hand."""
    return mode_run_config(MODES[job_name], merge_warehouse) if job_name in MODES else {}


def selection_for(config: Config, tables: list[str]) -> list[dg.AssetKey]:
    """The assets a delivery of these (MySQL-named) tables materializes."""
    keys = [customer_key(n) for n in tables]
    if warehouse_enabled(config):
        keys += [warehouse_key(n) for n in tables]
    return keys


def build_definitions(config: Config, resources: dict | None = None) -> dg.Definitions:
    partitions = tenant_partitions(config)
    customer = build_customer_assets(config, partitions)
    lag_check, lag_sensor = build_lag_check(config), build_lag_sensor(config)
    nightly = delivery_job(config, partitions, NIGHTLY, INCREMENTAL,
                           "Deliver one tenant's changed rows into its customer dataset and, "
                           "read once, into the internal warehouse when enabled (partition = "
                           "tenant).", lag_check)
    backfill = delivery_job(config, partitions, BACKFILL, FULL_RELOAD,
                            "Full reload of one tenant (partition = tenant) through shadow "
                            "tables, reconciled and swapped in atomically; throttled by the "
                            "same read budget (run config `mode: full_reload`). Launch a "
                            "backfill of this job for the tenant's partition, or run `hakobu "
                            "backfill TENANT [--tables ...]`.", lag_check)
    schedules = [tenant_schedule(config, t, nightly) for t in sorted(config.tenants)]
    assets, jobs = [customer, NIGHT_PLAN, *GRANTS_ASSETS], [nightly, backfill, *GRANTS_JOBS]
    merge = build_warehouse_merge(config)
    if merge is not None:
        assets.append(merge[0])
        jobs.append(merge[1])
        schedules.append(merge[2])
    checks = [build_night_check(config)] + ([lag_check] if lag_check else [])
    return dg.Definitions(
        assets=assets, asset_checks=checks, jobs=jobs, schedules=schedules,
        sensors=[build_deadline_sensor(config), build_tenant_files_sensor(config),
                 build_night_sensor(config), *GRANTS_SENSORS,
                 *([lag_sensor] if lag_sensor else [])],
        resources=resources if resources is not None else resources_from_env())


def delivery_job(config: Config, partitions, name: str, mode: str, description: str,
                 leave_out: dg.AssetChecksDefinition | None = None):
    """A job over the customer (and warehouse) tables with their checks, whose run config
    selects the delivery mode (assets.customer.DeliveryConfig). Runs of a partition launched
    from the UI or a Dagster backfill get that config and the same tags as the schedule's
    (hakobu/tenant, hakobu/cluster), so the queue's per-tenant and per-cluster limits hold for
    them too: a backfill never overlaps the same tenant's nightly run. `leave_out`: the
    realtime_lag check, which its sensor evaluates (not a delivery's)."""
    partitioned = dg.PartitionedConfig(
        partitions_def=partitions,
        run_config_for_partition_key_fn=lambda key: mode_run_config(mode),
        tags_for_partition_key_fn=lambda key: run_tags(config, key))
    selection = dg.AssetSelection.groups(GROUP, WAREHOUSE_GROUP)
    if leave_out is not None:
        selection = selection - dg.AssetSelection.checks(leave_out)
    return dg.define_asset_job(
        name, selection=selection,
        partitions_def=partitions, config=partitioned,
        executor_def=dg.in_process_executor,   # one step per run: no extra worker process
        description=description)


def definition_problems(config: Config) -> list[str]:
    """What would stop the code location from loading, found by building it (`hakobu validate`
    runs this after its own checks, which name file and line for everything known to go wrong:
    this is the net under them). A failure is traced to the tenant file whose tenant alone
    cannot be built, when there is one."""
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

