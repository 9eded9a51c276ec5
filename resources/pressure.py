"""Read pressure: how many chunk reads may run at once on a source cluster, and how fast.

Every keyset query holds `ReadGovernor.slot()` while it streams, and calls `pace()` between the
chunks it hands on. The governor, one per cluster and process:
- admits a read only while the *measured* read pressure of the server is within the cluster's
  budget: a leaky bucket on the server's own counters (locally `SHOW GLOBAL STATUS`, on RDS a
  CloudWatch probe behind the same interface). The counters are server-wide, so every process
  reading the cluster sees the same overflow and backs off: their sum holds the budget;
- adapts how many reads run at once (additive increase while under budget, decrease when over),
  up to max_connections;
- caps concurrent reads across processes and Dagster runs with named locks on the source
  server (`GET_LOCK('hakobu:<cluster>:<i>')`): a crashed process releases its locks with its
  connection; nothing else to run or clean up;
- keeps reads inside the budget's time window, when one is set.
Throttled time, waits and the concurrency used are recorded for the asset metadata.
"""

import contextlib
import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol
from zoneinfo import ZoneInfo

from hakobu import cancel as stop
from hakobu.config import Cluster, ReadBudget

log = logging.getLogger("hakobu.pressure")


@dataclass(frozen=True)
class Observation:
    rate: float | None            # pages (or IOPS) per second since the previous observation
    pause: bool = False           # the probe says stop now (e.g. burst credits nearly gone)
    detail: dict = field(default_factory=dict)


class PressureProbe(Protocol):
    def observe(self) -> Observation: ...


class MySQLStatusProbe:
    """Read pressure from the server's own counters. Innodb_pages_read (pages read from disk)
    is the local stand-in for RDS ReadIOPS; Innodb_buffer_pool_read_requests counts logical
    page reads (the work, cached or not). Both move continuously during a long query."""

    COUNTERS = {"physical": "Innodb_pages_read", "logical": "Innodb_buffer_pool_read_requests"}

    def __init__(self, query, counter: str = "physical", clock=time.monotonic):
        self._query = query                      # callable(sql) -> rows, e.g. MySQLSource.query
        self.variable = self.COUNTERS[counter]
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self._lock = threading.Lock()

    def value(self) -> int:
        rows = self._query(f"SHOW GLOBAL STATUS LIKE '{self.variable}'")
        return int(rows[0][1])

    def observe(self) -> Observation:
        with self._lock:
            now, v = self._clock(), self.value()
            last, self._last = self._last, (now, v)
        if last is None or now <= last[0]:
            return Observation(None, detail={self.variable: v})
        return Observation((v - last[1]) / (now - last[0]), detail={self.variable: v})


class CloudWatchProbe:
    """RDS/Aurora: ReadIOPS and BurstBalance from CloudWatch. Pauses reads before burst
    credits run out (BurstBalance below `burst_floor` percent). Needs boto3 and
    cloudwatch:GetMetricData; `client` may be injected (tests use a recorded one)."""

    def __init__(self, db_instance: str, region: str, *, burst_floor: float = 25.0,
                 client=None, clock=time.time):
        self.db_instance, self.region, self.burst_floor = db_instance, region, burst_floor
        self._client = client
        self._clock = clock

    @property
    def client(self):
        if self._client is None:
            import boto3  # only where RDS is used

            self._client = boto3.client("cloudwatch", region_name=self.region)
        return self._client

    def observe(self) -> Observation:
        end = dt.datetime.fromtimestamp(self._clock(), tz=dt.timezone.utc)
        queries = [{"Id": q, "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": "AWS/RDS", "MetricName": name,
                       "Dimensions": [{"Name": "DBInstanceIdentifier",
                                       "Value": self.db_instance}]},
            "Period": 60, "Stat": "Average"}}
            for q, name in (("iops", "ReadIOPS"), ("burst", "BurstBalance"))]
        resp = self.client.get_metric_data(MetricDataQueries=queries,
                                           StartTime=end - dt.timedelta(minutes=5), EndTime=end,
                                           ScanBy="TimestampDescending")
        latest = {r["Id"]: (r["Values"][0] if r.get("Values") else None)
                  for r in resp["MetricDataResults"]}
        burst = latest.get("burst")
        return Observation(latest.get("iops"),
                           pause=burst is not None and burst < self.burst_floor,
                           detail={"ReadIOPS": latest.get("iops"), "BurstBalance": burst})


