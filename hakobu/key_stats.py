"""Key stats remembered between nights: what sizes a table's checksum buckets without a
COUNT/MIN/MAX query on BigQuery every night (hakobu.checksums.compare_table(remember=True)).

On BigQuery every query is a job of about a second; the nightly key check of a table was three
(the stats, then one aggregate per side). Remembered stats only decide how finely the keys are
cut into buckets: any bucketing compares every key (hakobu.bucketing), and both sides of one
comparison always use the same one, so stale stats cost precision of a repair, never
correctness. The destination keeps them in its state table (a `<table>#keys` row, read with
the watermarks and written with them, resources.bigquery_state).
"""

from hakobu.bucketing import choose_bucketing
from hakobu.plan import TablePlan
from hakobu.ports import KeyStats

# Remembered stats size the buckets for this many nights, then are queried again — sooner when
# the table's row count moved by more than DRIFT.
REMEMBER_NIGHTS = 7
DRIFT = 0.25


def recall(dest, table: str, plan: TablePlan, night: int) -> KeyStats | None:
    memo = dest.read_key_stats(table)
    if not memo or not memo.get("rows"):
        return None
    probe = choose_bucketing(plan, 1)
    if memo.get("column") != (probe.column if probe.ranged else None) \
            or memo.get("prefix") != (probe.mode == "prefix") \
            or not 0 <= night - int(memo.get("night", 0)) < REMEMBER_NIGHTS:
        return None
    return KeyStats(int(memo["rows"]), memo.get("lo"), memo.get("hi"), memo.get("distinct"))


def _memo(plan: TablePlan, stats: KeyStats, night: int) -> dict:
    probe = choose_bucketing(plan, 1)
    as_text = (lambda v: None if v is None else str(v))
    return {"rows": stats.rows, "lo": as_text(stats.lo), "hi": as_text(stats.hi),
            "distinct": stats.distinct, "column": probe.column if probe.ranged else None,
            "prefix": probe.mode == "prefix", "night": night}


def keep_stats(dest, table: str, plan: TablePlan, stats: KeyStats, fresh: bool,
               source_rows: int, night: int, run_id: str) -> None:
    """After a comparison: remember freshly queried stats; forget remembered ones the table
    has outgrown (the next comparison queries them again)."""
    if fresh:
        dest.write_key_stats(table, _memo(plan, stats, night), run_id)
    elif abs(source_rows - stats.rows) > DRIFT * max(stats.rows, 1):
        dest.write_key_stats(table, {"rows": 0}, run_id)
