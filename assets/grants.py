"""Dagster wrappers for dataset grants: an asset that applies permissions.csv (drift is reported,
never reverted from here), its job, and a sensor that runs the job when the CSV changes.

The asset's metadata is the audit trail: one record per change (dataset, action, role, member)
and one per drift grant found.
"""

import hashlib
import json

import dagster as dg

from hakobu.config import config_dir, load_config
from hakobu.grants.apply import apply_grants
from resources.dagster import BigQueryResource

PERMISSIONS_FILE = "permissions.csv"

_AUDIT_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("dataset", "string"),
    dg.TableColumn("action", "string", description="add, remove, revert (drift revoked), "
                                                   "adopt, or drift (found and kept)"),
    dg.TableColumn("role", "string"),
    dg.TableColumn("member", "string"),
])


@dg.asset(
    group_name="grants",
    description="BigQuery dataset grants made to match permissions.csv; drift is reported in the "
                "metadata and left in place (revert or adopt it with `hakobu grants apply`).",
    kinds={"bigquery"},
)
def dataset_grants(context: dg.AssetExecutionContext,
                   bigquery: BigQueryResource) -> dg.MaterializeResult:
    config = load_config(config_dir())
    csv_sha = _file_sha256(config.permissions_file)
    report = apply_grants(config, settings=bigquery.settings(), policy="report",
                          log=context.log.info)
    records = [dg.TableRecord({"dataset": c.dataset, "action": c.action, "role": c.role,
                               "member": c.member}) for c in report.changes]
    records += [dg.TableRecord({"dataset": g.dataset, "action": "drift", "role": g.role,
                                "member": g.member}) for g in report.drift]
    metadata = {
        "changes": dg.MetadataValue.table(records, schema=_AUDIT_SCHEMA),
        "changes_count": dg.MetadataValue.int(len(report.changes)),
        "drift_count": dg.MetadataValue.int(len(report.drift)),
        "datasets": dg.MetadataValue.json(
            {r.dataset: r.status for r in report.results}),
        "permissions_csv_sha256": csv_sha or "",
        "summary": dg.MetadataValue.md(f"```\n{report.render()}\n```"),
    }
    if report.failed:
        raise dg.Failure(
            description="; ".join(f"{r.dataset}: {r.error}" for r in report.failed),
            metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


grants_job = dg.define_asset_job(
    "grants_job", selection=dg.AssetSelection.assets(dataset_grants),
    description="Apply permissions.csv to every managed BigQuery dataset.")


def _file_sha256(path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


@dg.sensor(job=grants_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Runs grants_job when the content of permissions.csv changes.")
def permissions_csv_sensor(context: dg.SensorEvaluationContext):
    sha = _file_sha256(config_dir() / PERMISSIONS_FILE)
    if sha is None:
        return dg.SkipReason(f"{config_dir() / PERMISSIONS_FILE} not found")
    cursor = json.loads(context.cursor) if context.cursor else {"sha256": None, "seq": 0}
    if cursor["sha256"] == sha:
        return dg.SkipReason("permissions.csv unchanged")
    seq = cursor["seq"] + 1
    context.update_cursor(json.dumps({"sha256": sha, "seq": seq}))
    # seq keeps run keys unique when the file returns to an earlier content (A -> B -> A).
    return dg.RunRequest(run_key=f"permissions-csv-{seq}-{sha[:12]}",
                         tags={"hakobu/permissions_csv_sha256": sha})


GRANTS_ASSETS = [dataset_grants]
GRANTS_JOBS = [grants_job]
GRANTS_SENSORS = [permissions_csv_sensor]
