"""Planning the night, pure: when will each cluster's runs finish, and who will be late.

The input is what the Dagster instance knows at `now` (hakobu.tonight gathers it): per tenant
the run that has to meet its next deadline — done, running (since when), queued, or still to
be scheduled — with the run's expected duration; other runs that hold a cluster's slots
(a backfill); and how many runs the queue lets run at once, per cluster and in all.

`plan` replays the queue as Dagster's QueuedRunCoordinator works it: runs in the order they
joined the queue (a scheduled run: its cron tick), each started as soon as its cluster has a
free slot, the instance-wide limit allows, and no other run of its tenant is going (the
per-tenant limit of 1); a blocked run lets later runs of other clusters pass. A run finishes
at start + expected. A run going for longer than expected is taken to finish now, at the
earliest — the forecast is then a lower bound, and says so.

What a cluster's forecast says: the predicted end of its night (the last finish), the earliest
deadline among its tenants not delivered yet, and the margin — the tightest of those tenants'
own margins (deadline − predicted finish), negative when one is predicted late. The margin is
not "earliest deadline − end of the night": a tenant due at 04:00 that finishes at 02:00 is on
time even when another, due at 07:00, ends the night at 05:00.
"""

import datetime as dt
from dataclasses import dataclass, field

DONE, RUNNING, QUEUED, SCHEDULED, FAILED = "done", "running", "queued", "scheduled", "failed"
WAITING = (QUEUED, SCHEDULED)


@dataclass(frozen=True)
class Estimate:
    """An expected run duration and what it rests on ("history of 5 runs")."""

    seconds: float
    basis: str


@dataclass(frozen=True)
class NightRun:
    """One run of the night as the instance tells it. `queued_at`: its place in the queue (the
    cron tick of a scheduled run, the creation of a queued one); `deadline` None: a run with no
    promise of its own (a backfill), which still holds a slot."""

    tenant: str
    cluster: str
    state: str
    queued_at: dt.datetime
    expected: Estimate
    deadline: dt.datetime | None = None
    started: dt.datetime | None = None
    finished: dt.datetime | None = None       # done or failed: when
    job: str = "nightly"


@dataclass(frozen=True)
class Limits:
    """How many runs at once: per cluster (None: no limit) and in all (None: no limit), and
    where that was read (shown to the operator)."""

    per_cluster: dict[str, int | None]
    total: int | None = None
    basis: str = ""

    def of(self, cluster: str) -> int | None:
        return self.per_cluster.get(cluster)


@dataclass(frozen=True)
class Forecast:
    """A run's predicted (or, once done, actual) start and finish against its deadline."""

    run: NightRun
    start: dt.datetime | None
    finish: dt.datetime | None                # None: failed, or can never start
    overrun_s: float = 0.0                    # running this much longer than expected

    @property
    def margin_s(self) -> float | None:
        if self.run.deadline is None or self.finish is None:
            return None
        return (self.run.deadline - self.finish).total_seconds()

    @property
    def late(self) -> bool:
        """Predicted (or delivered) after its deadline, or failed with nothing to retry it."""
        if self.run.deadline is None:
            return False
        return self.finish is None or self.finish > self.run.deadline


@dataclass(frozen=True)
class ClusterForecast:
    cluster: str
    slots: int | None
    runs: list[Forecast] = field(default_factory=list)

    def count(self, *states: str) -> int:
        return sum(1 for f in self.runs if f.run.state in states)

    @property
    def tenants(self) -> list[str]:
        return sorted({f.run.tenant for f in self.runs if f.run.deadline is not None})

    @property
    def finish(self) -> dt.datetime | None:
        """The end of the night: the last run's (predicted) finish."""
        ends = [f.finish for f in self.runs if f.finish is not None]
        return max(ends) if ends else None

    @property
    def pending(self) -> list[Forecast]:
        """The tenants' runs not delivered yet (running, queued, scheduled or failed)."""
        return [f for f in self.runs if f.run.deadline is not None and f.run.state != DONE]

    @property
    def earliest_deadline(self) -> Forecast | None:
        left = self.pending
        return min(left, key=lambda f: f.run.deadline) if left else None

    @property
    def margin_s(self) -> float | None:
        """The tightest margin among the tenants not delivered yet (negative: one is late);
        None when all are delivered, or the only ones left failed."""
        margins = [f.margin_s for f in self.pending if f.margin_s is not None]
        return min(margins) if margins else None

    @property
    def late(self) -> list[Forecast]:
        """The tenants not delivered yet that are predicted late (or failed), latest first."""
        out = [f for f in self.pending if f.late]
        return sorted(out, key=lambda f: (f.margin_s is not None, f.margin_s or 0.0))

    @property
    def lower_bound(self) -> bool:
        return any(f.overrun_s > 0 for f in self.runs)


def plan(runs: list[NightRun], limits: Limits, now: dt.datetime) -> list[ClusterForecast]:
    """Every cluster's forecast, in cluster order (a cluster with no runs is left out)."""
    done = [_settled(r) for r in runs if r.state in (DONE, FAILED)]
    going = [_going(r, now) for r in runs if r.state == RUNNING]
    waiting = sorted((r for r in runs if r.state in WAITING),
                     key=lambda r: (r.queued_at, r.tenant, r.job))
    started = _replay(waiting, going, limits, now)
    by_cluster: dict[str, list[Forecast]] = {}
    for f in done + going + started:
        by_cluster.setdefault(f.run.cluster, []).append(f)
    return [ClusterForecast(c, limits.of(c), sorted(fs, key=_order))
            for c, fs in sorted(by_cluster.items())]


def _order(f: Forecast):
    return (f.start or f.run.queued_at, f.run.tenant, f.run.job)


def _settled(r: NightRun) -> Forecast:
    return Forecast(r, r.started, r.finished if r.state == DONE else None)


def _going(r: NightRun, now: dt.datetime) -> Forecast:
    start = r.started or now
    finish = start + dt.timedelta(seconds=r.expected.seconds)
    if finish >= now:
        return Forecast(r, start, finish)
    return Forecast(r, start, now, overrun_s=(now - finish).total_seconds())


def _replay(waiting: list[NightRun], going: list[Forecast], limits: Limits,
            now: dt.datetime) -> list[Forecast]:
    """Start the waiting runs in queue order whenever the limits allow (an event loop over
    finishes and schedule ticks): the queue's own rule, which skips a blocked run."""
    active = [(f.finish, f.run) for f in going]
    out: list[Forecast] = []
    queue = list(waiting)
    t = now
    while queue:
        active = [(end, r) for end, r in active if end > t]
        for r in list(queue):
            if max(r.queued_at, now) <= t and _fits(r, [a for _, a in active], limits):
                end = t + dt.timedelta(seconds=r.expected.seconds)
                out.append(Forecast(r, t, end))
                active.append((end, r))
                queue.remove(r)
        events = [end for end, _ in active if end > t] + \
                 [max(r.queued_at, now) for r in queue if max(r.queued_at, now) > t]
        if not events:              # a limit of 0: what is left never starts
            out += [Forecast(r, None, None) for r in queue]
            break
        t = min(events)
    return out


def _fits(r: NightRun, active: list[NightRun], limits: Limits) -> bool:
    if any(a.tenant == r.tenant for a in active):
        return False                # two runs of one tenant never overlap
    if limits.total is not None and len(active) >= limits.total:
        return False
    cap = limits.of(r.cluster)
    return cap is None or sum(1 for a in active if a.cluster == r.cluster) < cap
