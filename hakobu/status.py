"""`hakobu status`: per tenant, where its delivery stands against its promise.

Everything comes from the Dagster instance (DAGSTER_HOME) and the tenant files, nothing from the
sources or BigQuery, so it answers in a second even when a cluster is down:
- last delivery: the oldest of the tenant's tables' latest materializations (when every table
  was last delivered at least once);
- watermark lag: now − the newest table watermark (`watermark_utc` in materialization metadata:
  the cursor of the last row delivered); and staleness: now − the oldest `complete_to_utc` (the
  run's upper bound: every source row below it is delivered, changed or not) — a table that
  rarely changes has an old watermark but is fresh;
- next run: the tenant's cron in its zone;
- predicted finish: the run in progress (or the next one) plus the median duration of the
  tenant's recent successful `nightly` runs;
- margin: the deadline that run must meet − the predicted finish (negative: it will be late);
- last deadline: met (with the margin) or missed (by how much), as the deadline check says;
- the latest `nightly` run, when it failed: when, and why (an unreachable source, a dataset that
  cannot be written: the step's failure message);
- tenant files left out of the configuration (hakobu.config.load_config(isolate=True)): each
  with its file, line and error — that tenant is neither scheduled nor delivered.
"""

import datetime as dt
import statistics
from dataclasses import dataclass

import dagster as dg

from hakobu.config import Config, Tenant
from hakobu.deadlines import (UTC, Verdict, human, judge, next_deadline, next_run, window,
                              zone)
from hakobu.naming import table_name

RECENT_RUNS = 10
NIGHTLY_JOB = "nightly"
PARTITION_TAG = "dagster/partition"


def customer_key(table: str) -> dg.AssetKey:
    """The same key as assets.customer.customer_key (hakobu.naming: a valid Dagster name)."""
    return dg.AssetKey(["customer", table_name(table)])


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=UTC)


def first_delivery_since(instance: dg.DagsterInstance, tenant_id: str, table: str,
                         since: dt.datetime) -> dt.datetime | None:
    """When `table` was first materialized for the tenant at or after `since`."""
    res = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=customer_key(table), asset_partitions=[tenant_id],
                              after_timestamp=since.timestamp() - 1e-6),
        limit=1, ascending=True)
    return _ts(res.records[0].timestamp) if res.records else None


def latest_delivery(instance: dg.DagsterInstance, tenant_id: str, table: str):
    res = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=customer_key(table), asset_partitions=[tenant_id]),
        limit=1)
    return res.records[0] if res.records else None


def deadline_verdicts(instance: dg.DagsterInstance, tenant: Tenant, now: dt.datetime
                      ) -> dict[str, Verdict]:
    """The deadline check of every table of the tenant, for the latest deadline before now."""
    w = window(tenant, now)
    return {t.name: judge(w, first_delivery_since(instance, tenant.tenant, t.name, w.opens), now)
            for t in tenant.tables}


@dataclass
class TenantStatus:
    tenant: str
    zone: str
    tables: int
    tables_delivered: int
    last_delivery: dt.datetime | None
    watermark_lag_s: float | None          # now − the newest row delivered (watermark cursor)
    staleness_s: float | None              # now − the instant every table is complete to
    next_run: dt.datetime
    running_since: dt.datetime | None
    predicted_finish: dt.datetime | None
    runs_measured: int
    median_run_s: float | None
    deadline: dt.datetime
    margin_s: float | None
    last_deadline: str
    last_run_failed: dt.datetime | None = None   # the latest nightly run failed, at
    last_run_error: str | None = None

    def as_dict(self) -> dict:
        out = {}
        for k, v in self.__dict__.items():
            out[k] = v.isoformat() if isinstance(v, dt.datetime) else v
        return out


def _meta_time(md, key: str) -> dt.datetime | None:
    v = md.get(key)
    text = getattr(v, "value", v)
    if isinstance(text, str) and text not in ("", "-"):
        return dt.datetime.fromisoformat(text)
    return None


def run_durations(instance: dg.DagsterInstance, tenant_id: str, job: str = NIGHTLY_JOB,
                  limit: int = RECENT_RUNS) -> list[float]:
    """Seconds of the tenant's last `limit` successful runs of `job`, newest first."""
    runs = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, tags={PARTITION_TAG: tenant_id},
                              statuses=[dg.DagsterRunStatus.SUCCESS]), limit=limit)
    return [r.end_time - r.start_time for r in runs if r.start_time and r.end_time]


