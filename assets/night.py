"""The night's forecast in Dagster: the asset `night_plan`, its check `night_on_track`, and the
`night_plan` sensor that records both every few minutes.

`night_plan` is an external asset (nothing materializes it in a run): each sensor tick reports
a runless materialization of it whose metadata is the forecast of hakobu.tonight — the
per-cluster table as markdown (`plan`), and typed numbers that plot on the asset's page:
`margin_s/<cluster>` (the tightest margin of the cluster's tenants not delivered yet;
negative: one is predicted late), `late/<cluster>` (how many), `late_tenants` (in all). The
check `night_on_track` fails (severity WARN: a forecast, not yet a missed deadline — that is
`delivered_by_deadline`'s ERROR) while any tenant is predicted late or its run of the night
failed with no retry queued; executed by hand from the UI it computes the forecast then.

Both are reported without a partition (night_plan has none): Dagster keeps runless check
evaluations unique per (asset, check, run id, partition), and a repeated report with a
partition would fail the tick (assets/deadlines.py). The sensor reads only the event log and
the run records: nothing is launched, no source or BigQuery is touched.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg

from assets.keys import POOL
from hakobu.config import Config
from hakobu.deadlines import UTC, human
from hakobu.night_plan import DONE, QUEUED, RUNNING, SCHEDULED, ClusterForecast
from hakobu.tonight import forecast

NIGHT_KEY = dg.AssetKey("night_plan")
CHECK_NAME = "night_on_track"
SENSOR_NAME = "night_plan"
GROUP = "operations"

NIGHT_PLAN = dg.AssetSpec(
    NIGHT_KEY, group_name=GROUP,
    description="Tonight's forecast per source cluster: each tenant's run queued as the run "
                "queue works (per-cluster and pool limits), its expected duration from "
                "history, the predicted end of the night against the tenants' deadlines. "
                "Recorded by the night_plan sensor every few minutes.")


def _at(t: dt.datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _margin(s: float | None) -> str:
    return "-" if s is None else (human(s) if s >= 0 else f"**LATE by {human(s)}**")


def markdown(clusters: list[ClusterForecast], basis: str) -> str:
    rows = [("| cluster | tenants | done / running / queued | predicted end | earliest "
             "deadline | margin | predicted late |"), "|---|---|---|---|---|---|---|"]
    for c in clusters:
        first = c.earliest_deadline
        due = f"{_at(first.run.deadline)} ({first.run.tenant})" if first else "all delivered"
        late = ", ".join(f"{f.run.tenant} ({_late_by(f)})" for f in c.late) or "-"
        end = ("≥ " if c.lower_bound else "") + _at(c.finish)
        rows.append(f"| {c.cluster} | {len(c.tenants)} | {c.count(DONE)} / {c.count(RUNNING)}"
                    f" / {c.count(QUEUED, SCHEDULED)} | {end} | {due} | {_margin(c.margin_s)}"
                    f" | {late} |")
    return "\n".join(rows) + f"\n\n{basis}. Times in UTC."


def _late_by(f) -> str:
    if f.finish is None:
        return "failed, no retry queued" if f.run.state == "failed" else "never starts"
    return f"by {human(-(f.margin_s or 0))}, {f.run.expected.basis}"


def night_events(config: Config, instance: dg.DagsterInstance, now: dt.datetime
                 ) -> list[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The sensor's work, callable outside Dagster: the forecast as a materialization of
    night_plan and the evaluation of night_on_track."""
    clusters, limits = forecast(config, instance, now, pool=POOL)
    numbers: dict = {}
    for c in clusters:
        if c.margin_s is not None:
            numbers[f"margin_s/{c.cluster}"] = dg.MetadataValue.float(round(c.margin_s, 1))
        numbers[f"late/{c.cluster}"] = dg.MetadataValue.int(len(c.late))
    late = [(c.cluster, f.run.tenant) for c in clusters for f in c.late]
    text = markdown(clusters, limits.basis)
    summary = (f"{len(late)} tenant(s) predicted late: "
               + ", ".join(f"{t} on {c}" for c, t in late)) if late else \
        f"every tenant on track ({len(clusters)} cluster(s))"
    return [
        dg.AssetMaterialization(asset_key=NIGHT_KEY, description=summary, metadata={
            "plan": dg.MetadataValue.md(text), "late_tenants": dg.MetadataValue.int(len(late)),
            "forecast_at": now.isoformat(), "limits": limits.basis, **numbers}),
        dg.AssetCheckEvaluation(asset_key=NIGHT_KEY, check_name=CHECK_NAME, passed=not late,
                                severity=dg.AssetCheckSeverity.WARN, description=summary,
                                metadata={"plan": dg.MetadataValue.md(text), **numbers}),
    ]


def build_night_check(config: Config) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=NIGHT_KEY, name=CHECK_NAME,
                    description="Fails (WARN) while a tenant is predicted to miss its deadline "
                                "tonight, or its run failed with no retry queued.")
    def night_on_track(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        events = night_events(config, context.instance, dt.datetime.now(UTC))
        ev = events[-1]
        return dg.AssetCheckResult(passed=ev.passed, severity=ev.severity,
                                   description=ev.description, metadata=ev.metadata)

    return night_on_track


def build_night_sensor(config: Config, clock: Callable[[], dt.datetime] | None = None,
                       interval_s: int = 300) -> dg.SensorDefinition:
    clock = clock or (lambda: dt.datetime.now(UTC))

    @dg.sensor(name=SENSOR_NAME, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Every few minutes, records tonight's forecast per cluster "
                           "(night_plan) and whether every tenant is on track "
                           "(night_on_track).")
    def night_plan(context: dg.SensorEvaluationContext):
        return dg.SensorResult(asset_events=night_events(config, context.instance, clock()))

    return night_plan
