"""The night's runs: a coordinator that plays the compressed schedules into per-cluster queues
(the parent), and the run workers that execute each tenant's `nightly` partition run (children).

Why this is the production layout's equivalent (deploy/dagster.yaml): there, each tenant's
schedule puts a run tagged hakobu/cluster and hakobu/tenant into the QueuedRunCoordinator's
queue; the daemon dequeues oldest first while `max_concurrent_runs` (16), the per-cluster tag
limit (2 per unique hakobu/cluster) and the per-tenant limit (1) allow, and the run launcher
starts a worker that executes the job in-process (`in_process_executor`) against the
PostgreSQL instance. Here the coordinator does the same admission: a FIFO queue per cluster,
as many worker processes per cluster as the per-cluster limit (so at most `limit` runs of a
cluster at once, 3 x 2 = 6 <= 16 overall, each tenant once per night), and each worker runs
`nightly.execute_in_process(partition_key=tenant)` with the schedule's tags on a
DagsterInstance whose run and event storage is PostgreSQL (the same storage class, schema and
writes as the production instance). What it does not pay: the daemon's dequeue tick (up to
`dequeue_interval_seconds`, 5 s) and the start of a fresh worker process per run (imports and
code-location load, seconds); the workers are long-lived, like a warm code server. Both are
reported in bench/night_analysis.md as figures to add, not hidden.

A worker reports per run: wall (execute_in_process), engine (time inside hakobu.sync.
sync_tenant, the asset's call into the engine), BigQuery jobs (query and load jobs created by
the client) with the seconds each took until its result and the wall time with at least one
job outstanding, and the table results. A worker runs one tenant at a time, so everything its
process does during a run is that tenant's.
"""

import collections
import functools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.night_report import busy_seconds

REPO = Path(__file__).resolve().parent.parent
MERGE = "!merge"                 # a worker's input: run the warehouse merge step


