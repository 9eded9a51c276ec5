"""Tonight's runs as the Dagster instance knows them, for the pure planner (hakobu.night_plan):
what `hakobu status` shows in its "Tonight" block and the `night_plan` sensor records.

Per tenant, the night is the run that must meet its next deadline (hakobu.deadlines): the
latest cron tick at or before now while its deadline is still ahead, else the next tick — or,
when that deadline has passed with the tick's run still queued or going, that late run. Its
state comes from the tenant's latest `nightly` run created since the tick: done, failed,
running or queued; no run yet is "queued" once the tick has passed (the daemon is about to
queue it) and "scheduled" before. Every other active run of a cluster (a backfill, a load
started by hand) holds a slot too, without a deadline of its own.

Expected durations, best first (`Estimate.basis` says which):
- history: the median of the tenant's last status.RECENT_RUNS successful runs of that job;
- the previous delivery: its tables' `duration_s` (materialization metadata), side by side up
  to the cluster's max_connections (the longest table, or their sum / max_connections);
- the cluster's `default_run_seconds` (clusters.yaml).

Run limits come from the instance's run queue (its dagster.yaml: deploy/dagster.yaml in
production): `tag_concurrency_limits` on hakobu/cluster (per cluster, the lower entry wins), a
limit on that tag without a value and `max_concurrent_runs` (all runs), and the limit of the
delivery pool. An instance without a queue (a local one) limits nothing: runs start on time.
"""

import datetime as dt
import statistics
from dataclasses import replace

import dagster as dg

from hakobu.config import Config, Tenant
from hakobu.deadlines import UTC, Window, human, next_deadline, next_run, run_window
from hakobu.night_plan import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    SCHEDULED,
    ClusterForecast,
    Estimate,
    Forecast,
    Limits,
    NightRun,
    plan,
)
from hakobu.status import NIGHTLY_JOB, PARTITION_TAG, latest_delivery, run_durations

CLUSTER_TAG = "hakobu/cluster"
S = dg.DagsterRunStatus
ACTIVE = [S.QUEUED, S.NOT_STARTED, S.STARTING, S.STARTED, S.CANCELING]
STATE = {S.QUEUED: QUEUED, S.NOT_STARTED: QUEUED, S.STARTING: RUNNING, S.STARTED: RUNNING,
         S.CANCELING: RUNNING, S.SUCCESS: DONE, S.FAILURE: FAILED, S.CANCELED: FAILED}


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=UTC)


def _created(rec) -> dt.datetime:
    c = rec.create_timestamp
    return c if c.tzinfo else c.replace(tzinfo=UTC)


def estimate(instance: dg.DagsterInstance, config: Config, tenant: Tenant,
             job: str = NIGHTLY_JOB) -> Estimate:
    durations = run_durations(instance, tenant.tenant, job)
    if durations:
        n = len(durations)
        return Estimate(statistics.median(durations), f"history of {n} run{'s' * (n != 1)}")
    cluster = config.cluster_of(tenant)
    previous = _previous_delivery(instance, tenant) if job == NIGHTLY_JOB else None
    if previous:
        at_once = cluster.read_budget.max_connections
        seconds = max(max(previous), sum(previous) / at_once)
        return Estimate(seconds, f"no run history: previous delivery ({len(previous)} tables, "
                                 f"{sum(previous):.0f} s of table time, {at_once} at once)")
    return Estimate(float(cluster.default_run_seconds),
                    f"no history: default {cluster.default_run_seconds} s "
                    f"(clusters.yaml default_run_seconds)")


def _previous_delivery(instance: dg.DagsterInstance, tenant: Tenant) -> list[float] | None:
    """`duration_s` of each table's latest materialization, when every table has one."""
    out = []
    for t in tenant.tables:
        rec = latest_delivery(instance, tenant.tenant, t.name)
        md = rec.asset_materialization.metadata if rec and rec.asset_materialization else {}
        value = getattr(md.get("duration_s"), "value", None)
        if not isinstance(value, (int, float)):
            return None
        out.append(float(value))
    return out


def night_window(tenant: Tenant, now: dt.datetime) -> tuple[Window, Window | None]:
    """(tonight's window, the window before it when its deadline has passed): a run of the
    earlier one still queued or going is tonight's, late."""
    w = run_window(tenant, now)
    if w.deadline > now:
        return w, None
    opens = next_run(tenant, now)
    return Window(tenant.tenant, opens, next_deadline(tenant, opens)), w


def _runs_since(instance, tenant_id: str, since: dt.datetime, statuses=None):
    """The tenant's latest nightly run created at or after `since`. In UTC: run storage drops
    the zone of `created_after` without converting (a Tokyo tick would be read 9 h late)."""
    after = since.astimezone(UTC) - dt.timedelta(microseconds=1)
    return instance.get_run_records(
        filters=dg.RunsFilter(job_name=NIGHTLY_JOB, tags={PARTITION_TAG: tenant_id},
                              created_after=after, statuses=statuses), limit=1)


