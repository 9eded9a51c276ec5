"""Watermark arithmetic: where a shared read starts, and the run's bounds as UTC instants."""

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from hakobu.plan import TablePlan


def _key_lt(a: tuple, b: tuple) -> bool:
    return a < b


def common_start(keys: list[tuple | None]) -> tuple | None:
    """Where the one shared read starts when sinks' watermarks differ (a warehouse that failed
    or was enabled later): at the earliest. Cursor values (temporal or numeric) compare exactly
    in Python; primary keys may not (MySQL collations), so when the earliest cursor value is
    shared by keys with different primary keys, the read starts just below that cursor value —
    re-reading a little, which the idempotent MERGE makes harmless, instead of skipping a row."""
    if not keys:
        return None
    if any(k is None for k in keys):
        return None
    if all(k == keys[0] for k in keys):
        return keys[0]
    low = min(k[0] for k in keys)
    at_low = [k for k in keys if k[0] == low]
    if all(k == at_low[0] for k in at_low):
        return at_low[0]
    return (_just_below(low), *at_low[0][1:])


def _just_below(v):
    if isinstance(v, dt.datetime):
        return v - dt.timedelta(microseconds=1)
    if isinstance(v, dt.date):
        return v - dt.timedelta(days=1)
    if isinstance(v, (int, Decimal)):
        return v - 1
    if isinstance(v, float):
        return v - 1.0
    raise TypeError(f"cursor value of type {type(v).__name__} has no predecessor")


def watermark_utc(plan: TablePlan, key: tuple | None, cluster_zone: str) -> str | None:
    """The watermark's cursor as a UTC instant (for `hakobu status`' lag), when it is a time."""
    if key is None or not plan.cursor:
        return None
    v = key[0]
    spec = plan.spec(plan.cursor)
    if isinstance(v, dt.datetime):
        zone = dt.timezone.utc if spec.info.data_type == "timestamp" else ZoneInfo(cluster_zone)
        return v.replace(tzinfo=zone).astimezone(dt.timezone.utc).isoformat()
    if isinstance(v, dt.date):
        return dt.datetime.combine(v, dt.time(), ZoneInfo(cluster_zone)).astimezone(
            dt.timezone.utc).isoformat()
    return None


def bound_utc(bound: dict) -> str | None:
    """The run's exclusive upper bound as a UTC instant (from source.upper_bound's facts): the
    data is complete up to it, whether or not rows changed — what `hakobu status` calls fresh."""
    if "source_now_utc" not in bound:
        return None
    t = dt.datetime.fromisoformat(bound["source_now_utc"]) - dt.timedelta(
        seconds=float(bound.get("lag_seconds", 0)))
    held = bound.get("held_by_open_transaction_since")
    if held:
        t = min(t, dt.datetime.fromisoformat(held))
    return t.astimezone(dt.timezone.utc).isoformat()
