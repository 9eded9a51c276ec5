"""Delivery deadlines as Dagster asset checks: `delivered_by_deadline` on every customer table,
partitioned by tenant like the table (declared on the customer multi-asset, assets/customer.py).

Two evaluators of the same check. Inside every delivery run (the delivery step reports it after
the table's materialization) it judges the latest scheduled run's window: passed with the
margin, or failed with how late the delivery finished. But a deadline fails precisely when the
run did not happen, is stuck or failed — then there is no run to execute a check in; so the
`delivery_deadlines` sensor looks at the event log every minute (no run launched, nothing read
from the sources) and, per tenant:
- once the deadline has passed, reports each table's check: passed (delivered at HH:MM, with the
  margin) or failed (severity ERROR) with how late so far;
- when a late delivery then lands, reports the final lateness ("delivered 37m late").
Its cursor remembers, per tenant, which deadline was reported and which tables are final, so a
check is reported once per deadline (twice when late). Executed by hand from the UI before a
deadline, the check passes as "not delivered yet; due HH:MM".

Why a check and a sensor, and not only Dagster's freshness policies: a table that exactly one
tenant delivers also gets a cron FreshnessPolicy for that tenant's deadline in its zone
(assets/freshness.py). Dagster judges a policy per asset, on its latest materialization of
any partition, so it cannot hold one tenant's deadline on a table that several tenants (each
its own partition, deadline and zone) deliver; nor can it say how late a delivery was, or
express a schedule whose run is not the same time before the deadline every day. This check
covers every tenant and table, and is what `hakobu status` and alerts read.
"""

import datetime as dt
import json
from collections.abc import Callable

import dagster as dg

from assets.keys import customer_key
from hakobu.config import Config
from hakobu.deadlines import UTC, judge, run_window, window
from hakobu.status import first_delivery_since

CHECK_NAME = "delivered_by_deadline"
DESCRIPTION = ("delivered to the tenant's dataset by the tenant's deliver_by time: evaluated "
               "after each delivery run (its margin, or how late it finished) and by the "
               "delivery_deadlines sensor once a deadline passes (how late when nothing arrived)")
SENSOR_NAME = "delivery_deadlines"


def result(config: Config, instance: dg.DagsterInstance, tenant_id: str, table: str,
           now: dt.datetime, delivered: bool) -> dg.AssetCheckResult:
    """The check's result inside a run; `delivered`: this run has just delivered the table
    (its materialization is in the event log, or else now is taken as the delivery time)."""
    key = dict(asset_key=customer_key(table), check_name=CHECK_NAME)
    if table not in {t.name for t in config.tenant(tenant_id).tables}:
        return dg.AssetCheckResult(**key, passed=True,
                                   description=f"{tenant_id} does not deliver {table}")
    tenant = config.tenant(tenant_id)
    w = run_window(tenant, now)
    first = first_delivery_since(instance, tenant_id, table, w.opens)
    v = judge(w, first or (now if delivered else None), now)
    return dg.AssetCheckResult(**key, passed=v.passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=v.description,
                               metadata={"tenant": tenant_id, **v.metadata})


def evaluate_deadlines(config: Config, instance: dg.DagsterInstance, cursor: dict,
                       now: dt.datetime) -> tuple[list[dg.AssetCheckEvaluation], dict]:
    """The sensor's work, callable outside Dagster: new check evaluations and the next cursor."""
    events = []
    out = dict(cursor)
    for tid in sorted(config.tenants):
        tenant = config.tenant(tid)
        w = window(tenant, now)
        key = w.deadline.isoformat()
        state = cursor.get(tid, {})
        done = state.get("final", []) if state.get("deadline") == key else []
        reported = state.get("reported", []) if state.get("deadline") == key else []
        final, seen = list(done), list(reported)
        for t in tenant.tables:
            if t.name in done:
                continue
            v = judge(w, first_delivery_since(instance, tid, t.name, w.opens), now)
            if t.name in reported and not v.final:
                continue                        # still missing: reported once already
            # No partition: Dagster stores a sensor's (runless) check evaluations under one
            # empty run id, unique per (asset, check, run id, partition), so a tenant's second
            # report — the next night's deadline, or a late delivery's final lateness — would
            # fail the whole tick for good (an IntegrityError, the cursor never saved). The
            # tenant is in the description and the metadata instead.
            events.append(dg.AssetCheckEvaluation(
                asset_key=customer_key(t.name), check_name=CHECK_NAME, passed=v.passed,
                severity=dg.AssetCheckSeverity.ERROR, description=f"{tid}: {v.description}",
                metadata={"tenant": tid, **v.metadata}))
            seen.append(t.name)
            if v.final:
                final.append(t.name)
        out[tid] = {"deadline": key, "final": sorted(set(final)), "reported": sorted(set(seen))}
    return events, out


def build_deadline_sensor(config: Config, clock: Callable[[], dt.datetime] | None = None,
                          interval_s: int = 60) -> dg.SensorDefinition:
    clock = clock or (lambda: dt.datetime.now(UTC))

    @dg.sensor(name=SENSOR_NAME, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Reports each tenant's delivered_by_deadline checks once its "
                           "deliver_by time has passed, and again when a late delivery lands.")
    def delivery_deadlines(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        events, nxt = evaluate_deadlines(config, context.instance, cursor, clock())
        return dg.SensorResult(asset_events=events, cursor=json.dumps(nxt, sort_keys=True))

    return delivery_deadlines
