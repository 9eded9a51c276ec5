"""Delivery deadlines, pure: which run must have delivered by when, and how late it is.

A tenant promises `deliver_by` (HH:MM in its schedule's time zone). The deadline that matters at
a moment `now` is the latest one at or before `now`; the run that must meet it is the last
scheduled run (cron tick) before it. A table is delivered for that deadline when it was
materialized at or after that tick: on time if at or before the deadline, late otherwise. When
nothing has arrived yet, the table is late by `now - deadline` so far.
"""

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from croniter import croniter

from hakobu.config import Tenant

UTC = dt.timezone.utc


def zone(tenant: Tenant) -> ZoneInfo:
    return ZoneInfo(tenant.schedule.timezone)


def _deadline_on(tenant: Tenant, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, tenant.deliver_by, zone(tenant))


def last_deadline(tenant: Tenant, now: dt.datetime) -> dt.datetime:
    """The latest deadline at or before `now` (aware, in the tenant's zone)."""
    local = now.astimezone(zone(tenant))
    d = _deadline_on(tenant, local.date())
    if d > local:
        d = _deadline_on(tenant, local.date() - dt.timedelta(days=1))
    return d


def next_deadline(tenant: Tenant, after: dt.datetime) -> dt.datetime:
    """The first deadline strictly after `after`."""
    local = after.astimezone(zone(tenant))
    d = _deadline_on(tenant, local.date())
    if d <= local:
        d = _deadline_on(tenant, local.date() + dt.timedelta(days=1))
    return d


def tick_before(tenant: Tenant, when: dt.datetime) -> dt.datetime:
    """The last scheduled run strictly before `when`."""
    it = croniter(tenant.schedule.cron, when.astimezone(zone(tenant)))
    return it.get_prev(dt.datetime)


def next_run(tenant: Tenant, now: dt.datetime) -> dt.datetime:
    it = croniter(tenant.schedule.cron, now.astimezone(zone(tenant)))
    return it.get_next(dt.datetime)


@dataclass(frozen=True)
class Window:
    tenant: str
    opens: dt.datetime           # the scheduled run that must deliver
    deadline: dt.datetime


def window(tenant: Tenant, now: dt.datetime) -> Window:
    """The latest deadline at or before now, and the run that had to meet it (the sensor's)."""
    d = last_deadline(tenant, now)
    return Window(tenant.tenant, tick_before(tenant, d), d)


def run_window(tenant: Tenant, now: dt.datetime) -> Window:
    """The latest scheduled run at or before now, and the deadline it must meet: what a check
    executed inside (or right after) a delivery run judges — passed at once with its margin,
    or failed with how late when the run finished after the deadline."""
    opens = tick_before(tenant, now + dt.timedelta(microseconds=1))
    return Window(tenant.tenant, opens, next_deadline(tenant, opens))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    final: bool                  # no later evaluation can change it (delivered, or late & in)
    late_s: float | None         # seconds late (so far, when not final); None when on time
    margin_s: float | None       # seconds to spare when on time
    delivered_at: dt.datetime | None
    description: str
    metadata: dict = field(default_factory=dict)


def judge(w: Window, delivered_at: dt.datetime | None, now: dt.datetime) -> Verdict:
    meta = {"deadline": w.deadline.isoformat(), "scheduled_run": w.opens.isoformat()}
    when = w.deadline.strftime("%Y-%m-%d %H:%M %Z")
    if delivered_at is not None:
        local = delivered_at.astimezone(w.deadline.tzinfo)
        meta["delivered_at"] = local.isoformat()
        if delivered_at <= w.deadline:
            margin = (w.deadline - delivered_at).total_seconds()
            return Verdict(True, True, None, margin, delivered_at,
                           f"delivered {local:%H:%M}, {human(margin)} before the deadline {when}",
                           {**meta, "margin_minutes": round(margin / 60, 1)})
        late = (delivered_at - w.deadline).total_seconds()
        return Verdict(False, True, late, None, delivered_at,
                       f"delivered {human(late)} late ({local:%H:%M}; deadline {when})",
                       {**meta, "late_minutes": round(late / 60, 1)})
    if now < w.deadline:
        left = (w.deadline - now).total_seconds()
        return Verdict(True, False, None, left, None,
                       f"not delivered yet; due {when} (in {human(left)})",
                       {**meta, "due_in_minutes": round(left / 60, 1)})
    late = (now - w.deadline).total_seconds()
    return Verdict(False, False, late, None, None,
                   f"not delivered: {human(late)} past the deadline {when} so far",
                   {**meta, "late_minutes_so_far": round(late / 60, 1)})


def human(seconds: float) -> str:
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    return f"{h // 24}d{h % 24:02d}h"
