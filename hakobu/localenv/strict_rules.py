"""The strict BigQuery layer's rules (hakobu.localenv.strict_bq): its limits, how a job is
classified (which tables it writes, whether as mutating DML), and the errors BigQuery answers
when a limit is hit. Pure; every number and its source: docs/bigquery-limits.md."""

import json
import os
import re
from dataclasses import dataclass, field, fields, replace


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
