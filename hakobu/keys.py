"""Keys of a read: the last key of a chunk, the largest key below a bound, values turned back
into the source's types — and the DST fold-back restart of a civil-time cursor."""

import datetime as dt
import math
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from hakobu.errors import SourceError
from hakobu.plan import Pass, TablePlan
from hakobu.types import ColumnSpec


def max_key_below(plan: TablePlan, batch: pa.Table, upper: Any) -> tuple | None:
    """The largest (cursor, pk) among rows of a pk-ordered read whose cursor is below the run's
    upper bound: after a complete read of the table, the watermark it may advance to. Works on
    the key columns only and copies nothing but the few rows at the top cursor value."""

    if batch.num_rows == 0 or plan.cursor is None:
        return None
    cur = batch.column(plan.cursor)
    spec = plan.spec(plan.cursor)
    mask = pc.is_valid(cur)
    if upper is not None:
        bound = pa.scalar(_to_delivered(spec, upper), type=cur.type)
        mask = pc.and_(mask, pc.less(cur, bound))
    top = pc.max(cur.filter(mask))
    if not top.is_valid:
        return None
    at_top = pc.indices_nonzero(pc.and_(mask, pc.equal(cur, top)))
    rows = batch.select(list(plan.primary_key)).take(at_top)
    idx = pc.sort_indices(rows, sort_keys=[(k, "descending") for k in plan.primary_key])[0]
    row = rows.take([idx.as_py()])
    return (to_source_value(spec, top.as_py()),
            *(to_source_value(plan.spec(k), row.column(k)[0].as_py()) for k in plan.primary_key))


def _to_delivered(spec: ColumnSpec, value: Any) -> Any:
    """The run's upper bound (source terms) in the delivered Arrow terms of the cursor."""
    if isinstance(value, dt.datetime) and spec.arrow_type.tz is not None:
        if spec.datetime_as_timestamp:

            return value.replace(tzinfo=ZoneInfo(spec.source_timezone))
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def last_key(plan: TablePlan, batch: pa.Table, pass_: Pass) -> tuple:
    """The key of the last row of a chunk, as typed values that render back into MySQL SQL.

    A main-pass key with a NULL cursor would stall the table for good (`c > NULL` is never
    true): chunk_sql keeps such rows out of the main pass, and this refuses one loudly."""
    row = batch.num_rows - 1
    out = []
    for name in plan.key_columns(pass_):
        value = batch.column(name)[row].as_py()
        out.append(to_source_value(plan.spec(name), value))
    if pass_ == "main" and out[0] is None:
        raise SourceError(f"a keyset read handed on a row whose cursor {plan.cursor!r} is "
                          f"delivered as NULL (key {tuple(out[1:])}); its watermark would stall "
                          "the table", tenant=plan.tenant, table=plan.table,
                          hint="this is a bug in hakobu's main-pass predicate; please report it")
    return tuple(out)


def to_source_value(spec: ColumnSpec, value: Any) -> Any:
    """A delivered (Arrow/Python) value back in the source's terms, for keyset comparisons."""
    if value is None:
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        if spec.datetime_as_timestamp:

            return value.astimezone(ZoneInfo(spec.source_timezone)).replace(tzinfo=None)
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)  # UTC session
    return value


def repeated_span(zone: str, civil: dt.datetime) -> tuple[dt.datetime, dt.datetime,
                                                          dt.datetime] | None:
    """When the naive time `civil` in `zone` falls in a span that zone's clocks pass twice (a
    daylight-saving fall-back: America/New_York on 2025-11-02 shows 01:00-02:00 EDT, then
    01:00-02:00 EST), return (first civil value of the span, its end (exclusive), the UTC
    instant the clock went back); else None. Pure: from the tz database (zoneinfo)."""

    z = ZoneInfo(zone)
    first, second = civil.replace(tzinfo=z, fold=0), civil.replace(tzinfo=z, fold=1)
    before, after = first.utcoffset(), second.utcoffset()
    if before is None or after is None or before <= after:   # unique, or in a spring-forward gap
        return None
    # The clock goes back at a whole second between the two instants that read `civil`.
    lo = math.floor(first.timestamp())            # still on the earlier (larger) offset
    hi = math.ceil(second.timestamp())            # already on the later one
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, z).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    back = dt.datetime.fromtimestamp(hi, dt.timezone.utc)
    naive = back.replace(tzinfo=None)
    return naive + after, naive + before, back


def fold_restart(plan: TablePlan, after: tuple | None,
                 bound_utc: "str | dt.datetime | None") -> tuple | None:
    """Where the main pass starts, given the watermark `after` and the run's upper bound as a UTC
    instant: `after` itself, unless the cluster's clock went back (DST fall-back) over the
    watermark.

    A DATETIME cursor is civil time in the cluster's zone; when that zone falls back, civil time
    repeats a span (01:00-02:00 in New York), so rows stamped in the second pass get cursor values
    below a watermark taken in the first pass and would never be read. So while the watermark
    lies inside a repeated span and the clock has gone back by the bound, the read restarts at the
    span's first civil value: the rows of that span are read again (the MERGE on the primary key
    makes that harmless) and the second pass's rows are delivered by the first run after the
    clock went back. Once the watermark is past the span (a run whose bound is past the second
    pass), no restart. Cost: the rows changed within the repeated span, re-read by each run whose
    watermark lies in it — typically one or two runs a year per zone with DST.

    DATE cursors need none of this (the bound admits a date only once every instant of it has
    passed), nor TIMESTAMP cursors (UTC)."""
    if after is None or plan.cursor is None or bound_utc is None:
        return after
    spec = plan.spec(plan.cursor)
    w = after[0]
    if spec.info.data_type != "datetime" or not isinstance(w, dt.datetime):
        return after
    span = repeated_span(spec.source_timezone, w)
    if span is None:
        return after
    start, _end, back = span
    bound = dt.datetime.fromisoformat(bound_utc) if isinstance(bound_utc, str) else bound_utc
    if back > bound:
        return after            # not gone back yet at the bound: every earlier stamp is lower
    return (start - dt.timedelta(microseconds=1), *after[1:])
