"""Tonight's forecast from a real Dagster instance (SQLite, in a temp DAGSTER_HOME, with a run
queue configured like deploy/dagster.yaml): run records and materializations made here, then
hakobu.tonight, `hakobu status` and the night_plan sensor read them — no source, no BigQuery."""

import datetime as dt
import json
import warnings
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.utils import make_new_run_id

from hakobu.config import load_config
from hakobu.tonight import estimate, forecast, queue_limits, render

UTC = dt.UTC
S = dg.DagsterRunStatus


def dagster_yaml(per_cluster: int, west: int | None = None, pool: int = 8) -> str:
    only = (f"      - key: hakobu/cluster\n        value: west\n        limit: {west}\n"
            if west is not None else "")
    return ("telemetry:\n  enabled: false\nrun_coordinator:\n"
            "  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
            "concurrency:\n  runs:\n    max_concurrent_runs: 16\n    tag_concurrency_limits:\n"
            "      - key: hakobu/cluster\n        value:\n          applyLimitPerUniqueValue: "
            f"true\n        limit: {per_cluster}\n{only}      - key: hakobu/tenant\n"
            "        value:\n          applyLimitPerUniqueValue: true\n        limit: 1\n"
            f"  pools:\n    granularity: run\n    default_limit: {pool}\n")


def hhmm(t: dt.datetime) -> str:
    return f"{t:%H:%M}"


def write_config(root, tenants: dict[str, tuple[dt.datetime, dt.datetime]],
                 default_run_seconds: int = 1800, tables=("orders",), tz: str = "UTC"):
    """tenants: id → (cron tick, deliver_by), all on cluster east, scheduled in `tz`."""
    (root / "tenants").mkdir(parents=True)
    (root / "tenants" / "clusters.yaml").write_text(
        "clusters:\n  east:\n    host: 127.0.0.1\n    user: root\n"
        f"    default_run_seconds: {default_run_seconds}\n"
        "  west:\n    host: 127.0.0.1\n    user: root\n")
    for tid, (tick, due) in tenants.items():
        tick, due = tick.astimezone(ZoneInfo(tz)), due.astimezone(ZoneInfo(tz))
        (root / "tenants" / f"{tid}.yaml").write_text(
            f"tenant: {tid}\ncluster: east\nsource: {{schema: plan_{tid}}}\n"
            f"destination: {{project: hakobu-test, dataset: plan_{tid}}}\n"
            f"schedule: {{cron: '{tick.minute} {tick.hour} * * *', timezone: {tz}}}\n"
            f"deliver_by: '{hhmm(due)}'\n"
            "tables:\n" + "".join(f"  - name: {t}\n" for t in tables))
    return load_config(root, isolate=True)


def add_run(instance, tenant: str, status=S.NOT_STARTED, start=None, end=None, job="nightly",
            cluster="east"):
    run = instance.add_run(dg.DagsterRun(
        job_name=job, run_id=make_new_run_id(), status=S.NOT_STARTED,
        tags={"dagster/partition": tenant, "hakobu/tenant": tenant, "hakobu/cluster": cluster}))
    events = [(DagsterEventType.PIPELINE_START, start)] if start else []
    if end:
        kind = DagsterEventType.PIPELINE_SUCCESS if status == S.SUCCESS else \
            DagsterEventType.PIPELINE_FAILURE
        events.append((kind, end))
    for kind, when in events:
        instance.run_storage.handle_run_event(
            run.run_id, DagsterEvent(kind.value, job_name=job), update_timestamp=when)
    return run.run_id


@pytest.fixture
def now():
    return dt.datetime.now(UTC).replace(second=0, microsecond=0)


def home_with(tmp_path, text: str):
    home = tmp_path / "dh"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(text)
    return dg.DagsterInstance.from_config(str(home))


def test_limits_come_from_the_instance_run_queue(tmp_path):
    config = write_config(tmp_path / "cfg", {"a": (dt.datetime(2026, 1, 1, 2, 0),
                                                    dt.datetime(2026, 1, 1, 6, 0))})
    with home_with(tmp_path, dagster_yaml(per_cluster=2, west=1, pool=6)) as instance:
        limits = queue_limits(instance, config, "hakobu_mysql")
    assert limits.per_cluster == {"east": 2, "west": 1} and limits.total == 6
    assert "2 per cluster" in limits.basis and "6 in pool hakobu_mysql" in limits.basis
    with dg.DagsterInstance.ephemeral() as instance:         # no run queue: nothing limits
        limits = queue_limits(instance, config, "hakobu_mysql")
    assert limits.per_cluster == {"east": None, "west": None} and limits.total is None


def test_expected_duration_from_history_previous_delivery_or_default(tmp_path, now):
    later = now + dt.timedelta(hours=2)                       # no window open: history only
    config = write_config(tmp_path / "cfg", {t: (later, later + dt.timedelta(hours=1))
                                             for t in ("hist", "prev", "new")},
                          default_run_seconds=900, tables=("orders", "plans"))
    with dg.DagsterInstance.ephemeral() as instance:
        for minutes in (1, 2, 3, 4, 50):
            start = now - dt.timedelta(days=1)
            add_run(instance, "hist", S.SUCCESS, start, start + dt.timedelta(minutes=minutes))
        for table, seconds in (("orders", 120.0), ("plans", 60.0)):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=dg.AssetKey(["customer", table]), partition="prev",
                metadata={"duration_s": seconds}))
        got = {t: estimate(instance, config, config.tenant(t)) for t in config.tenants}
    assert (got["hist"].seconds, got["hist"].basis) == (180, "history of 5 runs")
    assert got["prev"].seconds == 120       # side by side, 2 at once: the longest table
    assert got["prev"].basis.startswith("no run history: previous delivery (2 tables, 180 s")
    assert (got["new"].seconds, got["new"].basis) == \
        (900, "no history: default 900 s (clusters.yaml default_run_seconds)")


