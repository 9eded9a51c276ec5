"""Asset checks: every customer table, per tenant, holds exactly the source's rows.

One check per `customer/<table>` asset, partitioned by tenant like the asset (partitioned asset
checks are a preview feature of Dagster 1.13: `partitions_def` on `@asset_check`). A separate
check per table, not one multi-check: a multi-check step depends on every table of the
multi-asset and is skipped whenever one of them is skipped, which happens for every tenant that
does not list every table.

The check compares per-bucket row counts and key checksums (hakobu.checksums.compare_table): one
covering-index query on the source, one aggregate on BigQuery. It passes when every bucket is
equal; it fails (severity ERROR) with source rows, BigQuery rows and the buckets that differ as
metadata. It only reads: the incremental sync repairs; the check verifies.

Rows committed in the source after the run's upper bound (lag_seconds) are not in BigQuery yet
and show as missing: `rows_missing_at_least` vs `rows_extra_at_least` tells a late row from an
undelivered delete.
"""

import warnings

import dagster as dg

from assets.customer import POOL, customer_key, table_names, tenant_partitions
from hakobu.checksums import DEFAULT_BUCKET_ROWS, compare_table
from hakobu.config import Config
from hakobu.errors import HakobuError
from resources.bigquery_client import BigQuerySettings

CHECK_NAME = "in_sync_with_source"


def evaluate(config: Config, tenant_id: str, table: str, *,
             settings: BigQuerySettings | None = None,
             bucket_rows: int = DEFAULT_BUCKET_ROWS) -> dg.AssetCheckResult:
    """The check for one tenant × table, usable outside Dagster too."""
    from hakobu.sync import destination_for, source_for
    from resources.pressure import governor_for

    tenant = config.tenant(tenant_id)
    if table not in {t.name for t in tenant.tables}:
        return dg.AssetCheckResult(passed=True, description=f"{tenant_id} does not deliver {table}",
                                   metadata={"tenant": tenant_id, "delivered": False})
    try:
        source = source_for(config, tenant)
        plan = source.plan_table(tenant, tenant.table(table))
        dest = destination_for(tenant, settings or BigQuerySettings.from_env())
        cmp = compare_table(source, dest, plan, bucket_rows=bucket_rows,
                            gate=governor_for(config.cluster_of(tenant)))
    except HakobuError as exc:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"could not compare: {exc}",
                                   metadata={"tenant": tenant_id, "error": str(exc)})
    return dg.AssetCheckResult(passed=cmp.equal, severity=dg.AssetCheckSeverity.ERROR,
                               description=cmp.summary(),
                               metadata={"tenant": tenant_id, **cmp.metadata()})


def _check_for(config: Config, table: str, partitions: dg.PartitionsDefinition,
               bucket_rows: int) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=customer_key(table), name=CHECK_NAME, partitions_def=partitions,
                    pool=POOL,
                    description=f"{table} in the tenant's dataset has the source's rows: per "
                                "primary-key bucket, row count and key checksum are equal.")
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return evaluate(config, context.partition_key, table, bucket_rows=bucket_rows)

    return _check


def build_checks(config: Config, partitions: dg.PartitionsDefinition | None = None, *,
                 bucket_rows: int = DEFAULT_BUCKET_ROWS) -> list[dg.AssetChecksDefinition]:
    """One partitioned check per customer table; pass the customer assets' partitions."""
    partitions = partitions or tenant_partitions(config)
    with warnings.catch_warnings():
        # partitioned asset checks are marked preview in Dagster 1.13; we rely on them knowingly
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [_check_for(config, name, partitions, bucket_rows) for name in table_names(config)]