class ServerSlots:
    """A cross-process semaphore of n slots made of named locks on the source server."""

    def __init__(self, connect, cluster_name: str, n: int):
        self._connect = connect                  # callable() -> DB-API connection
        self.names = [f"hakobu:{cluster_name}:{i}"[:64] for i in range(n)]
        self._idle: list = []
        self._lock = threading.Lock()

    def try_acquire(self):
        conn = self._conn()
        cur = conn.cursor()
        for name in self.names:
            cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
            if cur.fetchone()[0] == 1:
                cur.close()
                return conn, name
        cur.close()
        self._give_back(conn)
        return None

    def release(self, held) -> None:
        conn, name = held
        try:
            cur = conn.cursor()
            cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
            cur.fetchall()
            cur.close()
            self._give_back(conn)
        except Exception:  # a dead control connection has released its lock already
            with contextlib.suppress(Exception):
                conn.close()

    def _conn(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn) -> None:
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            with contextlib.suppress(Exception):
                c.close()


class ReadGovernor:
    def __init__(self, name: str, budget: ReadBudget | None, *, probe: PressureProbe | None = None,
                 slots: ServerSlots | None = None, timezone: str = "UTC",
                 interval: float = 0.5, burst_seconds: float = 1.0,
                 clock=time.monotonic, sleep=time.sleep, wall=time.time):
        self.name = name
        self.budget = budget
        self.rate_limit = budget.pages_per_second if budget else None
        self.max_conn = budget.max_connections if budget else None
        self.allowed = self.max_conn or 0
        self.probe = probe if self.rate_limit else None
        self.slots = slots
        self.zone = ZoneInfo(timezone)
        self.interval, self.burst_seconds = interval, burst_seconds
        self._clock, self._sleep, self._wall = clock, sleep, wall
        self._cond = threading.Condition()
        self._active = 0
        self._excess = 0.0               # pages over budget not yet paid back
        self._last_obs = -1e18
        self._paused = False
        self.peak_concurrency = 0
        self.observed: list[tuple[float, float]] = []   # (t, rate)
        self._throttled: dict[tuple, float] = defaultdict(float)

    @classmethod
    def unlimited(cls) -> "ReadGovernor":
        return cls("unlimited", None)

    # -- feedback -------------------------------------------------------------------------

    def _observe_locked(self) -> None:
        now = self._clock()
        if self.probe is None or now - self._last_obs < self.interval:
            return
        dt_s = now - self._last_obs
        self._last_obs = now
        obs = self.probe.observe()
        self._paused = obs.pause
        if obs.rate is None or dt_s > 1e17:
            return
        self.observed.append((now, obs.rate))
        over = (obs.rate - self.rate_limit) * dt_s
        self._excess = max(0.0, self._excess + over)
        if obs.rate > self.rate_limit * 1.05 and self.allowed > 1:
            self.allowed -= 1                       # back off
        elif obs.rate < self.rate_limit * 0.7 and self.allowed < self.max_conn:
            self.allowed += 1                       # room left: one more at a time
        self._cond.notify_all()

    def _admissible_locked(self) -> bool:
        if self.max_conn is not None and self._active >= max(1, self.allowed):
            return False
        if self.probe is not None:
            if self._paused:
                return False
            if self._excess > self.rate_limit * self.burst_seconds:
                return False
        return True

    def _window_wait(self) -> float:
        """Seconds until the budget's time window opens (0 inside it or without one)."""
        window = self.budget.window if self.budget else None
        if not window:
            return 0.0
        start_s, end_s = window.split("-")
        now = dt.datetime.fromtimestamp(self._wall(), tz=self.zone)
        start = now.replace(hour=int(start_s[:2]), minute=int(start_s[3:]), second=0,
                            microsecond=0)
        end = now.replace(hour=int(end_s[:2]), minute=int(end_s[3:]), second=0, microsecond=0)
        if start <= end:
            inside = start <= now < end
        else:                                          # e.g. 22:00-05:00
            inside = now >= start or now < end
        if inside:
            return 0.0
        nxt = start if now < start else start + dt.timedelta(days=1)
        return (nxt - now).total_seconds()

    # -- the gate -------------------------------------------------------------------------

    def _admit(self, wait: bool, tenant: str = "", table: str = "") -> bool:
        """Count one more active read once the budget and the allowed concurrency admit it;
        without `wait`, only if they do right now. A stop (hakobu.stop) ends the wait."""
        with self._cond:
            while True:
                self._observe_locked()
                if self._admissible_locked():
                    self._active += 1
                    self.peak_concurrency = max(self.peak_concurrency, self._active)
                    return True
                if not wait:
                    return False
                stop.check(tenant or None, table or None)
                self._cond.wait(timeout=self.interval)

    def _release(self, held) -> None:
        if held is not None and self.slots is not None:
            self.slots.release(held)
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _note_wait(self, tenant: str, table: str, t0: float) -> None:
        waited = self._clock() - t0
        if waited > 0.001:
            with self._cond:
                self._throttled[(tenant, table)] += waited

    @contextlib.contextmanager
    def slot(self, tenant: str = "", table: str = ""):
        """Hold one read slot for the duration of a keyset query."""
        stop.check(tenant or None, table or None)    # a stop asked for: no new query
        t0 = self._clock()
        wait = self._window_wait()
        if wait > 0:
            log.info("%s: outside the read window %s, waiting %.0fs", self.name,
                     self.budget.window, wait)
            self._wait_window(wait, tenant, table)
        self._admit(wait=True, tenant=tenant, table=table)
        held = None
        try:
            if self.slots is not None:
                while (held := self.slots.try_acquire()) is None:
                    stop.check(tenant or None, table or None)
                    self._sleep(min(self.interval, 0.05))
            self._note_wait(tenant, table, t0)
            yield
        finally:
            self._release(held)

    @contextlib.contextmanager
    def try_slot(self, tenant: str = "", table: str = ""):
        """One more slot only if it is free right now (inside the window, under budget, below
        the allowed concurrency, a server slot free): yields True, or False without waiting —
        and then holds nothing. For a read that already holds a slot and may widen
        (iter_parallel)."""
        if self._window_wait() > 0 or not self._admit(wait=False):
            yield False
            return
        held = self.slots.try_acquire() if self.slots is not None else None
        if self.slots is not None and held is None:
            self._release(None)
            yield False
            return
        try:
            yield True
        finally:
            self._release(held)

    def pace(self, tenant: str = "", table: str = "") -> None:
        """Between the chunks of one streamed query (its slot held): wait while the server's
        measured reads are over budget or the probe says pause. With the pymysql reader the
        server stops with the consumer (TCP back-pressure); connectorx reads the rest of the
        query ahead (at most rows_per_query, about 64 MiB), so there the pause takes effect at
        the next query."""
        if self.probe is None:
            return
        t0 = self._clock()
        with self._cond:
            while True:
                self._observe_locked()
                if not self._paused and self._excess <= self.rate_limit * self.burst_seconds:
                    break
                stop.check(tenant or None, table or None)
                self._cond.wait(timeout=self.interval)
        self._note_wait(tenant, table, t0)

    def _wait_window(self, seconds: float, tenant: str, table: str) -> None:
        """Sleep until the read window opens, in steps a stop can cut short."""
        left = seconds
        while left > 0:
            stop.check(tenant or None, table or None)
            self._sleep(min(left, 1.0))
            left -= 1.0

    def throttled_seconds(self, tenant: str, table: str) -> float:
        with self._cond:
            return self._throttled.get((tenant, table), 0.0)

    def stats(self) -> dict:
        with self._cond:
            rates = [r for _, r in self.observed]
        return {"governor_budget_pages_per_s": self.rate_limit or 0,
                "governor_peak_concurrency": self.peak_concurrency,
                "governor_allowed_concurrency": self.allowed,
                "governor_mean_observed_rate": round(sum(rates) / len(rates), 1) if rates
                else 0.0}


def make_governor(cluster: Cluster, source=None) -> ReadGovernor:
    """The cluster's read governor. With a source, it measures the server's counters (when the
    budget caps pages per second) and holds the cluster's connection slots across processes."""
    budget = cluster.read_budget
    probe = slots = None
    if source is not None:
        if budget.pages_per_second:
            probe = MySQLStatusProbe(source.query, budget.counter)
        slots = ServerSlots(source.raw_connect, cluster.name, budget.max_connections)
    return ReadGovernor(cluster.name, budget, probe=probe, slots=slots,
                        timezone=cluster.timezone)
