"""A strict BigQuery layer: an HTTP proxy in front of the emulator that enforces the limits real
BigQuery enforces and the emulator does not, and takes as long per job as real BigQuery does.

The emulator runs every job at once, in any number, on any table. Real BigQuery does not (each
number, with its source, in docs/bigquery-limits.md):
- mutating DML (UPDATE, DELETE, MERGE): 2 run per table at once, 20 more wait PENDING; the next
  one fails ("Too many DML statements outstanding against table ..., limit is 20");
- INSERT DML: the first 1,500 per table per day run at once; after that 10 run and 100 wait;
- table writes: load, copy and query jobs that write a table share 1,500 per table per day (failed
  ones count); DML statements count towards it but are not failed by it;
- query jobs per project: a number run at once, up to 1,000 interactive ones wait; the next
  jobs.insert is refused (403 quotaExceeded);
- each job takes about a second or more.

So jobs are asynchronous here as there: jobs.insert (and the final chunk of a resumable load
upload) answers at once with a PENDING job; a worker thread waits for the job's slots (per table,
per project; all at once, oldest first), forwards the original request to the upstream (the
emulator, or tests/bq_live.py in front of it), holds the slots for the configured latency, then
marks the job DONE. jobs.get and jobs.getQueryResults answer PENDING/RUNNING (jobComplete false)
until then, and are forwarded afterwards. jobs.query (synchronous) waits for its job the same way.
A job over a limit fails as BigQuery fails it: the job is created DONE with BigQuery's
errorResult (DML queue, table writes), or jobs.insert is refused with BigQuery's HTTP error
(project queue). Everything else is forwarded unchanged.

Counters (per table: DML statements, writes; peaks; quota errors) are read with `stats()`;
`advance_day()` starts a new simulated day (the daily counters), `reset()` forgets everything.
Limits not modelled here (documented): partitioned-table modification limits, the 5-per-10-s
table metadata update rate, the rolling (not daily) refill of the write quota, DML statement
conflicts ("Could not serialize access..."), the 6-hour maximum queue time.

Stdlib only (http.server, threading), like tests/bq_live.py; usable from tests and bench/.
"""
import http.client
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from hakobu.localenv.strict_http import _HOP, _Handler
from hakobu.localenv.strict_rules import (  # noqa: F401  (the names callers import from here)
    JobPlan, Refusal, StrictLimits, classify, dml_outstanding, query_queue_full,
    table_writes_exceeded)

@dataclass
class TableStats:
    dml_statements: int = 0      # mutating + INSERT statements admitted
    mutating_dml: int = 0
    insert_dml: int = 0
    writes_today: int = 0        # towards table_writes_per_day (DML included)
    writes_total: int = 0
    peak_dml_running: int = 0
    peak_dml_queued: int = 0
    quota_errors: int = 0


@dataclass
class _Job:
    project: str
    job_id: str
    location: str | None
    configuration: dict
    plan: JobPlan
    keys: list                   # [(key, limit)] slots the job must hold
    created_ms: int
    state: str = "PENDING"
    started_ms: int | None = None
    refusal: Refusal | None = None
    answer: tuple | None = None  # (status, headers, data) from upstream
    done: threading.Event = field(default_factory=threading.Event)
    seq: int = 0
    upload: bool = False         # a resumable load: the upstream names the job itself, so
    #                              jobs.get is answered from the upstream's final answer

    def resource(self) -> dict:
        status = {"state": self.state}
        if self.refusal:
            status.update(errorResult=self.refusal.error_proto(),
                          errors=[self.refusal.error_proto()])
        stats = {"creationTime": str(self.created_ms)}
        if self.started_ms:
            stats["startTime"] = str(self.started_ms)
        if self.state == "DONE":
            stats["endTime"] = str(_ms())
        ref = {"projectId": self.project, "jobId": self.job_id}
        if self.location:
            ref["location"] = self.location
        return {"kind": "bigquery#job", "id": f"{self.project}:{self.job_id}",
                "jobReference": ref, "configuration": self.configuration, "status": status,
                "statistics": stats}


def _ms() -> int:
    return int(time.time() * 1000)


