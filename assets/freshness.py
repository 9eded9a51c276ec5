"""Dagster freshness policies for the tenants' `deliver_by`, where one can say it exactly.

A tenant promises `deliver_by` (HH:MM in its schedule's zone) for the run its cron starts before
that time. Dagster 1.13's `FreshnessPolicy.cron(deadline_cron, lower_bound_delta, timezone)`
says the same thing of an asset: it is fresh when it was materialized in
[deadline - lower_bound_delta, deadline] of the last deadline tick, in that zone — so a policy
with deadline_cron "MM HH * * *" and lower_bound_delta = deadline - the scheduled run is the
tenant's promise (hakobu.deadlines.window: on time when materialized at or after the run's tick
and at or before the deadline).

What it cannot say, and why the `delivered_by_deadline` check and its sensor
(assets/deadlines.py) stay:
- the policy is per asset, not per partition: Dagster evaluates it on the asset's latest
  materialization of any partition (freshness_evaluator: `asset_entry.last_materialization`).
  `customer/<table>` is one asset partitioned by tenant, and tenants have their own deadlines
  and zones; with two tenants on one table the policy would call the table fresh as soon as
  either was delivered. So a policy is attached only to a table that exactly one tenant
  delivers (its partition is the asset's only one); a table several tenants deliver gets none,
  and the per-tenant sensor is the only judge of it;
- a deadline the cron form cannot express: a schedule whose run before the deadline is not the
  same distance before it every day (a weekly cron, one that skips days, a gap that moves with
  daylight saving time), or is more than a day before it (Dagster requires lower_bound_delta <=
  the cron's interval);
- lateness itself ("delivered 37 min late"), margins, and a failed or missing run named per
  tenant: the check's metadata, which the policy's pass/fail state does not carry.

Freshness policies are evaluated only when the instance enables them (`freshness: enabled:
true` in dagster.yaml: hakobu.cli.ensure_dagster_home writes it for a new local instance).
"""

import datetime as dt

import dagster as dg

from hakobu.config import Config, Tenant
from hakobu.deadlines import UTC, next_deadline, tick_before
from hakobu.naming import table_name

SAMPLE_DAYS = 14          # deadlines compared: the window must be the same on each of them
MAX_WINDOW = dt.timedelta(days=1)


def deadline_policy(tenant: Tenant, now: dt.datetime | None = None
                    ) -> tuple[dg.FreshnessPolicy | None, str]:
    """The cron freshness policy of a tenant's promise, or None and why it cannot be one."""
    now = now or dt.datetime.now(UTC)
    zone = tenant.schedule.timezone
    windows, d = set(), now
    for _ in range(SAMPLE_DAYS):
        d = next_deadline(tenant, d)
        windows.add(d - tick_before(tenant, d))
    if len(windows) != 1:
        return None, (f"the scheduled run ({tenant.schedule.cron}) is not the same time before "
                      f"{tenant.deliver_by:%H:%M} {zone} every day")
    [window] = windows
    if not dt.timedelta(minutes=1) <= window <= MAX_WINDOW:
        return None, (f"the scheduled run is {window} before the deadline (a cron freshness "
                      "window is 1 minute to 1 day)")
    cron = f"{tenant.deliver_by.minute} {tenant.deliver_by.hour} * * *"
    return dg.FreshnessPolicy.cron(deadline_cron=cron, lower_bound_delta=window,
                                   timezone=zone), f"delivered by {tenant.deliver_by:%H:%M} {zone}"


def table_policies(config: Config) -> dict[str, dg.FreshnessPolicy]:
    """Asset-key part (BigQuery table name) → policy, for the tables exactly one tenant
    delivers and whose tenant's deadline a cron policy can express (see the module doc)."""
    tenants: dict[str, list[Tenant]] = {}
    for tenant in config.tenants.values():
        for t in tenant.tables:
            tenants.setdefault(table_name(t.name), []).append(tenant)
    out = {}
    for name, ts in tenants.items():
        if len(ts) == 1:
            policy, _ = deadline_policy(ts[0])
            if policy is not None:
                out[name] = policy
    return out
