"""The night's planner, pure (hakobu.night_plan): the queue replayed with its limits, and what
a cluster's forecast says — no Dagster, no database."""

import datetime as dt

from hakobu.night_plan import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    SCHEDULED,
    Estimate,
    Limits,
    NightRun,
    plan,
)

UTC = dt.UTC
T = dt.datetime(2026, 11, 22, 2, 0, tzinfo=UTC)          # the tick of every tenant below
HOUR = Estimate(3600, "history of 5 runs")


def at(minutes: float) -> dt.datetime:
    return T + dt.timedelta(minutes=minutes)


def run(tenant, state=SCHEDULED, cluster="east", queued=0, deadline=90, expected=HOUR,
        started=None, finished=None, job="nightly") -> NightRun:
    return NightRun(tenant, cluster, state, at(queued), expected,
                    None if deadline is None else at(deadline),
                    None if started is None else at(started),
                    None if finished is None else at(finished), job)


def one(forecasts, cluster="east"):
    [c] = [c for c in forecasts if c.cluster == cluster]
    return c, {f.run.tenant: f for f in c.runs}


def test_two_slots_queue_the_third_tenant_past_its_deadline():
    runs = [run("a"), run("b", queued=0.5), run("c", queued=1)]     # all due 03:30, 1 h each
    c, by = one(plan(runs, Limits({"east": 2}), now=at(-60)))
    assert by["a"].start == at(0) and by["b"].start == at(0.5)
    assert by["c"].start == at(60) and by["c"].finish == at(120)     # a's slot, at 03:00
    assert [f.run.tenant for f in c.late] == ["c"]
    assert c.finish == at(120) and c.margin_s == -30 * 60            # late by 30 min
    assert c.earliest_deadline.run.deadline == at(90)
    assert (c.count(DONE), c.count(RUNNING), c.count(QUEUED, SCHEDULED)) == (0, 0, 3)
    # the same night with three slots: everyone starts at the tick, 30 min to spare
    c, by = one(plan(runs, Limits({"east": 3}), now=at(-60)))
    assert by["c"].start == at(1) and not c.late and c.margin_s == 29 * 60
    # and with no per-cluster limit but one run at a time in all
    c, by = one(plan(runs, Limits({"east": None}, total=1), now=at(-60)))
    assert [f.run.tenant for f in c.late] == ["c", "b"]          # the latest first
    assert by["c"].finish == at(180)


def test_a_run_longer_than_expected_ends_now_at_the_earliest():
    runs = [run("a", RUNNING, started=-60, expected=Estimate(1800, "history of 3 runs")),
            run("b", QUEUED)]
    c, by = one(plan(runs, Limits({"east": 1}), now=at(0)))
    assert by["a"].finish == at(0) and by["a"].overrun_s == 30 * 60
    assert by["b"].start == at(0) and by["b"].finish == at(60)
    assert c.lower_bound and not c.late
    # still within its expected time: it holds the slot to start + expected
    runs[0] = run("a", RUNNING, started=-10, expected=Estimate(1800, "history of 3 runs"))
    c, by = one(plan(runs, Limits({"east": 1}), now=at(0)))
    assert by["a"].finish == at(20) and by["b"].start == at(20) and not c.lower_bound


def test_a_blocked_run_lets_other_clusters_pass_under_the_total_limit():
    runs = [run("a", RUNNING, started=-30), run("b", QUEUED, queued=0),
            run("c", QUEUED, cluster="west", queued=5)]
    forecasts = plan(runs, Limits({"east": 1, "west": 1}, total=2), now=at(0))
    _, east = one(forecasts)
    _, west = one(forecasts, "west")
    assert west["c"].start == at(5)                  # not behind b, which waits for a's slot
    assert east["b"].start == at(30) and east["b"].finish == at(90)


def test_a_backfill_of_the_tenant_holds_its_slot_and_the_tenant():
    runs = [run("a", RUNNING, started=-30, deadline=None, job="backfill",
                expected=Estimate(7200, "history of 2 runs")),
            run("a", QUEUED), run("b", QUEUED, queued=1)]
    c, by_job = one(plan(runs, Limits({"east": 2}), now=at(0)))
    nightly = next(f for f in c.runs if f.run.tenant == "a" and f.run.job == "nightly")
    assert nightly.start == at(90)                   # one run of a tenant at a time
    assert by_job["b"].start == at(1)                # the second slot was free
    assert c.tenants == ["a", "b"] and [f.run.tenant for f in c.late] == ["a"]


def test_done_and_failed_runs():
    runs = [run("a", DONE, started=0, finished=40, deadline=60),
            run("b", FAILED, started=0, finished=10, deadline=120),
            run("c", QUEUED, deadline=240)]
    c, by = one(plan(runs, Limits({"east": 2}), now=at(50)))
    assert by["a"].finish == at(40) and not by["a"].late
    assert by["b"].finish is None and by["b"].late           # nothing retries it
    assert by["c"].start == at(50) and by["c"].finish == at(110)
    assert c.earliest_deadline.run.tenant == "b"              # a is delivered: not counted
    assert [f.run.tenant for f in c.late] == ["b"]
    assert c.margin_s == 130 * 60                             # c's; b has no finish
    assert c.finish == at(110)