def tenant_status(instance: dg.DagsterInstance, tenant: Tenant, now: dt.datetime
                  ) -> TenantStatus:
    latest = [latest_delivery(instance, tenant.tenant, t.name) for t in tenant.tables]
    delivered = [r for r in latest if r is not None]
    last = _ts(min(r.timestamp for r in delivered)) if len(delivered) == len(latest) else None
    lags, fresh = [], []
    for r in delivered:
        md = r.asset_materialization.metadata if r.asset_materialization else {}
        wm, complete = _meta_time(md, "watermark_utc"), _meta_time(md, "complete_to_utc")
        if wm is not None:
            lags.append((now - wm).total_seconds())
        # complete to the run's upper bound; a full read is complete to when it ran
        fresh.append((now - (complete or _ts(r.timestamp))).total_seconds())
    durations = run_durations(instance, tenant.tenant)
    median = statistics.median(durations) if durations else None
    going = instance.get_run_records(
        filters=dg.RunsFilter(job_name=NIGHTLY_JOB, tags={"dagster/partition": tenant.tenant},
                              statuses=[dg.DagsterRunStatus.STARTED]), limit=1)
    running_since = _ts(going[0].start_time) if going and going[0].start_time else None
    nxt = next_run(tenant, now)
    start = running_since or nxt
    deadline = next_deadline(tenant, start)
    finish = start + dt.timedelta(seconds=median) if median is not None else None
    margin = (deadline - finish).total_seconds() if finish is not None else None
    verdicts = deadline_verdicts(instance, tenant, now)
    late = [v for v in verdicts.values() if not v.passed]
    if not late:
        spare = min(v.margin_s for v in verdicts.values())
        last_dl = f"met ({human(spare)} to spare)"
    elif all(v.final for v in late):
        last_dl = f"missed by {human(max(v.late_s for v in late))}"
    else:
        last_dl = f"MISSED, not delivered ({human(max(v.late_s for v in late))} so far)"
    failed_at, error = last_failure(instance, tenant.tenant)
    return TenantStatus(tenant.tenant, tenant.schedule.timezone, len(tenant.tables),
                        len(delivered), last, min(lags) if lags else None,
                        max(fresh) if fresh and last else None, nxt, running_since,
                        finish, len(durations), median, deadline, margin, last_dl,
                        failed_at, error)


def last_failure(instance: dg.DagsterInstance, tenant_id: str
                 ) -> tuple[dt.datetime | None, str | None]:
    """(when, why) the tenant's latest finished nightly run failed; (None, None) if it did not."""
    runs = instance.get_run_records(
        filters=dg.RunsFilter(job_name=NIGHTLY_JOB, tags={"dagster/partition": tenant_id},
                              statuses=[dg.DagsterRunStatus.SUCCESS,
                                        dg.DagsterRunStatus.FAILURE]), limit=1)
    if not runs or runs[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None, None
    rec = runs[0]
    when = _ts(rec.end_time) if rec.end_time else None
    why = "run failed"
    for ev in instance.all_logs(rec.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = ev.dagster_event.step_failure_data if ev.dagster_event else None
        err = data.error if data else None
        if err is not None:
            why = _failure_text(err)
            break
    return when, why


def _failure_text(err) -> str:
    """The user's failure message (a dg.Failure's description, or the error in the step)."""
    while err.cause is not None and "Error occurred while executing" in err.message:
        err = err.cause
    text = err.message.strip().splitlines()
    return text[0][:300] if text else "run failed"


def collect(config: Config, instance: dg.DagsterInstance, now: dt.datetime | None = None,
            tenants: list[str] | None = None) -> list[TenantStatus]:
    now = now or dt.datetime.now(UTC)
    return [tenant_status(instance, config.tenant(t), now) for t in (tenants or
                                                                      sorted(config.tenants))]


def _at(t: dt.datetime | None, tz: str) -> str:
    return "-" if t is None else t.astimezone(zone_of(tz)).strftime("%m-%d %H:%M")


def zone_of(name: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def render(statuses: list[TenantStatus], broken=()) -> str:
    head = (f"{'tenant':<10}{'zone':<18}{'last delivery':<15}{'wm lag':>8}{'stale':>8}  "
            f"{'next run':<13}"
            f"{'predicted':<13}{'deadline':<13}{'margin':>8}  last deadline")
    lines = [head]
    for s in statuses:
        last = _at(s.last_delivery, s.zone) if s.last_delivery else \
            ("never" if s.tables_delivered == 0 else f"{s.tables_delivered}/{s.tables} tables")
        lag = "-" if s.watermark_lag_s is None else human(s.watermark_lag_s)
        stale = "-" if s.staleness_s is None else human(s.staleness_s)
        nxt = ("running" if s.running_since else _at(s.next_run, s.zone))
        pred = _at(s.predicted_finish, s.zone) if s.predicted_finish else "no runs yet"
        margin = "-" if s.margin_s is None else \
            (human(s.margin_s) if s.margin_s >= 0 else f"-{human(s.margin_s)}")
        lines.append(f"{s.tenant:<10}{s.zone:<18}{last:<15}{lag:>8}{stale:>8}  {nxt:<13}"
                     f"{pred:<13}"
                     f"{_at(s.deadline, s.zone):<13}{margin:>8}  {s.last_deadline}")
    for s in statuses:
        if s.last_run_error:
            lines.append(f"{s.tenant}: the latest nightly run FAILED "
                         f"{_at(s.last_run_failed, s.zone)}: {s.last_run_error}")
    for b in broken:
        lines.append(f"{b.tenant}: LEFT OUT (not scheduled, not delivered): {b.describe()}")
    lines.append("times in each tenant's schedule zone; wm lag = now − newest watermark; "
                 "stale = now − the instant every table is complete to; predicted = start + "
                 f"median of the last {RECENT_RUNS} successful nightly runs (the queue "
                 "not counted: Tonight below counts it); margin = deadline − predicted")
    return "\n".join(lines)
