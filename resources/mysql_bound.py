"""The exclusive upper bound of an incremental read (MySQLSource.upper_bound): the source's
clock, lag, and the open writers that could still commit rows below it."""

import datetime as dt
import os
import random
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from hakobu.errors import SourceUnavailable
from hakobu.plan import MIN_DATETIME, NOTHING, TablePlan, col_ref, just_above
from resources.mysql_sql import _from, _tenant_where, _utc


def system_to_utc_sql(expr: str) -> str:
    """SQL turning a DATETIME in the server's *system* time zone into UTC, in any session.

    INNODB_TRX.trx_started is such a value, whatever the session's time_zone says (hakobu's
    sessions say +00:00, so UNIX_TIMESTAMP(trx_started) alone is off by the system zone's
    offset: 9 h in the future on a JST host, and an open transaction never held the bound).
    CONVERT_TZ from 'SYSTEM' needs no time-zone tables. In a fall-back hour the civil value is
    ambiguous; LEAST with the value an hour earlier, shifted back, takes the earlier reading, so
    the result is never later than the true instant (at worst an hour early, an hour a year;
    zones whose clocks go back by more than an hour are not covered)."""
    return (f"LEAST(CONVERT_TZ({expr}, 'SYSTEM', '+00:00'), "
            f"CONVERT_TZ({expr} - INTERVAL 1 HOUR, 'SYSTEM', '+00:00') + INTERVAL 1 HOUR)")


# Open transactions that have written or locked rows (consistent reads take no locks and cannot
# hold rows stamped below a bound), with their start as a unix time never later than the true
# one (trx_started has whole seconds, truncated). Our own row tells whether the answer is fresh:
# INNODB_TRX is served from a cache that InnoDB refills only when nobody read it for 100 ms
# (sessions polling it faster keep it stale for good; measured on MariaDB 10.11), so a listing
# can lack a transaction that began just before it. The query runs inside our own transaction
# and carries a nonce: only a refill made during this very query shows the nonce in our row's
# trx_query.
OPEN_TRX_SQL = (
    "SELECT /* hakobu-open-trx {nonce} */ trx_id, "
    f"UNIX_TIMESTAMP({system_to_utc_sql('trx_started')}), "
    "trx_mysql_thread_id = CONNECTION_ID() AND LOCATE('{nonce}', trx_query) > 0, "
    "trx_mysql_thread_id <> CONNECTION_ID() AND trx_autocommit_non_locking = 0 "
    "AND (trx_rows_modified > 0 OR trx_lock_structs > 0) "
    "FROM information_schema.INNODB_TRX")
TRX_CACHE_S = 0.11          # InnoDB refills the INNODB_TRX cache after 100 ms without readers
# After a stale listing the next waits a random pause, doubling up to TRX_BACKOFF_MAX_S: several
# sessions polling on a fixed beat (hakobu's own runs and streams on one cluster) keep the cache
# stale for one another; random pauses open the 100 ms gap a refill needs (8 pollers on one
# server starved with a fixed 0.11 s beat; tests/integration/test_open_writers.py).
TRX_BACKOFF_MAX_S = 1.0
TRX_FRESH_TIMEOUT_S = 15.0  # then give up (transient): someone reads INNODB_TRX non-stop


def writer_wait_seconds() -> float:
    """How long a numeric-cursor bound waits for the writers that were open when it read the
    cursor's MAX (HAKOBU_WRITER_WAIT_SECONDS, default 10 s): usually milliseconds."""
    return float(os.environ.get("HAKOBU_WRITER_WAIT_SECONDS") or 10)



