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

TROUBLESHOOT = "https://cloud.google.com/bigquery/docs/troubleshoot-quotas"


@dataclass(frozen=True)
class StrictLimits:
    """Every limit of the layer; the defaults are real BigQuery's (docs/bigquery-limits.md)."""
    mutating_dml_running: int = 2          # per table
    mutating_dml_queued: int = 20          # per table; the next one fails
    insert_dml_unqueued_per_day: int = 1500  # per table: these INSERTs run at once
    insert_dml_running: int = 10           # per table, past the 1,500
    insert_dml_queued: int = 100           # per table, past the 1,500
    table_writes_per_day: int = 1500       # per table: load, copy, query jobs writing it
    project_queries_running: int = 100     # per project (real on-demand: dynamic, see docs)
    project_queries_queued: int = 1000     # per project, interactive queries
    job_latency_s: float = 1.0             # per job, while it holds its slots

    @classmethod
    def from_env(cls, **overrides) -> "StrictLimits":
        """The defaults, with HAKOBU_STRICT_BQ_<FIELD> (e.g. HAKOBU_STRICT_BQ_JOB_LATENCY_S=0.2)
        and then `overrides` applied."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"HAKOBU_STRICT_BQ_{f.name.upper()}")
            if raw is not None:
                values[f.name] = float(raw) if f.type in (float, "float") else int(raw)
        return replace(cls(), **{**values, **overrides})


# -- classifying a job ------------------------------------------------------------------------

@dataclass
class JobPlan:
    """What a job does to tables, as the limits see it. Tables are 'project.dataset.table'."""
    kind: str                                    # query, load, copy, extract, other
    mutating: set = field(default_factory=set)   # UPDATE / DELETE / MERGE targets
    inserts: set = field(default_factory=set)    # INSERT targets
    writes: set = field(default_factory=set)     # jobs that write a table: counted and limited
    dml_writes: set = field(default_factory=set)  # DML targets: counted, never failed for it
    dry_run: bool = False

    @property
    def is_query(self) -> bool:
        return self.kind == "query"


_REF = r"((?:`[^`]+`|[A-Za-z_][\w\-]*)(?:\s*\.\s*(?:`[^`]+`|[A-Za-z_][\w\-]*)){0,2})"
_STATEMENTS = [
    ("mutating", re.compile(r"MERGE\s+(?:INTO\s+)?" + _REF, re.I)),
    ("mutating", re.compile(r"UPDATE\s+" + _REF, re.I)),
    ("mutating", re.compile(r"DELETE\s+(?:FROM\s+)?" + _REF, re.I)),
    ("insert", re.compile(r"INSERT\s+(?:INTO\s+)?" + _REF, re.I)),
    ("truncate", re.compile(r"TRUNCATE\s+TABLE\s+" + _REF, re.I)),
    ("create", re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?TABLE\s+"
                          r"(?:IF\s+NOT\s+EXISTS\s+)?" + _REF, re.I)),
]
_CTAS = re.compile(r"\bAS\s*\(?\s*(SELECT|WITH)\b", re.I)
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.S)


def _statements(sql: str) -> list[str]:
    """The statements of a query or script, comments removed (split on ';' outside literals)."""
    out, cur, i, n = [], [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            triple = sql[i:i + 3] == ch * 3
            end = ch * 3 if triple else ch
            j = i + len(end)
            while j < n and sql[j:j + len(end)] != end:
                j += 2 if sql[j] == "\\" else 1
            cur.append(sql[i:j + len(end)])
            i = j + len(end)
        elif sql.startswith("--", i) or ch == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif ch == ";":
            out.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(ch)
            i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def _table_key(text: str, project: str, default_ds: dict | None) -> str | None:
    parts = [p for chunk in re.findall(r"`([^`]+)`|([A-Za-z_][\w\-]*)", text)
             for p in (chunk[0] or chunk[1]).split(".")]
    if len(parts) == 1 and default_ds:
        parts = [default_ds.get("projectId", project), default_ds["datasetId"], parts[0]]
    elif len(parts) == 2:
        parts = [project, *parts]
    if len(parts) != 3:
        return None                 # an unqualified temp table in a script, say: not counted
    return ".".join(parts).split("$")[0]


def _ref(tr: dict | None) -> str | None:
    if not tr or not tr.get("tableId"):
        return None
    return f"{tr['projectId']}.{tr['datasetId']}.{tr['tableId'].split('$')[0]}"


def classify(project: str, configuration: dict) -> JobPlan:
    """The JobPlan of a job from its configuration (jobs.insert) — pure, testable alone."""
    if "load" in configuration:
        plan = JobPlan("load")
        if (t := _ref(configuration["load"].get("destinationTable"))):
            plan.writes.add(t)
        return plan
    if "copy" in configuration:
        plan = JobPlan("copy")
        if (t := _ref(configuration["copy"].get("destinationTable"))):
            plan.writes.add(t)
        return plan
    if "extract" in configuration:
        return JobPlan("extract")
    q = configuration.get("query")
    if q is None:
        return JobPlan("other")
    plan = JobPlan("query", dry_run=bool(configuration.get("dryRun")))
    if (t := _ref(q.get("destinationTable"))):
        plan.writes.add(t)
    default_ds = q.get("defaultDataset")
    for stmt in _statements(q.get("query", "")):
        for what, rx in _STATEMENTS:
            m = rx.match(stmt)
            if not m:
                continue
            t = _table_key(m.group(1), project, default_ds)
            if t is None:
                break
            if what == "mutating":
                plan.mutating.add(t)
                plan.dml_writes.add(t)
            elif what == "insert":
                plan.inserts.add(t)
                plan.dml_writes.add(t)
            elif what == "truncate":
                plan.dml_writes.add(t)
            elif what == "create" and _CTAS.search(_LITERAL.sub("''", stmt[m.end():])):
                plan.writes.add(t)      # CREATE TABLE ... AS SELECT: a query job writing it
            break
    plan.dml_writes -= plan.writes
    return plan


# -- errors, shaped as BigQuery's ------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    kind: str            # dml_outstanding, table_writes, query_queue
    reason: str
    message: str
    http_status: int
    location: str | None = None

    def error_proto(self) -> dict:
        e = {"reason": self.reason, "message": self.message}
        if self.location:
            e["location"] = self.location
        return e

    def http_body(self) -> bytes:
        status = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED"}.get(self.http_status, "")
        return json.dumps({"error": {"code": self.http_status, "message": self.message,
                                     "errors": [{**self.error_proto(), "domain": "global"}],
                                     "status": status}}).encode()


def dml_outstanding(table: str, limit: int) -> Refusal:
    p, d, t = table.split(".", 2)
    return Refusal("dml_outstanding", "resourcesExceeded",
                   "Resources exceeded during query execution: Too many DML statements "
                   f"outstanding against table {p}:{d}.{t}, limit is {limit}", 400)


def table_writes_exceeded() -> Refusal:
    return Refusal("table_writes", "quotaExceeded",
                   "Quota exceeded: Your table exceeded quota for imports or query appends per "
                   f"table. For more information, see {TROUBLESHOOT}", 403,
                   location="load_job_per_table.long")


def query_queue_full() -> Refusal:
    return Refusal("query_queue", "quotaExceeded",
                   "Quota exceeded: Your project_and_region exceeded quota for max number of jobs "
                   f"that can be queued per project. For more information, see {TROUBLESHOOT}",
                   403, location="max_queued_jobs")


# -- state ------------------------------------------------------------------------------------

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


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
_JOBS = re.compile(r"^/bigquery/v2/projects/([^/]+)/jobs/?(\?.*)?$")
_QUERY = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries/?(\?.*)?$")
_JOB = re.compile(r"^/bigquery/v2/projects/([^/]+)/(jobs|queries)/([^/?]+)(/cancel)?(\?.*)?$")
_UPLOAD = re.compile(r"^/upload/bigquery/v2/projects/([^/]+)/jobs")


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


def _json(data: bytes) -> dict:
    try:
        out = json.loads(data or b"{}")
        return out if isinstance(out, dict) else {}
    except ValueError:
        return {}


def _final_chunk(headers) -> bool:
    """The PUT that completes a resumable upload (Content-Range: bytes a-b/total or */total)."""
    m = re.match(r"bytes\s+(\*|(\d+)-(\d+))/(\d+)", headers.get("Content-Range", ""))
    if not m:
        return False
    return m.group(1) == "*" or int(m.group(3)) + 1 == int(m.group(4))


class _Handler(BaseHTTPRequestHandler):
    """One request; `layer` is set on the subclass StrictBigQuery.start() makes."""
    layer: StrictBigQuery
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self) -> bytes | None:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else None

    def _request(self, body) -> tuple:
        return self.command, self.path, dict(self.headers.items()), body

    def _dispatch(self):
        body = self._body()
        path = urlsplit(self.path).path
        if self.command == "POST" and (m := _JOBS.match(path)):
            return self._insert(m.group(1), body)
        if self.command == "POST" and (m := _QUERY.match(path)):
            return self._query(m.group(1), body)
        if (m := _UPLOAD.match(path)):
            return self._upload(m.group(1), body)
        if self.command in ("GET", "POST") and (m := _JOB.match(path)):
            job = self.layer.job(m.group(1), m.group(3))
            if job is not None and (not job.done.is_set() or job.refusal or job.upload
                                    or (job.answer and job.answer[0] != 200)):
                return self._known_job(job, m.group(2), m.group(4))
        self._reply(*self.layer.forward(*self._request(body)))

    # jobs.insert: answer at once, the job runs behind
    def _insert(self, project, body):
        req = _json(body)
        job = self.layer.submit(project, req.get("configuration", {}), req.get("jobReference"),
                           self._request(body))
        self._answer_submitted(job)

    def _answer_submitted(self, job):
        if job.refusal and job.refusal.kind == "query_queue":
            return self._reply(job.refusal.http_status, {}, job.refusal.http_body())
        self._json_reply(job.resource())

    # jobs.query: synchronous, the job waits its turn here
    def _query(self, project, body):
        req = _json(body)
        config = {"query": {k: v for k, v in req.items()
                            if k in ("query", "defaultDataset", "useLegacySql")}}
        if req.get("dryRun"):
            config["dryRun"] = True
        ref = {"projectId": project, "jobId": f"strict_{uuid.uuid4().hex}"}
        job = self.layer.submit(project, config, ref, self._request(body))
        job.done.wait()
        if job.refusal:
            return self._reply(job.refusal.http_status, {}, job.refusal.http_body())
        self._reply(*job.answer)

    # resumable load uploads: the initiation says what the job is, the last chunk runs it
    def _upload(self, project, body):
        qs = parse_qs(urlsplit(self.path).query)
        upload_id = (qs.get("upload_id") or [None])[0]
        if self.command == "PUT" and upload_id and _final_chunk(self.headers):
            with self.layer._cond:
                meta = self.layer._uploads.pop(upload_id, None)
            if meta is not None:
                req = _json(meta)
                job = self.layer.submit(project, req.get("configuration", {}),
                                   req.get("jobReference"), self._request(body),
                                   upload=True)
                return self._answer_submitted(job)
        status, headers, data = self.layer.forward(*self._request(body))
        if self.command == "POST" and status == 200:
            loc = headers.get("Location") or headers.get("location")
            if loc:
                new = urlsplit(loc)
                new_id = (parse_qs(new.query).get("upload_id") or [None])[0]
                if new_id:
                    with self.layer._cond:
                        self.layer._uploads[new_id] = body or b"{}"
                headers = {k: v for k, v in headers.items() if k.lower() != "location"}
                headers["Location"] = self.layer.url + new.path + (f"?{new.query}" if new.query
                                                             else "")
        self._reply(status, headers, data)

    # a job this layer knows and the upstream does not (yet)
    def _known_job(self, job, which, cancel):
        if which == "queries" and not cancel:
            qs = parse_qs(urlsplit(self.path).query)
            wait_ms = int((qs.get("timeoutMs") or ["10000"])[0])
            job.done.wait(min(wait_ms, 10000) / 1000)
            if job.done.is_set() and not job.refusal and job.answer[0] == 200:
                return self._reply(*self.layer.forward(*self._request(None)))
            if job.refusal:
                return self._reply(job.refusal.http_status, {}, job.refusal.http_body())
            if job.done.is_set():      # the upstream refused the request itself
                return self._reply(*job.answer)
            return self._json_reply({"kind": "bigquery#getQueryResultsResponse",
                                     "jobReference": job.resource()["jobReference"],
                                     "jobComplete": False})
        if job.done.is_set() and not job.refusal:
            status, headers, data = job.answer
            if status == 200 and job.upload:     # the upstream's job, under our name
                res = _json(data)
                res["jobReference"] = job.resource()["jobReference"]
                res["id"] = f"{job.project}:{job.job_id}"
                data = json.dumps({"kind": "bigquery#jobCancelResponse", "job": res}
                                  if cancel else res).encode()
            return self._reply(status, headers, data)
        res = job.resource()
        self._json_reply({"kind": "bigquery#jobCancelResponse", "job": res} if cancel
                         else res)

    def _json_reply(self, obj):
        self._reply(200, {"Content-Type": "application/json"}, json.dumps(obj).encode())

    def _reply(self, status: int, headers: dict, data: bytes):
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        if not any(k.lower() == "content-type" for k in headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch


def start_strict(upstream: str, limits: StrictLimits | None = None) -> StrictBigQuery:
    return StrictBigQuery(upstream, limits).start()