def tenant_run(instance: dg.DagsterInstance, config: Config, tenant: Tenant,
               now: dt.datetime) -> tuple[NightRun, str | None]:
    """The tenant's run of the night and the run id it is (None: no run exists yet)."""
    w, before = night_window(tenant, now)
    recs = _runs_since(instance, tenant.tenant, w.opens) if w.opens <= now else []
    if before is not None and not recs:
        late = _runs_since(instance, tenant.tenant, before.opens, ACTIVE)
        if late and _created(late[0]) < before.deadline:
            w, recs = before, late
    expected = estimate(instance, config, tenant)
    base = NightRun(tenant.tenant, tenant.cluster, SCHEDULED, w.opens, expected, w.deadline)
    if not recs:
        return (base if w.opens > now else replace(base, state=QUEUED)), None
    rec = recs[0]
    return _from_record(base, rec, queued_at=max(w.opens, _created(rec))), \
        rec.dagster_run.run_id


def _from_record(base: NightRun, rec, queued_at: dt.datetime) -> NightRun:
    state = STATE.get(rec.dagster_run.status, QUEUED)
    return replace(base, state=state, queued_at=queued_at,
                    started=_ts(rec.start_time) if rec.start_time else None,
                    finished=_ts(rec.end_time) if rec.end_time else None,
                    job=rec.dagster_run.job_name)


def other_runs(instance: dg.DagsterInstance, config: Config, taken: set[str]) -> list[NightRun]:
    """The active runs of a cluster that are no tenant's run of the night (a backfill, a load
    started by hand after the deadline): they hold a slot, and their tenant, without a
    deadline."""
    out = []
    for rec in instance.get_run_records(filters=dg.RunsFilter(statuses=ACTIVE), limit=1000):
        run = rec.dagster_run
        tid = run.tags.get(PARTITION_TAG)
        if run.run_id in taken or tid not in config.tenants or CLUSTER_TAG not in run.tags:
            continue
        tenant = config.tenant(tid)
        base = NightRun(tid, tenant.cluster, QUEUED, _created(rec),
                        estimate(instance, config, tenant, run.job_name), None)
        out.append(_from_record(base, rec, queued_at=_created(rec)))
    return out


def queue_limits(instance: dg.DagsterInstance, config: Config, pool: str | None) -> Limits:
    """The run limits of the instance's queue, per cluster and in all (module docstring)."""
    cc = instance.get_concurrency_config()
    queue = cc.run_queue_config
    if queue is None:
        return Limits({c: None for c in config.clusters}, None,
                      "this instance has no run queue: every run starts when launched")
    per: dict[str, int | None] = {c: None for c in config.clusters}
    total = queue.max_concurrent_runs if (queue.max_concurrent_runs or -1) >= 0 else None
    said = [f"{total} runs in all"] if total is not None else []
    for lim in queue.tag_concurrency_limits or []:
        if lim.get("key") != CLUSTER_TAG:
            continue
        value, n = lim.get("value"), int(lim["limit"])
        if isinstance(value, dict) and value.get("applyLimitPerUniqueValue"):
            per = {c: n if v is None else min(v, n) for c, v in per.items()}
            said.append(f"{n} per cluster ({CLUSTER_TAG})")
        elif isinstance(value, str):
            per[value] = n if per.get(value) is None else min(per[value], n)
            said.append(f"{n} on {value}")
        elif value is None:
            total = n if total is None else min(total, n)
            said.append(f"{n} on all clusters ({CLUSTER_TAG})")
    slots = _pool_limit(instance, pool)
    if slots is not None:
        total = slots if total is None else min(total, slots)
        said.append(f"{slots} in pool {pool}")
    return Limits(per, total, "run queue: " + (", ".join(said) or "no limit"))


def _pool_limit(instance: dg.DagsterInstance, pool: str | None) -> int | None:
    """The delivery pool's slots: set on the instance (`dagster instance concurrency set`),
    else its dagster.yaml's default limit; None when neither limits it."""
    storage = instance.event_log_storage
    if pool is None or not storage.supports_global_concurrency_limits:
        return None
    return storage.get_concurrency_info(pool).limit


