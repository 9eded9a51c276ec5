"""The governor's logic against scripted pressure signals (no server, no real time)."""

import datetime as dt
import threading

from hakobu.config import ReadBudget
from resources.pressure import CloudWatchProbe, Observation, ReadGovernor


class Script:
    """A probe that replays rates; then repeats the last one."""

    def __init__(self, *rates, pause_at=()):
        self.rates, self.i, self.pause_at = list(rates), 0, set(pause_at)

    def observe(self):
        r = self.rates[min(self.i, len(self.rates) - 1)]
        paused = self.i in self.pause_at
        self.i += 1
        return Observation(r, pause=paused)


class Ticking:
    """A clock that moves 0.1 s every time it is read."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 0.1
        return self.t


def gov(probe, pages=1000, conns=4, **kw):
    return ReadGovernor("c", ReadBudget(pages_per_second=pages, max_connections=conns),
                        probe=probe, interval=0.01, burst_seconds=1.0, clock=Ticking(),
                        sleep=lambda s: None, **kw)


def test_under_budget_reads_are_admitted_at_once():
    g = gov(Script(None, 500, 500))
    with g.slot("t", "a"):
        pass
    # two reads of the ticking clock (start, admitted), no waiting loop in between
    assert g.throttled_seconds("t", "a") < 0.25


def test_over_budget_blocks_until_the_excess_is_paid_back():
    # 5000 pages/s for a while, then quiet: admission waits for the debt to drain
    probe = Script(None, 5000, 5000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    g = gov(probe)
    with g._cond:
        g._observe_locked()           # baseline
        g._last_obs -= 1              # force the next observations
        g._observe_locked()
        g._last_obs -= 1
        g._observe_locked()
        assert not g._admissible_locked(), g._excess
    with g.slot("t", "a"):
        pass
    assert probe.i > 4                 # it observed quiet seconds before admitting
    assert g.throttled_seconds("t", "a") > 0


def test_concurrency_backs_off_and_recovers():
    g = gov(Script(None, *[5000] * 3, *[100] * 6), conns=4)
    assert g.allowed == 4
    with g._cond:
        for _ in range(4):
            g._last_obs -= 1
            g._observe_locked()
        low = g.allowed
        for _ in range(6):
            g._last_obs -= 1
            g._observe_locked()
        high = g.allowed
    assert low == 1 and high == 4


def test_concurrency_cap_holds_across_threads():
    g = ReadGovernor("c", ReadBudget(max_connections=2))
    active, peak, lock = [0], [0], threading.Lock()

    def reader():
        for _ in range(20):
            with g.slot():
                with lock:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                with lock:
                    active[0] -= 1

    ts = [threading.Thread(target=reader) for _ in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert peak[0] <= 2 and g.peak_concurrency <= 2


def test_probe_pause_blocks_new_reads():
    g = gov(Script(None, 10, 10, 10, pause_at={1, 2}))
    with g._cond:
        g._observe_locked()
        g._last_obs -= 1
        g._observe_locked()
        assert g._paused and not g._admissible_locked()
    with g.slot():
        pass


def test_time_window():
    tokyo_0200 = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    budget = ReadBudget(max_connections=1, window="01:00-05:00")
    inside = ReadGovernor("c", budget, timezone="Asia/Tokyo", wall=lambda: tokyo_0200.timestamp())
    assert inside._window_wait() == 0
    at_0600 = (tokyo_0200 + dt.timedelta(hours=4)).timestamp()
    outside = ReadGovernor("c", budget, timezone="Asia/Tokyo", wall=lambda: at_0600)
    assert outside._window_wait() == 19 * 3600
    overnight = ReadGovernor("c", ReadBudget(window="22:00-05:00"), timezone="Asia/Tokyo",
                             wall=lambda: tokyo_0200.timestamp())
    assert overnight._window_wait() == 0


def test_cloudwatch_probe_pauses_before_burst_credits_run_out():
    class Recorded:
        def __init__(self, iops, burst):
            self.iops, self.burst, self.calls = iops, burst, []

        def get_metric_data(self, **kw):
            self.calls.append(kw)
            return {"MetricDataResults": [{"Id": "iops", "Values": [self.iops]},
                                          {"Id": "burst", "Values": [self.burst]}]}

    healthy = CloudWatchProbe("db-1", "ap-northeast-1", client=Recorded(800.0, 90.0))
    obs = healthy.observe()
    assert obs.rate == 800.0 and not obs.pause
    q = healthy.client.calls[0]["MetricDataQueries"]
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in q} == {"ReadIOPS", "BurstBalance"}
    assert q[0]["MetricStat"]["Metric"]["Dimensions"][0]["Value"] == "db-1"
    low = CloudWatchProbe("db-1", "ap-northeast-1", client=Recorded(800.0, 12.0)).observe()
    assert low.pause


def test_try_slot_widens_only_onto_a_free_slot():
    """iter_parallel holds one slot and asks for more without waiting: granted below
    max_connections and under budget, refused (not queued) otherwise, and given back."""
    g = gov(Script(None, 100), conns=2)
    with g.slot("t", "a"):
        with g.try_slot("t", "a") as second:
            assert second is True and g._active == 2
            with g.try_slot("t", "a") as third:          # max_connections reached
                assert third is False and g._active == 2
        assert g._active == 1
    assert g._active == 0
    over = gov(Script(None, 50_000, 50_000), conns=4)
    with over._cond:
        over._observe_locked()
        over._last_obs -= 1
        over._observe_locked()                            # far over budget: a debt
    with over.try_slot("t", "a") as ok:
        assert ok is False and over._active == 0

    class Taken:                     # every named lock on the server is held by others
        def try_acquire(self):
            return None

    busy = gov(Script(None, 100), conns=4, slots=Taken())
    with busy.try_slot("t", "a") as ok:
        assert ok is False and busy._active == 0          # a refusal counts nothing as active


def test_a_stop_ends_a_wait_for_a_read_slot_at_once():
    """SIGTERM / Ctrl-C (hakobu.stop) reach reads waiting in the governor: they raise Stopped
    instead of waiting on (the CLI stops within seconds, worker threads included)."""
    import threading
    import time

    import pytest

    from hakobu import stop
    from hakobu.errors import Stopped

    gov = ReadGovernor("c", ReadBudget(max_connections=1))
    stop.reset()
    try:
        with gov.slot("t", "held"):
            threading.Timer(0.3, stop.request, args=("SIGTERM",)).start()
            t0 = time.monotonic()
            with pytest.raises(Stopped, match=r"t/waiting: stopped \(SIGTERM\)"):
                with gov.slot("t", "waiting"):
                    pass
            assert time.monotonic() - t0 < 2.0
        with pytest.raises(Stopped):           # and no new read starts
            with gov.slot("t", "next"):
                pass
    finally:
        stop.reset()
