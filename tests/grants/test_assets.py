"""Dagster: the grants asset applies the CSV and audits every change; the sensor follows the CSV."""

import dagster as dg
from google.cloud.bigquery import AccessEntry

from assets.grants import (GRANTS_ASSETS, GRANTS_JOBS, GRANTS_SENSORS, dataset_grants,
                           permissions_csv_sensor)
from resources.dagster import BigQueryResource


def materialize(grants_env, **kw):
    """The asset with the `bigquery` resource pointed at the test's emulator."""
    s = grants_env.settings
    bq = BigQueryResource(endpoint=s.endpoint, retry_deadline_s=s.retry_deadline_s)
    return dg.materialize([dataset_grants], resources={"bigquery": bq}, **kw)


def _audit(result):
    [mat] = result.asset_materializations_for_node("dataset_grants")
    return mat.metadata, [tuple(r.data[k] for k in ("dataset", "action", "role", "member"))
                          for r in mat.metadata["changes"].value.records]


def test_asset_applies_the_csv_and_records_changes(grants_env):
    env = grants_env
    a, b = env.customer_a, env.customer_b
    env.write_csv(f"{a},READER,user:a@example.com", f"{b},WRITER,group:g@example.com")
    env.console_grant(a, AccessEntry("OWNER", "userByEmail", "console@example.com"))

    result = materialize(env)
    assert result.success
    metadata, audit = _audit(result)
    assert audit == [(a, "add", "READER", "user:a@example.com"),
                     (b, "add", "WRITER", "group:g@example.com"),
                     (a, "drift", "OWNER", "user:console@example.com")]
    assert metadata["changes_count"].value == 2 and metadata["drift_count"].value == 1
    assert metadata["datasets"].value == {a: "applied", b: "applied", env.missing: "missing"}
    assert ("OWNER", "userByEmail", "console@example.com") in env.member_entries(a)  # reported only

    env.write_csv(f"{b},WRITER,group:g@example.com")
    _, audit = _audit(materialize(env))
    assert audit == [(a, "remove", "READER", "user:a@example.com"),
                     (a, "drift", "OWNER", "user:console@example.com")]


def test_asset_fails_on_a_bad_csv(grants_env):
    grants_env.write_csv(f"{grants_env.customer_a},READER,nobody")
    result = materialize(grants_env, raise_on_error=False)
    assert not result.success
    assert grants_env.member_entries(grants_env.customer_a) == set()


def test_sensor_fires_on_csv_change_only(grants_env):
    env = grants_env

    def evaluate(cursor):
        context = dg.build_sensor_context(cursor=cursor)
        return permissions_csv_sensor(context), context.cursor

    first, cursor = evaluate(None)
    assert isinstance(first, dg.RunRequest) and first.run_key.startswith("permissions-csv-1-")
    again, same_cursor = evaluate(cursor)
    assert isinstance(again, dg.SkipReason) and same_cursor == cursor

    env.write_csv(f"{env.customer_a},READER,user:a@example.com")
    changed, cursor2 = evaluate(cursor)
    assert isinstance(changed, dg.RunRequest) and cursor2 != cursor
    assert changed.run_key.startswith("permissions-csv-2-")
    assert isinstance(evaluate(cursor2)[0], dg.SkipReason)

    env.write_csv()  # back to the first content: a new run, with a new run key
    back, _ = evaluate(cursor2)
    assert isinstance(back, dg.RunRequest) and back.run_key != first.run_key

    env.csv.unlink()
    assert isinstance(evaluate(cursor2)[0], dg.SkipReason)


def test_definitions_load():
    defs = dg.Definitions(assets=GRANTS_ASSETS, jobs=GRANTS_JOBS, sensors=GRANTS_SENSORS,
                          resources={"bigquery": BigQueryResource()})
    assert defs.resolve_job_def("grants_job").asset_layer is not None
    assert defs.resolve_sensor_def("permissions_csv_sensor").job_name == "grants_job"