class StrictBigQuery:
    """The layer. `StrictBigQuery(upstream_url, StrictLimits(job_latency_s=0.05)).start()`,
    then point the client at `.url`."""

    def __init__(self, upstream: str, limits: StrictLimits | None = None):
        self.upstream = upstream.rstrip("/")
        self.limits = limits or StrictLimits()
        self.url = ""
        self._cond = threading.Condition()
        self._running: dict = {}          # slot key -> running jobs
        self._waiting: dict = {}          # slot key -> {seq} of admitted jobs waiting
        self._jobs: dict = {}             # (project, job_id) -> _Job
        self._uploads: dict = {}          # upload_id -> (project, initiation body)
        self._seq = 0
        self._server = None
        self.reset()

    # -- counters --------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every counter and the day (not jobs still running)."""
        with self._cond:
            self.day = 0
            self.tables: dict[str, TableStats] = {}
            self._inserts_today: dict[str, int] = {}
            self.quota_errors = {"dml_outstanding": 0, "table_writes": 0, "query_queue": 0}
            self.jobs_total = 0
            self.queries_total = 0
            self.peak_queries_running = 0
            self.peak_queries_queued = 0
            self.latency_s_total = 0.0

    def advance_day(self, days: int = 1) -> None:
        """A new simulated day: the per-day write and INSERT counts start again."""
        with self._cond:
            self.day += days
            self._inserts_today.clear()
            for s in self.tables.values():
                s.writes_today = 0

    def stats(self) -> dict:
        """A snapshot for tests and benchmarks."""
        with self._cond:
            return {"day": self.day, "jobs": self.jobs_total, "queries": self.queries_total,
                    "peak_queries_running": self.peak_queries_running,
                    "peak_queries_queued": self.peak_queries_queued,
                    "latency_s_total": round(self.latency_s_total, 3),
                    "quota_errors": dict(self.quota_errors),
                    "tables": {t: dict(vars(s)) for t, s in sorted(self.tables.items())}}

    def _table(self, t: str) -> TableStats:
        return self.tables.setdefault(t, TableStats())

    # -- admission and slots ---------------------------------------------------------------

    def _admit(self, job: _Job) -> Refusal | None:
        """Under the lock: refuse the job as BigQuery would, or count it and queue it."""
        lim, plan = self.limits, job.plan
        if plan.dry_run:
            return None
        keys = []
        if plan.is_query:
            key = ("project", job.project)
            if self._outstanding(key) >= lim.project_queries_running + lim.project_queries_queued:
                self.quota_errors["query_queue"] += 1
                return query_queue_full()
            keys.append((key, lim.project_queries_running))
        for t in sorted(plan.mutating):
            key = ("dml", t)
            if self._outstanding(key) >= lim.mutating_dml_running + lim.mutating_dml_queued:
                self._table(t).quota_errors += 1
                self.quota_errors["dml_outstanding"] += 1
                return dml_outstanding(t, lim.mutating_dml_queued)
            keys.append((key, lim.mutating_dml_running))
        for t in sorted(plan.inserts):
            if self._inserts_today.get(t, 0) < lim.insert_dml_unqueued_per_day:
                continue
            key = ("insert", t)
            if self._outstanding(key) >= lim.insert_dml_running + lim.insert_dml_queued:
                self._table(t).quota_errors += 1
                self.quota_errors["dml_outstanding"] += 1
                return dml_outstanding(t, lim.insert_dml_queued)
            keys.append((key, lim.insert_dml_running))
        for t in sorted(plan.writes):
            if self._table(t).writes_today >= lim.table_writes_per_day:
                self._table(t).quota_errors += 1
                self.quota_errors["table_writes"] += 1
                return table_writes_exceeded()
        # admitted: count it (failed jobs count too: from here on, whatever the upstream says)
        for t in plan.writes | plan.dml_writes:
            s = self._table(t)
            s.writes_today += 1
            s.writes_total += 1
        for t in plan.mutating:
            s = self._table(t)
            s.dml_statements += 1
            s.mutating_dml += 1
        for t in plan.inserts:
            s = self._table(t)
            s.dml_statements += 1
            s.insert_dml += 1
            self._inserts_today[t] = self._inserts_today.get(t, 0) + 1
        self._seq += 1
        job.seq, job.keys = self._seq, keys
        for key, _ in keys:
            self._waiting.setdefault(key, set()).add(job.seq)
        if self._can_start(job):          # free slots: it runs now, it never was queued
            self._start(job)
        self._note_peaks()
        return None

    def _outstanding(self, key) -> int:
        return self._running.get(key, 0) + len(self._waiting.get(key, ()))

    def _can_start(self, job: _Job) -> bool:
        for key, limit in job.keys:
            ahead = sum(1 for s in self._waiting.get(key, ()) if s < job.seq)
            if self._running.get(key, 0) + ahead >= limit:
                return False
        return True

    def _start(self, job: _Job) -> None:
        for key, _ in job.keys:
            self._waiting[key].discard(job.seq)
            self._running[key] = self._running.get(key, 0) + 1
        job.state, job.started_ms = "RUNNING", _ms()

    def _acquire(self, job: _Job) -> None:
        with self._cond:
            if job.state == "RUNNING":
                return
            while not self._can_start(job):
                self._cond.wait(timeout=1.0)
            self._start(job)
            self._note_peaks()

    def _release(self, job: _Job) -> None:
        with self._cond:
            for key, _ in job.keys:
                self._running[key] -= 1
            self._cond.notify_all()

    def _note_peaks(self) -> None:
        for (kind, name), n in list(self._running.items()):
            if kind == "project":
                self.peak_queries_running = max(self.peak_queries_running, n)
            elif kind in ("dml", "insert"):
                s = self._table(name)
                s.peak_dml_running = max(s.peak_dml_running, n)
        for (kind, name), w in list(self._waiting.items()):
            if kind == "project":
                self.peak_queries_queued = max(self.peak_queries_queued, len(w))
            elif kind in ("dml", "insert"):
                s = self._table(name)
                s.peak_dml_queued = max(s.peak_dml_queued, len(w))

    # -- running a job ---------------------------------------------------------------------

    def submit(self, project: str, configuration: dict, job_ref: dict | None,
               request: tuple, upload: bool = False) -> _Job:
        """Admit (or refuse) a job and start it; `request` (method, path, headers, body) is
        what the upstream executes."""
        job_ref = job_ref or {}
        job = _Job(project=job_ref.get("projectId", project),
                   job_id=job_ref.get("jobId") or f"strict_{uuid.uuid4().hex}",
                   location=job_ref.get("location"), configuration=configuration,
                   plan=classify(project, configuration), keys=[], created_ms=_ms(),
                   upload=upload)
        with self._cond:
            job.refusal = self._admit(job)
            self.jobs_total += 1
            if job.plan.is_query:
                self.queries_total += 1
            if job.refusal is None or job.refusal.kind != "query_queue":
                self._jobs[(job.project, job.job_id)] = job
        if job.refusal:
            job.state = "DONE"
            job.done.set()
        else:
            threading.Thread(target=self._run, args=(job, request), daemon=True).start()
        return job

    def _run(self, job: _Job, request: tuple) -> None:
        latency = 0.0 if job.plan.dry_run else self.limits.job_latency_s
        try:
            self._acquire(job)
            t0 = time.monotonic()
            try:
                job.answer = self.forward(*request)
            except OSError as exc:
                msg = json.dumps({"error": {"code": 502, "message": f"upstream: {exc}"}})
                job.answer = (502, {"Content-Type": "application/json"}, msg.encode())
            rest = latency - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
            with self._cond:
                self.latency_s_total += max(latency, time.monotonic() - t0)
        finally:
            self._release(job)
            job.state = "DONE"
            job.done.set()

    def forward(self, method: str, path: str, headers: dict, body: bytes | None) -> tuple:
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
        try:
            conn.request(method, path, body=body,
                         headers={k: v for k, v in headers.items() if k.lower() not in _HOP})
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
        finally:
            conn.close()
        return resp.status, out, data

    def job(self, project: str, job_id: str) -> _Job | None:
        with self._cond:
            return self._jobs.get((project, job_id))

    # -- serving ---------------------------------------------------------------------------

    def start(self, port: int = 0) -> "StrictBigQuery":
        server = ThreadingHTTPServer(("127.0.0.1", port),
                                     type("Handler", (_Handler,), {"layer": self}))
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_strict(upstream: str, limits: StrictLimits | None = None) -> StrictBigQuery:
    return StrictBigQuery(upstream, limits).start()
