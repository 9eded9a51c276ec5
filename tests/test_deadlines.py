"""Deadlines: the pure windows and verdicts, and the sensor's check evaluations against a real
(ephemeral) Dagster instance — no source or BigQuery needed."""

import datetime as dt
import warnings
from zoneinfo import ZoneInfo

import dagster as dg

from hakobu.config import Tenant
from hakobu.deadlines import judge, next_deadline, next_run, window

UTC = dt.timezone.utc
TOKYO = ZoneInfo("Asia/Tokyo")


def tenant(tid="a", cron="0 2 * * *", tz="Asia/Tokyo", deliver_by="06:00", tables=("t",)):
    return Tenant(tenant=tid, cluster="c", source={"schema": "s"},
                  destination={"project": "hakobu-test", "dataset": f"d_{tid}"},
                  schedule={"cron": cron, "timezone": tz}, deliver_by=deliver_by,
                  tables=[{"name": n} for n in tables])


def test_window_is_the_last_deadline_and_the_run_before_it():
    t = tenant()
    w = window(t, dt.datetime(2026, 11, 22, 7, 0, tzinfo=TOKYO))
    assert w.deadline == dt.datetime(2026, 11, 22, 6, 0, tzinfo=TOKYO)
    assert w.opens == dt.datetime(2026, 11, 22, 2, 0, tzinfo=TOKYO)
    w = window(t, dt.datetime(2026, 11, 22, 5, 59, tzinfo=TOKYO))   # today's not due yet
    assert w.deadline == dt.datetime(2026, 11, 21, 6, 0, tzinfo=TOKYO)
    assert next_run(t, dt.datetime(2026, 11, 22, 5, 0, tzinfo=TOKYO)) == \
        dt.datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)
    assert next_deadline(t, dt.datetime(2026, 11, 23, 2, 0, tzinfo=TOKYO)) == \
        dt.datetime(2026, 11, 23, 6, 0, tzinfo=TOKYO)


def test_deadline_in_a_zone_with_daylight_saving():
    t = tenant(cron="0 1 * * *", tz="America/New_York", deliver_by="05:30")
    now = dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)               # DST began at 02:00 local
    w = window(t, now)
    assert w.deadline.astimezone(UTC) == dt.datetime(2026, 3, 8, 9, 30, tzinfo=UTC)
    assert w.opens.astimezone(UTC) == dt.datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST


def test_verdicts_on_time_late_and_missing():
    w = window(tenant(), dt.datetime(2026, 11, 22, 7, 0, tzinfo=TOKYO))
    now = dt.datetime(2026, 11, 22, 7, 0, tzinfo=TOKYO)
    v = judge(w, dt.datetime(2026, 11, 22, 4, 10, tzinfo=TOKYO), now)
    assert v.passed and v.final and v.margin_s == 110 * 60 and "1h50m before" in v.description
    v = judge(w, dt.datetime(2026, 11, 22, 6, 37, tzinfo=TOKYO), now)
    assert not v.passed and v.final and v.late_s == 37 * 60
    assert v.description.startswith("delivered 37m late")
    v = judge(w, None, now)
    assert not v.passed and not v.final and v.metadata["late_minutes_so_far"] == 60.0


def _hhmm(t: dt.datetime) -> str:
    return f"{t:%H:%M}"


def _cron(t: dt.datetime) -> str:
    return f"{t.minute} {t.hour} * * *"


def test_sensor_reports_each_deadline_once_then_the_final_lateness(tmp_path):
    from assets.deadlines import CHECK_NAME, build_deadline_sensor, evaluate_deadlines
    from hakobu.config import Config

    t0 = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    tick = t0 - dt.timedelta(minutes=30)
    tenants = {
        "ontime": tenant("ontime", _cron(tick), "UTC", _hhmm(t0 + dt.timedelta(minutes=2)),
                         ("orders", "plans")),
        "late": tenant("late", _cron(tick), "UTC", _hhmm(t0 - dt.timedelta(minutes=2))),
        "missing": tenant("missing", _cron(tick), "UTC", _hhmm(t0 - dt.timedelta(minutes=2))),
    }
    config = Config(root=tmp_path, clusters={}, tenants=tenants)
    with dg.DagsterInstance.ephemeral() as instance:
        for tid, tables in (("ontime", ("orders", "plans")), ("late", ("t",))):
            for name in tables:
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    asset_key=dg.AssetKey(["customer", name]), partition=tid))
        now = t0 + dt.timedelta(minutes=5)
        events, cursor = evaluate_deadlines(config, instance, {}, now)
        by = {(e.metadata["tenant"].value, e.asset_key.path[-1]): e for e in events}
        assert set(by) == {("ontime", "orders"), ("ontime", "plans"), ("late", "t"),
                           ("missing", "t")}
        assert all(e.check_name == CHECK_NAME for e in events)
        assert by[("ontime", "orders")].passed
        late = by[("late", "t")]
        assert not late.passed and 0 < late.metadata["late_minutes"].value <= 3
        missing = by[("missing", "t")]
        assert not missing.passed and "not delivered" in missing.description
        assert missing.metadata["late_minutes_so_far"].value == 7.0
        # the next tick: nothing new
        assert evaluate_deadlines(config, instance, cursor, now)[0] == []
        # the late delivery lands: reported once more, final, with how late
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=dg.AssetKey(["customer", "t"]), partition="missing"))
        events, cursor = evaluate_deadlines(config, instance, cursor,
                                            now + dt.timedelta(minutes=1))
        [e] = events
        assert e.metadata["tenant"].value == "missing" and not e.passed and "late" in e.description
        assert evaluate_deadlines(config, instance, cursor, now + dt.timedelta(minutes=2))[0] \
            == []
        # the sensor definition returns the same evaluations, and Dagster stores every report
        # (the tenant's first and its final one, as the sensor's tick does)
        sensor = build_deadline_sensor(config, clock=lambda: now)
        from pipelines.build import build_definitions

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            defs = build_definitions(config)
        ctx = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
        data = sensor.evaluate_tick(ctx)
        assert len(data.asset_events) == 4 and data.cursor
        instance.report_runless_asset_event(missing)
        instance.report_runless_asset_event(e)          # the same tenant's second report
        for ev in data.asset_events:                     # and the next tick's reports
            instance.report_runless_asset_event(ev)
        key = dg.AssetCheckKey(dg.AssetKey(["customer", "t"]), CHECK_NAME)
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
        assert len(history) >= 3 and history[0].event.asset_check_evaluation.passed is False


def test_in_run_window_judges_the_latest_run_against_its_deadline():
    from hakobu.deadlines import run_window

    t = tenant()
    at = dt.datetime(2026, 11, 22, 2, 7, tzinfo=TOKYO)      # just delivered by the 02:00 run
    w = run_window(t, at)
    assert w.opens == dt.datetime(2026, 11, 22, 2, 0, tzinfo=TOKYO)
    assert w.deadline == dt.datetime(2026, 11, 22, 6, 0, tzinfo=TOKYO)
    v = judge(w, at, at)
    assert v.passed and v.final and "3h53m before" in v.description
    late = dt.datetime(2026, 11, 22, 7, 10, tzinfo=TOKYO)   # the same run, finished late
    assert judge(run_window(t, late), late, late).late_s == 70 * 60
    # executed by hand before anything arrived and before the deadline: pending, not failed
    v = judge(run_window(t, at), None, at)
    assert v.passed and not v.final and "due" in v.description
