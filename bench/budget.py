"""Goal 3, budget compliance: the governor holds a cluster's read budget, measured on the server.

1. Unthrottled: one process reads the first `ROWS` rows of the base table in primary-key order
   (cold cache) with no budget; the server's Innodb_pages_read rate over the read is R.
2. Throttled: the same read with the cluster budget B = R / 2 pages/s. A sampler in this process
   reads the server counter every second. Measured: mean rate over the read ÷ B (target <= 1.10)
   and wall time ÷ ideal (pages ÷ B, target within 15 %).
3. Two processes read two halves at once, each with the same cluster budget B: the sum of their
   reads, measured on the server, holds B (the counters are server-wide, so both back off).
Reads run in child processes (as concurrent Dagster runs would), through hakobu's own
iter_chunks + governor_for (named-lock slots and the MySQLStatusProbe).
"""

import json
import subprocess
import sys
import threading
import time

from bench.report import Goal, Report

CHILD = r"""
import json, sys, time
from hakobu.config import Cluster
from resources.mysql_source import MySQLSource, iter_chunks
from resources.pressure import make_governor as governor_for
from resources.pressure import ReadGovernor
from hakobu.config import Tenant
from hakobu.planning import plan_for
a = json.loads(sys.argv[1])
budget = {"max_connections": 2}
if a["budget"]:
    budget.update(pages_per_second=a["budget"], counter="physical")
c = Cluster(name="bench_budget", host=a["host"], port=a["port"], user=a["user"],
            read_budget=budget)
src = MySQLSource(c)
t = Tenant(tenant="b", cluster="bench_budget", source={"schema": a["schema"]},
           destination={"project": "hakobu-bench", "dataset": "b"}, schedule={"cron": "0 2 * * *"},
           deliver_by="06:00", tables=[{"name": a["table"], "cursor": "updated_at",
                                        "chunk_rows": 20000}])
plan = plan_for(src, t, t.tables[0])
gov = governor_for(c, src) if a["budget"] else ReadGovernor.unlimited()
t0 = time.monotonic(); rows = 0
for b, _ in iter_chunks(src, plan, "full", None, None, gate=gov, pk_range=tuple(a["range"])):
    rows += b.num_rows
print(json.dumps({"rows": rows, "seconds": time.monotonic() - t0,
                  "throttled": sum(gov._throttled.values())}))
"""

ROWS_FULL, ROWS_QUICK = 2_000_000, 20_000


class Sampler:
    """Innodb_pages_read of the server, every second, in a thread of the parent."""

    def __init__(self, server):
        self.server, self.samples, self._stop = server, [], threading.Event()

    def value(self, conn) -> int:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_pages_read'")
            return int(cur.fetchone()[1])

    def __enter__(self):
        self.conn = self.server.connect()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.samples.append((time.monotonic(), self.value(self.conn)))
        self.t.start()
        return self

    def _run(self):
        while not self._stop.wait(1.0):
            self.samples.append((time.monotonic(), self.value(self.conn)))

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()
        self.samples.append((time.monotonic(), self.value(self.conn)))
        self.conn.close()

    def pages(self) -> int:
        return self.samples[-1][1] - self.samples[0][1]

    def seconds(self) -> float:
        return self.samples[-1][0] - self.samples[0][0]

    def per_second(self) -> list[float]:
        return [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(self.samples, self.samples[1:])
                if b[0] > a[0]]


def _children(ctx, budget: int | None, ranges: list[tuple[int, int]]) -> list[dict]:
    s = ctx.server
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(
        {"host": s.host, "port": s.port, "user": s.user, "schema": ctx.schema, "table": ctx.table,
         "budget": budget, "range": list(r)})], stdout=subprocess.PIPE, text=True)
        for r in ranges]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"budget child failed ({p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def budget(ctx, report: Report) -> None:
    rows = ROWS_QUICK if ctx.quick else min(ROWS_FULL, ctx.rows)
    whole = [(1, rows + 1)]
    halves = [(1, rows // 2 + 1), (rows // 2 + 1, rows + 1)]
    ctx.log(f"  budget: unthrottled read of {rows:,} rows ({ctx.cool(ctx.table)})")
    with Sampler(ctx.server) as free:
        [f] = _children(ctx, None, whole)
    free_rate = free.pages() / max(f["seconds"], 1e-6)
    if free.pages() < 500:
        report.goals.append(Goal("budget-compliance", None, "<=", 1.10, "x",
                                 f"the read took only {free.pages()} pages from disk (cached); "
                                 "nothing to throttle in this mode"))
        return
    b = max(50, int(free_rate / 2))
    ctx.log(f"  budget: unthrottled {free_rate:,.0f} pages/s → budget {b:,} pages/s "
            f"({ctx.cool(ctx.table)})")
    with Sampler(ctx.server) as one:
        [r1] = _children(ctx, b, whole)
    rate1 = one.pages() / one.seconds()
    ideal1 = one.pages() / b
    ctx.log(f"  budget: one process {rate1:,.0f} pages/s over {one.seconds():.1f}s "
            f"(ideal {ideal1:.1f}s) ({ctx.cool(ctx.table)})")
    with Sampler(ctx.server) as two:
        rs = _children(ctx, b, halves)
    rate2 = two.pages() / two.seconds()
    ideal2 = two.pages() / b
    ratio1, ratio2 = rate1 / b, rate2 / b
    per_s = sorted(one.per_second())
    p90 = per_s[int(0.9 * (len(per_s) - 1))] / b if per_s else 0.0
    report.goals.append(Goal("budget-compliance", max(ratio1, ratio2), "<=", 1.10, "x",
                             f"mean server read rate ÷ budget: one process {ratio1:.3f}x, two "
                             f"concurrent processes {ratio2:.3f}x (budget {b:,} pages/s = half of "
                             f"unthrottled {free_rate:,.0f})"))
    report.goals.append(Goal("budget-time", max(one.seconds() / ideal1, two.seconds() / ideal2),
                             "<=", 1.15, "x", "wall time ÷ (pages read ÷ budget), worst of one "
                             "and two processes"))
    report.fact("budget: per-second rate ÷ budget, one process, p90", f"{p90:.2f}x")
    report.fact("budget: time throttled (one process; two processes)",
                f"{r1['throttled']:.1f}s; " + ", ".join(f"{r['throttled']:.1f}s" for r in rs))
    report.section(
        "3. Budget compliance",
        "| run | pages read | seconds | rate (pages/s) | ÷ budget | ideal seconds |\n"
        "|---|---|---|---|---|---|\n"
        f"| unthrottled | {free.pages():,} | {f['seconds']:.1f} | {free_rate:,.0f} | – | – |\n"
        f"| one process, budget {b:,} | {one.pages():,} | {one.seconds():.1f} | {rate1:,.0f} | "
        f"{ratio1:.3f} | {ideal1:.1f} |\n"
        f"| two processes, same cluster budget | {two.pages():,} | {two.seconds():.1f} | "
        f"{rate2:,.0f} | {ratio2:.3f} | {ideal2:.1f} |\n\n"
        f"{rows:,} rows of `{ctx.table}` read in primary-key order from a cold buffer pool, in "
        "child processes through `iter_chunks` + `governor_for` (named-lock slots, "
        "`MySQLStatusProbe` on `Innodb_pages_read`, a leaky bucket with 1 s of burst). The rate is "
        "measured by a separate sampler on the server's counter, every second; the counter is "
        "server-wide, so other sessions' reads count against the budget too.")