class BoundMixin:
    """MySQLSource's bounds: mixed into it (resources.mysql_source)."""

    def upper_bound(self, plan: TablePlan, after: tuple | None = None) -> tuple[Any, dict]:
        """Exclusive upper cursor bound for this run, from the source's own clock.

        Every row with cursor < bound is committed: the bound is at most `now - lag` and at
        most the start of the oldest open read-write transaction (its rows, stamped by the
        server at or after its start, cannot be below it). Numeric cursors: see
        _numeric_bound (`after` is the watermark the run reads from). Returns (bound, facts
        for metadata).
        """
        if plan.cursor is None:
            return None, {}
        spec = plan.spec(plan.cursor)
        if not plan.cursor_is_temporal:
            return self._numeric_bound(plan, after)
        now_s, trx_s, basis = self._clock()
        bound_s = now_s - self.cluster.lag_seconds
        facts = {"source_now_utc": _utc(now_s).isoformat(), "lag_seconds": self.cluster.lag_seconds}
        if trx_s is not None and trx_s < bound_s:
            bound_s = trx_s
            facts["held_by_open_transaction_since"] = _utc(trx_s).isoformat()
        facts["upper_basis"] = basis
        instant = _utc(bound_s)
        if spec.info.data_type == "timestamp":
            bound = instant.replace(tzinfo=None)                     # UTC session
        else:
            bound = instant.astimezone(ZoneInfo(self.cluster.timezone)).replace(tzinfo=None)
            if spec.info.data_type == "date":
                bound = bound.date()
        facts["upper_bound"] = str(bound)
        return max(bound, MIN_DATETIME) if isinstance(bound, dt.datetime) else bound, facts

    def _numeric_bound(self, plan: TablePlan, after: tuple | None) -> tuple[Any, dict]:
        """The bound of an integer or DECIMAL cursor (a version counter, an AUTO_INCREMENT id).

        Such values are allocated in increasing order (AUTO_INCREMENT, a counter row, a sequence)
        but committed in any order: a transaction may hold 11 uncommitted while 12 commits, and
        `MAX + 1` would let the watermark pass 11 for good. So: read M = MAX(cursor) (committed
        rows) with the server's time, *then* the writers open on the server. A value <= M still
        uncommitted was allocated before M, by a transaction that started before that moment
        and holds locks since it wrote: one of those writers (later ones allocate above M and do
        not matter). Wait until every one of them has finished: then every value <= M is
        committed or gone, and the bound is just above M. A writer that stays open longer than
        writer_wait_seconds() holds the bound where the last run left it, just above the
        watermark (values at or below it were final then), or at NOTHING on a first load; the
        next run moves on. Without PROCESS the writers cannot be seen: the bound is just above
        M and the metadata says a late commit below it would be missed."""
        spec = plan.spec(plan.cursor)
        top, at = self.query(f"SELECT MAX({col_ref(plan.cursor)}), UNIX_TIMESTAMP(NOW(6)) FROM "
                             f"{_from(plan)}{_tenant_where(plan)}")[0]
        read = time.monotonic()
        facts: dict = {"cursor_max": str(top)}
        held = just_above(spec, after[0]) if after is not None and after[0] is not None else None
        free = just_above(spec, top) if top is not None else None
        writers = self._open_writers(not_before=read)
        if writers is None:
            facts["upper_basis"] = ("max-only (no PROCESS privilege to see open transactions: "
                                    "a value committed late below the bound is not delivered)")
            bound = free
        else:
            # a writer whose (never later than true) start is after the MAX read started after it
            older = {i: t for i, t in writers.items() if t <= float(at)}
            still = self._wait_for_writers(older)
            if not still:
                facts["upper_basis"] = "max+open-writers-finished"
                bound = free
            else:
                facts["upper_basis"] = "held (a writer open since before the max is still open)"
                facts["held_by_open_transaction_since"] = _utc(min(older[i] for i in still)
                                                              ).isoformat()
                facts["held_by_trx_ids"] = ",".join(str(i) for i in sorted(still))
                bound = None
        if held is not None and (bound is None or bound < held):
            bound = held          # never below what an earlier run already made final
        if bound is None:
            bound = NOTHING
        facts["upper_bound"] = str(bound)
        return bound, facts

    def _open_writers(self, not_before: float | None = None) -> dict[int, float] | None:
        """Open transactions that have written or locked rows: trx id → start (unix seconds,
        never later than the true start), from a listing of INNODB_TRX made after `not_before`
        (time.monotonic(); default now) — so every writer that began before an observation the
        caller made earlier (a MAX, the clock) and is still open is in it. A fresh listing
        another thread got after `not_before` is shared. None without the PROCESS privilege."""
        import pymysql

        not_before = time.monotonic() if not_before is None else not_before
        deadline = time.monotonic() + TRX_FRESH_TIMEOUT_S
        pause = TRX_CACHE_S
        with self._trx_lock:
            while True:
                snap = self._trx_snapshot
                if snap is not None and snap[0] >= not_before:
                    return snap[1]
                idle = pause - (time.monotonic() - self._trx_read_at)
                if idle > 0:
                    time.sleep(idle)
                asked = time.monotonic()
                nonce = uuid.uuid4().hex
                with self._errors("listing open transactions"):
                    conn = self.engine.raw_connection()
                    try:
                        cur = conn.cursor()
                        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                        try:
                            cur.execute(OPEN_TRX_SQL.format(nonce=nonce))
                        except pymysql.err.MySQLError as exc:
                            if exc.args and exc.args[0] in (1227, 1142):   # no PROCESS
                                return None
                            raise
                        rows = cur.fetchall()
                        conn.rollback()
                    finally:
                        conn.close()
                self._trx_read_at = time.monotonic()
                if any(r[2] for r in rows):
                    # a start that cannot be read is taken as the epoch: it holds everything
                    writers = {int(r[0]): float(r[1]) if r[1] is not None else 0.0
                               for r in rows if r[3]}
                    self._trx_snapshot = (asked, writers)
                    return writers
                pause = random.uniform(TRX_CACHE_S, min(TRX_BACKOFF_MAX_S, 2 * pause))
                if time.monotonic() >= deadline:
                    raise SourceUnavailable(
                        "information_schema.INNODB_TRX did not refresh within "
                        f"{TRX_FRESH_TIMEOUT_S:.0f} s (something reads it without pause), so open "
                        "transactions cannot be seen", hint="retry; find the session polling "
                        "INNODB_TRX (SHOW PROCESSLIST) if it persists")

    def _wait_for_writers(self, writers: dict[int, float]) -> set[int]:
        """Poll INNODB_TRX until none of `writers` is open, for up to writer_wait_seconds();
        return those still open. A writer this source already waited for in vain is not waited
        for again (one stuck session costs one wait per process, not one per table)."""
        pending = set(writers)
        deadline = time.monotonic() + writer_wait_seconds()
        while pending:
            now = self._open_writers()
            if now is None:
                break
            pending &= set(now)
            if not pending or pending <= self._stuck or time.monotonic() >= deadline:
                break
        if pending:
            self._stuck |= pending
        return pending

    def _clock(self) -> tuple[float, float | None, str]:
        now_s = float(self.query("SELECT UNIX_TIMESTAMP(NOW(6))")[0][0])
        read = time.monotonic()
        # Only transactions that have written or locked rows can hold rows stamped below
        # the bound; consistent reads (reports, checksums) take no locks and are ignored.
        writers = self._open_writers(not_before=read)
        if writers is None:
            return now_s, None, "lag-only (no PROCESS privilege to see open transactions)"
        return now_s, (min(writers.values()) if writers else None), "lag+open-transactions"

    # -- reading --------------------------------------------------------------------------