def night(tmp_path, now, per_cluster: int, tz: str = "UTC"):
    """a runs since 10 min (expected 30 min), b's tick passed 30 min ago with no run yet
    (queued), due in 45 min; c was delivered tonight already."""
    tick = now - dt.timedelta(minutes=30)
    config = write_config(tmp_path / "cfg", {
        "a": (tick, now + dt.timedelta(hours=1)), "b": (tick, now + dt.timedelta(minutes=45)),
        "c": (tick, now + dt.timedelta(minutes=5))}, tz=tz)
    instance = home_with(tmp_path, dagster_yaml(per_cluster))
    add_run(instance, "a", S.STARTED, start=now - dt.timedelta(minutes=10))
    add_run(instance, "c", S.SUCCESS, start=tick, end=tick + dt.timedelta(minutes=20))
    return config, instance


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo"])   # run storage compares in UTC
def test_one_slot_pushes_b_past_its_deadline_two_slots_do_not(tmp_path, now, tz):
    config, instance = night(tmp_path, now, per_cluster=1, tz=tz)
    with instance:
        [east], limits = forecast(config, instance, now, pool="hakobu_mysql")
    by = {f.run.tenant: f for f in east.runs}
    assert [by[t].run.state for t in "abc"] == ["running", "queued", "done"]
    assert by["a"].finish == now + dt.timedelta(minutes=20)
    assert by["b"].start == by["a"].finish and by["b"].margin_s == -5 * 60
    assert [f.run.tenant for f in east.late] == ["b"] and east.margin_s == -5 * 60
    assert east.earliest_deadline.run.tenant == "b"           # c is delivered
    assert by["b"].run.expected.basis.startswith("no history: default 1800 s")
    text = render([east], limits)
    assert "LATE by 5m" in text and "LATE: b predicted" in text, text
    (tmp_path / "dh" / "dagster.yaml").write_text(dagster_yaml(per_cluster=2))
    with dg.DagsterInstance.from_config(str(tmp_path / "dh")) as instance:
        [east], limits = forecast(config, instance, now, pool="hakobu_mysql")
    assert not east.late and east.margin_s == 15 * 60 and "LATE" not in render([east], limits)


def test_a_long_run_is_named_and_its_forecast_is_a_lower_bound(now):
    from hakobu.night_plan import RUNNING, Estimate, Limits, NightRun, plan

    late = NightRun("a", "east", RUNNING, now - dt.timedelta(hours=2), Estimate(600, "history "
                    "of 4 runs"), now + dt.timedelta(hours=1), started=now - dt.timedelta(hours=1))
    text = render(plan([late], Limits({"east": 2}), now), Limits({"east": 2}, basis="q"))
    assert "running long: a (nightly) 50m past its expected 10m (history of 4 runs)" in text
    assert "≥ " in text


def test_default_run_seconds_is_validated_with_its_file_and_line(tmp_path):
    from hakobu.errors import ConfigErrors

    write_config(tmp_path, {})
    path = tmp_path / "tenants" / "clusters.yaml"
    path.write_text(path.read_text().replace("default_run_seconds: 1800",
                                             "default_run_seconds: 0"))
    with pytest.raises(ConfigErrors) as err:
        load_config(tmp_path, isolate=True)
    assert f"{path}:5" in str(err.value) and "default_run_seconds" in str(err.value)


def test_status_shows_tonight_and_late_tenants(tmp_path, now, monkeypatch, capsys):
    from hakobu.cli import main

    _, instance = night(tmp_path, now, per_cluster=1)
    instance.dispose()
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("Tonight ("):]
    assert "2 per cluster" not in block and "1 per cluster (hakobu/cluster)" in block
    [line] = [ln for ln in block.splitlines() if ln.strip().startswith("east")]
    assert "1/1/1" in line and "(b)" in line and "LATE by" in line, block
    assert "LATE: b predicted" in block
    assert main(["status", "--json", "--tenants", "b"]) == 0
    [b] = json.loads(capsys.readouterr().out)
    assert b["tonight"]["state"] == "queued" and b["tonight"]["late"] is True
    assert b["cluster_tonight"]["late"] == ["b"] and b["cluster_tonight"]["margin_s"] < 0
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "Tonight: per cluster" in " ".join(capsys.readouterr().out.split())


def test_sensor_records_the_plan_and_fails_the_check(tmp_path, now):
    from assets.night import CHECK_NAME, NIGHT_KEY, build_night_sensor
    from pipelines.build import build_definitions

    config, instance = night(tmp_path, now, per_cluster=1)
    with instance:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            defs = build_definitions(config)
        sensor = build_night_sensor(config, clock=lambda: now)
        for _ in range(2):                            # two ticks, both stored
            ctx = dg.build_sensor_context(instance=instance,
                                          repository_def=defs.get_repository_def())
            data = sensor.evaluate_tick(ctx)
            mat, check = data.asset_events
            for ev in data.asset_events:
                instance.report_runless_asset_event(ev)
        assert mat.metadata["margin_s/east"].value == -300.0
        assert mat.metadata["late/east"].value == 1 and "LATE by 5m" in mat.metadata["plan"].value
        assert not check.passed and "b on east" in check.description
        [rec] = instance.fetch_materializations(NIGHT_KEY, limit=1).records
        assert rec.asset_materialization.metadata["late_tenants"].value == 1
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(NIGHT_KEY, CHECK_NAME), limit=5)
        assert len(history) == 2 and history[0].event.asset_check_evaluation.passed is False
