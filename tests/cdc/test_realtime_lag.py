"""The `realtime_lag` check and sensor (issue #15, part 6) through Dagster's own APIs, against
the binlog server and the emulator: lag and unmerged changes read from BigQuery, a stream
that stops fails the check (ERROR), every minute's report is stored; the nightly job keeps
realtime tables and the check out."""

import datetime as dt
import warnings

import dagster as dg

from assets.realtime import CHECK_NAME, SENSOR_NAME, build_lag_sensor
from assets.keys import customer_key
from pipelines.build import build_definitions
from resources.dagster import BigQueryResource, HakobuIOResource, MySQLResource
from tests.cdc.rt_helpers import catch_up, config_of, stream_of

ITEMS = "CREATE TABLE `{s}`.{t} (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
TABLES = "- name: items\n  delivery: realtime\n  max_lag_minutes: 3\n- name: other\n"



def _tick(defs, instance, resources, sensor=None):
    """One tick as the daemon runs it: the Definitions' resources set up for the sensor."""
    sensor = sensor or defs.resolve_sensor_def(SENSOR_NAME)
    with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                 resources=resources) as ctx:
        events = sensor.evaluate_tick(ctx).asset_events
    for ev in events:                          # as the daemon stores a tick's reports
        instance.report_runless_asset_event(ev)
    return {ev.asset_key.path[-1]: ev for ev in events}


def test_realtime_lag_reads_bigquery_and_fails_when_the_stream_stops(
        binlog_server, cdc_sql, schema, datasets, bq_env, bq_client, tmp_path):
    s, ds = schema, datasets()
    for t in ("items", "other"):
        cdc_sql(ITEMS.format(s=s, t=t))
    cdc_sql.many(f"INSERT INTO `{s}`.items VALUES (%s, %s, %s)",
                 [(i, f"v{i}", i) for i in range(1, 21)])
    config = config_of(tmp_path / "cfg", binlog_server, {"r": (s, ds, TABLES, "")})
    bq = BigQueryResource(endpoint=bq_env.endpoint, retry_deadline_s=10.0)
    resources = {"bigquery": bq, "mysql": MySQLResource(),
                 "io": HakobuIOResource(bigquery=bq, mysql=MySQLResource(),
                                        work_dir=str(tmp_path / "w"))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_definitions(config, resources=resources)
    dg.Definitions.validate_loadable(defs)
    # the nightly job: neither the realtime table's delivery nor its lag check
    for job in ("nightly", "backfill"):
        checks = defs.resolve_job_def(job).asset_layer.asset_graph.asset_check_keys
        assert dg.AssetCheckKey(customer_key("items"), CHECK_NAME) not in checks
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.minimum_interval_seconds == 60
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.DagsterInstance.ephemeral() as instance:
        first = _tick(defs, instance, resources)["items"]               # never streamed
        assert not first.passed and first.severity == dg.AssetCheckSeverity.ERROR
        assert "never snapshotted" in first.description and set(_tick(defs, instance, resources)) == \
            {"items"}                                       # only realtime tables; twice stored
        cs, io = stream_of(config, bq_env.endpoint, tmp_path / "w", merge_every_s=3600)
        try:
            catch_up(cs)
            cdc_sql(f"UPDATE `{s}`.items SET v = 'x' WHERE id IN (1, 2)")
            cdc_sql(f"DELETE FROM `{s}`.items WHERE id = 3")
            cs.run(blocking=True, for_seconds=3)             # logged, not merged
        finally:
            io.close()
        ok = _tick(defs, instance, resources)["items"]
        assert ok.passed, ok.description
        assert ok.metadata["unmerged_changes"] == dg.MetadataValue.int(3)
        lag = ok.metadata["lag_seconds"].value
        assert isinstance(lag, float) and 0 <= lag < 60
        assert ok.metadata["tenant"] == dg.MetadataValue.text("r")
        # four minutes without a checkpoint (the stream is down): failed, by how much
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=4)
        late = _tick(defs, instance, resources,
                     build_lag_sensor(config, clock=lambda: later))["items"]
        assert not late.passed and late.severity == dg.AssetCheckSeverity.ERROR
        assert late.metadata["lag_seconds"].value >= 240
        assert "allowed 3m" in late.description and late.description.startswith("r: ")
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(customer_key("items"), CHECK_NAME), limit=10)
        assert len(history) == 4 and history[0].event.asset_check_evaluation.passed is False
