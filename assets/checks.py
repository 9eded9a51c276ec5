"""The `in_sync_with_source` check: every customer table, per tenant, holds exactly the source's
rows.

The check is declared on the customer multi-asset (assets/customer.py, `check_specs`) and runs
in the delivery step itself: the sync compares each table it delivered with the source once
(the incremental run's delete reconcile, or a comparison after a first load) and the step
reports that comparison — no second scan of the source, no extra step per table. Selected
alone (a check-only run from the UI), the step calls `evaluate` below instead.

The comparison is per-bucket row counts and key checksums over every bucket
(hakobu.checksums.compare_table: one covering-index query on the source, one aggregate on
BigQuery), and the content of tonight's slice of buckets value by value (hakobu.verify: every
bucket once every `verify_every` nights). It passes when every bucket's keys are equal and the
compared content is equal or was repaired in this run; it fails (severity ERROR) otherwise, with
source rows, BigQuery rows, the buckets that differ and the rows missing, extra or changed as
metadata. Its metadata says what was compared (`compared`, `content_slice`) and when a full
content pass last completed. Evaluated alone it only reads: the sync repairs; the check verifies.

Rows committed in the source after the run's upper bound (lag_seconds) are not in BigQuery yet
and show as missing: `rows_missing_at_least` vs `rows_extra_at_least` tells a late row from an
undelivered delete.
"""

import dagster as dg

from assets.keys import customer_key
from hakobu.checksums import DEFAULT_BUCKET_ROWS, Comparison, compare_table
from hakobu.config import Config
from hakobu.errors import HakobuError
from hakobu.ports import IO
from hakobu.sinks import build_sinks
from hakobu.verify import compare_content, night_number, night_slice, table_offset
from hakobu.planning import plan_for

CHECK_NAME = "in_sync_with_source"
DESCRIPTION = ("the table in the tenant's dataset has the source's rows and values: per "
               "primary-key bucket, row count and key checksum are equal, and tonight's slice "
               "of buckets (all of them every verify_every nights) is equal value by value")


def evaluate(config: Config, tenant_id: str, table: str, *, io: IO,
             bucket_rows: int = DEFAULT_BUCKET_ROWS) -> dg.AssetCheckResult:
    """The check for one tenant × table, usable outside Dagster too (with any IO)."""
    tenant = config.tenant(tenant_id)
    key = dict(asset_key=customer_key(table), check_name=CHECK_NAME)
    if table not in {t.name for t in tenant.tables}:
        return dg.AssetCheckResult(**key, passed=True,
                                   description=f"{tenant_id} does not deliver {table}",
                                   metadata={"tenant": tenant_id, "delivered": False})
    try:
        cluster = config.cluster_of(tenant)
        source, dest = io.source(cluster), io.customer(tenant)
        # what the customer's table holds: the plan after the export policy (withheld
        # credentials are not in BigQuery, so they are not compared)
        plan, _, _, _ = build_sinks(plan_for(source, tenant, tenant.table(table)),
                                    tenant.table(table), dest, None)
        gate = io.gate(cluster)
        cmp = compare_table(source, dest, plan, bucket_rows=bucket_rows, gate=gate)
        if cmp.dest_exists:
            cmp.content = tonight(source, dest, plan, cmp, gate)
    except HakobuError as exc:
        return dg.AssetCheckResult(**key, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"could not compare: {exc}",
                                   metadata={"tenant": tenant_id, "error": str(exc)})
    return result(tenant_id, table, cmp)


def tonight(source, dest, plan, cmp: Comparison, gate):
    """Tonight's content slice, compared read-only (no repair, no rotation state written)."""
    every = plan.verify_every
    buckets, desc = night_slice(cmp.bucketing, cmp.bucket_ids, every, night_number(),
                                table_offset(plan.tenant, plan.bq_table, every))
    return compare_content(source, dest, plan, bucketing=cmp.bucketing, buckets=buckets,
                           slice_desc=desc, gate=gate)


def result(tenant_id: str, table: str, cmp: Comparison) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=customer_key(table), check_name=CHECK_NAME,
                               passed=cmp.in_sync, severity=dg.AssetCheckSeverity.ERROR,
                               description=cmp.summary(),
                               metadata={"tenant": tenant_id, **cmp.metadata()})