def forecast(config: Config, instance: dg.DagsterInstance, now: dt.datetime | None = None,
             tenants: list[str] | None = None, pool: str | None = None
             ) -> tuple[list[ClusterForecast], Limits]:
    """Every cluster's forecast of the night (the clusters of `tenants` only, when given: their
    runs are planned with everything else that holds those clusters' slots)."""
    now = now or dt.datetime.now(UTC)
    runs, taken = [], set()
    for tid in sorted(config.tenants):
        run, run_id = tenant_run(instance, config, config.tenant(tid), now)
        runs.append(run)
        if run_id:
            taken.add(run_id)
    runs += other_runs(instance, config, taken)
    limits = queue_limits(instance, config, pool)
    out = plan(runs, limits, now)
    if tenants:
        wanted = {config.tenant(t).cluster for t in tenants}
        out = [c for c in out if c.cluster in wanted]
    return out, limits


# -- what an operator reads ------------------------------------------------------------------

def _at(t: dt.datetime | None, tz) -> str:
    return "-" if t is None else t.astimezone(tz).strftime("%m-%d %H:%M %Z")


def _margin(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return human(seconds) if seconds >= 0 else f"LATE by {human(seconds)}"


def _zone(c: ClusterForecast):
    """The zone of the cluster's times: its earliest pending deadline's (a tenant's zone)."""
    first = c.earliest_deadline or (c.runs[0] if c.runs else None)
    return first.run.deadline.tzinfo if first and first.run.deadline else UTC


def _why(f: Forecast) -> str:
    r = f.run
    tz = r.deadline.tzinfo if r.deadline else UTC
    if r.state == FAILED:
        return (f"  LATE: {r.tenant} — tonight's run FAILED {_at(r.finished, tz)} and no "
                f"retry is queued; due {_at(r.deadline, tz)}")
    if f.finish is None:
        return f"  LATE: {r.tenant} — {r.state}, never starts (a run limit of 0)"
    finish = ("≥ " if f.overrun_s else "") + _at(f.finish, tz)
    return (f"  LATE: {r.tenant} predicted {finish}, due {_at(r.deadline, tz)} "
            f"(late by {human(-(f.margin_s or 0))}; {r.state}, starts "
            f"{_at(f.start, tz)}; {r.expected.basis})")


def render(clusters: list[ClusterForecast], limits: Limits) -> str:
    """The "Tonight" block of `hakobu status`: a line per cluster, then a line per tenant
    predicted late and per run going longer than expected."""
    head = (f"  {'cluster':<14}{'tenants':>8}  {'done/run/queue':<15}{'predicted end':<22}"
            f"{'earliest deadline':<34}margin")
    lines = [f"Tonight ({limits.basis})", head]
    for c in clusters:
        tz = _zone(c)
        first = c.earliest_deadline
        due = f"{_at(first.run.deadline, tz)} ({first.run.tenant})" if first else \
            "all delivered"
        end = ("≥ " if c.lower_bound else "") + _at(c.finish, tz)
        counts = f"{c.count(DONE)}/{c.count(RUNNING)}/{c.count(QUEUED, SCHEDULED)}"
        lines.append(f"  {c.cluster:<14}{len(c.tenants):>8}  {counts:<15}{end:<22}{due:<34}"
                     f"{_margin(c.margin_s)}")
        lines += [_why(f) for f in c.late]
        lines += [f"  running long: {f.run.tenant} ({f.run.job}) {human(f.overrun_s)} past its "
                  f"expected {human(f.run.expected.seconds)} ({f.run.expected.basis}); its "
                  "finish is taken as now, the forecast is a lower bound"
                  for f in c.runs if f.overrun_s]
    if not clusters:
        lines.append("  nothing planned")
    lines.append("  predicted end = the last run's finish, queued as the run queue works "
                 "(start = a free slot after the scheduled time, + the expected duration); "
                 "margin = the tightest (deadline − predicted finish) of the tenants not "
                 "delivered yet")
    return "\n".join(lines)


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def tenant_json(f: Forecast) -> dict:
    r = f.run
    return {"tenant": r.tenant, "job": r.job, "state": r.state, "queued_at": _iso(r.queued_at),
            "predicted_start": _iso(f.start), "predicted_finish": _iso(f.finish),
            "deadline": _iso(r.deadline), "margin_s": f.margin_s, "late": f.late,
            "expected_s": r.expected.seconds, "expected_basis": r.expected.basis,
            "overrun_s": f.overrun_s}


def cluster_json(c: ClusterForecast) -> dict:
    first = c.earliest_deadline
    return {"cluster": c.cluster, "slots": c.slots, "tenants": c.tenants,
            "done": c.count(DONE), "running": c.count(RUNNING),
            "queued": c.count(QUEUED, SCHEDULED), "failed": c.count(FAILED),
            "predicted_end": _iso(c.finish), "lower_bound": c.lower_bound,
            "earliest_deadline": _iso(first.run.deadline) if first else None,
            "earliest_deadline_tenant": first.run.tenant if first else None,
            "margin_s": c.margin_s, "late": [f.run.tenant for f in c.late],
            "runs": [tenant_json(f) for f in c.runs]}