@dataclass
class Jobs:
    """BigQuery jobs of the current run, as the client saw them (start to result)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    spans: list = field(default_factory=list)        # (t0, t1)
    created: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)

    def reset(self) -> None:
        with self.lock:
            self.spans, self.created, self.kinds = [], 0, collections.Counter()

    def summary(self) -> dict:
        with self.lock:
            spans = list(self.spans)
            created, kinds = self.created, dict(self.kinds)
        return {"jobs": created, "job_s_sum": round(sum(b - a for a, b in spans), 3),
                "job_wall_s": round(busy_seconds(spans), 3), "kinds": kinds}


def job_kind(name: str, sql: str | None) -> str:
    """What a job is for, from the client call and its SQL (the night's job breakdown): the
    statement, and for SELECTs which of hakobu's reads it is."""
    if name != "query":
        return "load"
    s = " ".join((sql or "").split()).upper()
    state = "`_HAKOBU_STATE`" in s or "._HAKOBU_STATE" in s
    first = s.split(" ", 1)[0] if s else "?"
    if first == "SELECT":
        if state:
            return "state read"
        if " AS B, COUNT(*) AS N, BIT_XOR(" in s:
            return "content digest"
        if " AS B, COUNT(*) AS N" in s:
            return "key checksum"
        if "AS `_B`" in s:
            return "row listing"
        if s.startswith("SELECT COUNT(*) AS N FROM"):
            return "count"
        return "select"
    if first == "MERGE":
        return "merge state" if state else "merge"
    if first == "CREATE":
        return "replace as select" if " AS SELECT " in s else "create table"
    return first.lower()


def instrument(jobs: Jobs, engine: dict) -> None:
    """Count and time the client's jobs; time the asset's call into the engine. Patches in this
    worker process only (measurement, not behaviour)."""
    from google.cloud import bigquery   # late: the worker's own imports, not the parent's
    from google.cloud.bigquery import job as bqjob

    import assets.customer as customer   # late: patched here, in the worker only

    def creating(orig):
        @functools.wraps(orig)
        def wrapped(*a, **kw):
            t0 = time.perf_counter()
            job = orig(*a, **kw)
            kind = job_kind(orig.__name__, a[1] if len(a) > 1 else kw.get("query"))
            with jobs.lock:
                jobs.created += 1
                jobs.kinds[kind] += 1
            job._night_t0 = t0
            return job
        return wrapped

    def finishing(orig):
        @functools.wraps(orig)
        def wrapped(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                t0 = getattr(self, "_night_t0", None)
                if t0 is not None:
                    self._night_t0 = None       # counted once (rows() calls result() again)
                    with jobs.lock:
                        jobs.spans.append((t0, time.perf_counter()))
        return wrapped

    for name in ("query", "load_table_from_file"):
        setattr(bigquery.Client, name, creating(getattr(bigquery.Client, name)))
    for cls in (bqjob.QueryJob, bqjob.LoadJob):
        cls.result = finishing(cls.result)
    orig_sync = customer.sync_tenant

    @functools.wraps(orig_sync)
    def timed_sync(*a, **kw):
        t0 = time.perf_counter()
        try:
            out = orig_sync(*a, **kw)
        finally:
            engine["s"] = engine.get("s", 0.0) + time.perf_counter() - t0
        engine["results"] = [{"table": r.table, "ok": r.ok, "error": r.error,
                              "rows_read": r.rows_read, "warehouse": r.warehouse,
                              "throttled_s": round(r.throttled_s, 3), "mode": r.mode}
                             for r in out]
        return out

    customer.sync_tenant = timed_sync


def worker(root: str) -> int:
    """A run worker: tenant ids on stdin, one JSON line per finished run on stdout."""
    import dagster as dg                              # late: worker only

    from hakobu.config import load_config             # late: worker only
    from hakobu.launch import run_error               # late: worker only
    from pipelines.build import NIGHTLY, build_definitions, job_run_config, run_tags  # late: same
    from assets.warehouse_merge import MERGE_ASSET, MERGE_JOB   # late: worker only

    cfg = load_config(Path(root))
    defs = build_definitions(cfg)
    nightly = defs.resolve_job_def(NIGHTLY)
    merge = defs.resolve_job_def(MERGE_JOB) if cfg.warehouse and cfg.warehouse.enabled else None
    instance = dg.DagsterInstance.get()
    jobs, engine = Jobs(), {}
    instrument(jobs, engine)
    run_config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                  **job_run_config(NIGHTLY)}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        tid = line.strip()
        if not tid:
            continue
        jobs.reset()
        engine.clear()
        t0 = time.perf_counter()
        if tid == MERGE:
            print(json.dumps(_merge_run(merge, instance, jobs, MERGE_ASSET)), flush=True)
            continue
        try:
            res = nightly.execute_in_process(partition_key=tid, instance=instance,
                                             raise_on_error=False, run_config=run_config,
                                             tags=run_tags(cfg, tid))
            ok, run_id = res.success, res.run_id
            error = None if ok else _why(res, run_error(res)[0])
        except Exception as exc:        # noqa: BLE001 — reported as a failed run
            ok, run_id, error = False, None, f"{type(exc).__name__}: {exc}"[:500]
        wall = time.perf_counter() - t0
        failed = [r for r in engine.get("results", []) if not r["ok"] or r["warehouse"] == "failed"]
        print(json.dumps({"tenant": tid, "ok": ok, "run_id": run_id, "wall_s": round(wall, 3),
                          "engine_s": round(engine.get("s", 0.0), 3), **jobs.summary(),
                          "rows_read": sum(r["rows_read"] for r in engine.get("results", [])),
                          "throttled_s": round(sum(r["throttled_s"]
                                                   for r in engine.get("results", [])), 3),
                          "failed_tables": failed[:8], "error": error}), flush=True)
    instance.dispose()
    return 0


def _merge_run(job, instance, jobs: "Jobs", asset) -> dict:
    """One run of the `merge_warehouse` job (the schedule's): every pending slice, one MERGE
    per warehouse table, then the merged slices' checks."""
    t0 = time.perf_counter()
    res = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "hakobu/warehouse_merge": "1"})
    md = {}
    if res.success:
        [ev] = instance.fetch_materializations(asset, limit=1).records
        md = {k: v.value for k, v in ev.asset_materialization.metadata.items()
              if k != "tables"}
    return {"merge": True, "ok": res.success, "wall_s": round(time.perf_counter() - t0, 3),
            **jobs.summary(), **md,
            "error": None if res.success else _why(res, "the run failed")}


def _why(result, line: str) -> str:
    """The step's failure line, or the run failure's innermost error (a failure outside the
    step: resources, the instance)."""
    if line != "the run failed":
        return line[:500]
    for e in result.all_events:
        err = getattr(e.event_specific_data, "error", None)
        if e.event_type_value == "PIPELINE_FAILURE" and err is not None:
            while err.cause is not None:
                err = err.cause
            return f"{err.cls_name}: {err.message.strip()}"[:500]
    return line


