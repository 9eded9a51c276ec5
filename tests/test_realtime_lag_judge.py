"""hakobu.realtime_lag.judge_lag, pure: the lag is how far behind the source the stream has
read (the checkpoint's acked_at), not only how recently it recorded a checkpoint — a stream
that is alive but slowly catching up fails too, and each failure says which it is."""

import datetime as dt

from hakobu.realtime import STREAMING, RealtimeState
from hakobu.realtime_lag import judge_lag

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)
STATE = RealtimeState(STREAMING, "{}", 1, 0)


def facts(checkpoint_ago: float, acked_ago: float | None) -> dict:
    return {"state": STATE, "checkpoint_at": NOW - dt.timedelta(seconds=checkpoint_ago),
            "acked_at": None if acked_ago is None else NOW - dt.timedelta(seconds=acked_ago),
            "newest_change_at": None, "unmerged": 0, "oldest_unmerged_at": None}


def judge(f):
    return judge_lag(f, NOW, max_lag_s=300, merge_every_s=600)


def test_caught_up_passes_with_the_acked_lag():
    v = judge(facts(10, 12))
    assert v.passed and v.lag_seconds == 12


def test_alive_but_behind_fails_as_catching_up():
    v = judge(facts(5, 1800))                 # recorded 5 s ago, read up to 30 min ago
    assert not v.passed and v.lag_seconds == 1800
    assert "catching up" in v.description and "is `hakobu stream` running" not in v.description


def test_down_fails_as_not_running():
    v = judge(facts(600, 610))
    assert not v.passed and "is `hakobu stream` running?" in v.description


def test_a_checkpoint_without_acked_at_is_judged_by_its_age():
    assert judge(facts(30, None)).lag_seconds == 30
    assert not judge(facts(400, None)).passed
