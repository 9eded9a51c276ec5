"""How far a realtime table is behind, judged (pure; the facts come from BigQuery through
resources.changelog.RealtimeDataset.lag_facts; the Dagster check `realtime_lag` in
assets/realtime.py reports the verdict).

Two delays, because a realtime table has two readers:
- `lag_seconds`: how far behind the source the tenant's newest recorded checkpoint is: now
  minus its `acked_at` (every commit up to then is in the change log — the commit time of the
  last one read while catching up, the time of a server heartbeat once caught up; see
  BinlogReader.acked_at), or minus the time it was recorded for a checkpoint without one.
  `hakobu stream` records one after every flush with rows and at least every 60 s otherwise
  (the heartbeat), only once every change up to it is in the change log: so this is how stale
  `<table>_live` can be — a stream that is down, stuck, failing or slowly catching up makes it
  grow. Failed above `max_lag_minutes`, saying which of the two it is.
- `merge_lag_seconds`: the age of the oldest change not merged into `<table>` yet (0 when none).
  Up to `merge_every_minutes` of it is the design; failed above merge_every_minutes +
  max_lag_minutes (a merge that keeps failing, a stream that never reaches its merge).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hakobu.deadlines import human
from hakobu.realtime import STREAMING


@dataclass(frozen=True)
class LagVerdict:
    passed: bool
    description: str
    lag_seconds: float | None
    merge_lag_seconds: float
    unmerged_changes: int
    newest_change_at: dt.datetime | None = None
    checkpoint_at: dt.datetime | None = None


def judge_lag(facts: dict, now: dt.datetime, *, max_lag_s: float,
              merge_every_s: float) -> LagVerdict:
    """facts: RealtimeDataset.lag_facts' dict (state, checkpoint_at, newest_change_at,
    unmerged, oldest_unmerged_at)."""
    state, at = facts["state"], facts["checkpoint_at"]
    unmerged = int(facts.get("unmerged") or 0)
    oldest = facts.get("oldest_unmerged_at")
    merge_lag = max(0.0, (now - oldest).total_seconds()) if unmerged and oldest else 0.0
    base = dict(merge_lag_seconds=merge_lag, unmerged_changes=unmerged,
                newest_change_at=facts.get("newest_change_at"), checkpoint_at=at)
    if state is None:
        return LagVerdict(False, "not streaming: never snapshotted — is `hakobu stream` "
                                 "running for its cluster?", None, **base)
    if state.phase != STREAMING:
        return LagVerdict(False, "not streaming yet: its snapshot is being read (or was "
                                 "interrupted: rerun `hakobu stream`)", None, **base)
    if at is None:
        return LagVerdict(False, "no checkpoint recorded: `hakobu stream` has not streamed "
                                 "this tenant yet", None, **base)
    age = max(0.0, (now - at).total_seconds())
    acked = facts.get("acked_at")
    lag = max(age, (now - acked).total_seconds()) if acked is not None else age
    problems = []
    if age > max_lag_s:
        problems.append(f"the stream's last checkpoint is {human(age)} old (allowed "
                        f"{human(max_lag_s)}): is `hakobu stream` running?")
    elif lag > max_lag_s:
        problems.append(f"the stream is running (checkpoint {human(age)} ago) but has read the "
                        f"source only up to {human(lag)} ago (allowed {human(max_lag_s)}): it "
                        "is catching up, or reads slower than the source writes")
    if merge_lag > merge_every_s + max_lag_s:
        problems.append(f"{unmerged} change(s) wait {human(merge_lag)} for their merge "
                        f"(allowed {human(merge_every_s + max_lag_s)}): see the stream's log")
    if problems:
        return LagVerdict(False, "; ".join(problems), lag, **base)
    return LagVerdict(True, f"behind by {human(lag)}; {unmerged} change(s) not merged yet"
                            + (f", the oldest {human(merge_lag)} old" if unmerged else ""),
                      lag, **base)