# --- the coordinator (parent side) ----------------------------------------------------------

class Worker:
    """One run-worker process and the thread that feeds it from its cluster's queue."""

    def __init__(self, root: Path, env: dict, log):
        full = dict(os.environ, **env)
        full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.night_run", str(root)],
                                     cwd=REPO, env=full, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(env["NIGHT_LOG"], "ab"),
                                     text=True, bufsize=1)

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        if not line.startswith("{"):
            raise RuntimeError(f"night worker did not start (exit {self.proc.poll()}); "
                               "see the worker log")

    def run(self, tid: str) -> dict:
        self.proc.stdin.write(tid + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"tenant": tid, "ok": False, "error": f"worker died ({self.proc.poll()})",
                    "wall_s": 0.0, "engine_s": 0.0, "jobs": 0, "job_s_sum": 0.0,
                    "job_wall_s": 0.0, "rows_read": 0, "throttled_s": 0.0, "failed_tables": []}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Coordinator:
    """Per-cluster FIFO queues with `per_cluster` workers each (the tag limit)."""

    def __init__(self, root: Path, clusters: list[str], env: dict, per_cluster: int, log=print):
        self.workers = {c: [Worker(root, env, log) for _ in range(per_cluster)]
                        for c in clusters}
        self.merger = Worker(root, env, log)       # the merge_warehouse schedule's runs
        for w in [self.merger, *(w for ws in self.workers.values() for w in ws)]:
            w.wait_ready()
        self.log = log
        self.merges: list[dict] = []

    def _merging(self, t0: float, every_s: float | None, done: threading.Event) -> None:
        """The merge step every `every_s` while runs go on (None: only at the end), then once
        after the last run: what completes the warehouse."""
        while every_s and not done.wait(every_s):
            self._merge(t0)
        done.wait()
        self._merge(t0)

    def _merge(self, t0: float) -> None:
        start = time.monotonic() - t0
        rec = self.merger.run(MERGE)
        rec.update(start_s=round(start, 3), end_s=round(time.monotonic() - t0, 3))
        self.merges.append(rec)
        if not rec["ok"]:
            self.log(f"  night: merge step FAILED: {rec.get('error')}")

    def night(self, plan: list[tuple[str, str, float]], t0: float | None = None,
              merge_every_s: float | None = None) -> list[dict]:
        """Play (tenant, cluster, due offset in seconds) from t0; each run's record gains
        due/start/end (seconds after t0) and its cluster; the merge step runs every
        merge_every_s and once after the last run (its records in self.merges). Returns when
        every run and the last merge have ended."""
        t0 = time.monotonic() if t0 is None else t0
        self.merges, finished = [], threading.Event()
        merging = threading.Thread(target=self._merging, args=(t0, merge_every_s, finished),
                                   daemon=True)
        merging.start()
        queues = {c: queue.Queue() for c in self.workers}
        out, lock = [], threading.Lock()

        def feed():
            for tid, cluster, due in sorted(plan, key=lambda p: p[2]):
                delay = t0 + due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                queues[cluster].put((tid, due))
            for c, ws in self.workers.items():
                for _ in ws:
                    queues[c].put(None)

        def drain(cluster: str, w: Worker):
            while (item := queues[cluster].get()) is not None:
                tid, due = item
                start = time.monotonic() - t0
                rec = w.run(tid)
                rec.update(cluster=cluster, due_s=round(due, 3), start_s=round(start, 3),
                           end_s=round(time.monotonic() - t0, 3))
                with lock:
                    out.append(rec)
                    done = len(out)
                if not rec["ok"]:
                    self.log(f"  night: run {tid} FAILED: {rec.get('error') or rec['failed_tables']}")
                elif done % 25 == 0 or done == len(plan):
                    self.log(f"  night: {done}/{len(plan)} runs done, "
                             f"{time.monotonic() - t0:.0f}s")

        threads = [threading.Thread(target=feed, daemon=True)]
        threads += [threading.Thread(target=drain, args=(c, w), daemon=True)
                    for c, ws in self.workers.items() for w in ws]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        finished.set()
        merging.join()
        return out

    def close(self) -> None:
        for w in [self.merger, *(w for ws in self.workers.values() for w in ws)]:
            w.close()


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
