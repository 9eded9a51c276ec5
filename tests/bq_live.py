"""The emulator behind a small HTTP layer that answers `tables.get` the way real BigQuery does.

bqemulator keeps a catalog of each table's schema that DDL statements do not update (measured
here): after `ALTER TABLE ... ADD COLUMN`, `DROP COLUMN` or `ALTER COLUMN ... SET DATA TYPE`
its `tables.get` still returns the schema the table was created with; it never reports the
precision and scale of NUMERIC/BIGNUMERIC columns (it reports BIGNUMERIC as NUMERIC), and it
drops column descriptions given in DDL (`OPTIONS(description=...)`). Real BigQuery's `tables.get`
reflects every DDL statement at once, with `precision`/`scale` and descriptions, and hakobu reads
table schemas that way (one API call, no query job).

So the tests talk to the emulator through this layer, which forwards every request unchanged and
only rewrites the answer of `tables.get`:
- the columns are the table's live columns in the emulator's DuckDB (`duckdb_columns()`, queried
  through the emulator), in order — added ones present, dropped ones gone;
- DECIMAL(p, s) columns are reported as NUMERIC(p, s), or BIGNUMERIC(p, s) when s > 9 or
  p - s > 29 (the emulator stores both as DuckDB DECIMAL; this is the rule hakobu's type contract
  and the emulator's own query results use), with `precision` and `scale`;
- column descriptions are the ones the DDL statements sent through this layer set (CREATE TABLE
  column OPTIONS, ADD COLUMN ... OPTIONS, ALTER COLUMN ... SET OPTIONS), forgotten when the
  column or table is dropped;
- with `count_rows` set (the tests that need it), `numRows` is the table's row count now (the
  emulator reports 0 whatever the table holds; real BigQuery keeps it current).
Everything else (jobs, loads, datasets, INFORMATION_SCHEMA) is the emulator's own behaviour.
"""

import http.client
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
_TABLE_GET = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/?]+)(\?.*)?$")
_DATASET = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/?]+)(\?.*)?$")
_JOBS = re.compile(r"^/bigquery/v2/projects/([^/]+)/(jobs|queries)(\?.*)?$")
_NAME = re.compile(r"[A-Za-z0-9_\-]+")

_REF = r"((?:`[^`]+`\.?)+)"
_CREATE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _REF,
                     re.I | re.S)
_ALTER = re.compile(r"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _REF + r"\s+(.*)$", re.I | re.S)
_DROP_TABLE = re.compile(r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _REF, re.I | re.S)
_ADD = re.compile(r"ADD\s+COLUMN\s+(?:IF\s+NOT\s+EXISTS\s+)?`?([A-Za-z0-9_]+)`?(.*)$", re.I | re.S)
_DROP_COL = re.compile(r"DROP\s+COLUMN\s+(?:IF\s+EXISTS\s+)?`?([A-Za-z0-9_]+)`?", re.I)
_SET_OPTIONS = re.compile(r"ALTER\s+COLUMN\s+`?([A-Za-z0-9_]+)`?\s+SET\s+OPTIONS\s*\((.*)\)\s*$",
                          re.I | re.S)
# a BigQuery string literal, escapes included (hakobu.sqlquote.bq_string writes \\ \' \n \xHH)
_DESCRIPTION = re.compile(r"description\s*=\s*(?:'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\")",
                          re.I | re.S)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"', "`": "`"}


def _literal(m: re.Match) -> str:
    """The text of the description literal matched by _DESCRIPTION."""
    raw = m.group(1) if m.group(1) is not None else m.group(2)
    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)",
                  lambda e: chr(int(e.group(1)[1:], 16)) if len(e.group(1)) > 1
                  else _UNESCAPE.get(e.group(1), e.group(1)), raw, flags=re.S)


def _ref_parts(text: str, project: str) -> tuple[str, str, str] | None:
    parts = [p for chunk in re.findall(r"`([^`]+)`", text) for p in chunk.split(".")]
    if len(parts) == 2:
        parts = [project, *parts]
    return tuple(parts) if len(parts) == 3 else None


def _description(text: str) -> str | None:
    m = re.search(r"OPTIONS\s*\((.*)\)", text, re.I | re.S)
    if not m:
        return None
    d = _DESCRIPTION.search(m.group(1))
    return _literal(d) if d else None


def _column_defs(body: str) -> list[tuple[str, str]]:
    """`(`a` INT64 OPTIONS(...), `b` NUMERIC(10, 2)) CLUSTER BY ...` → [(name, its definition)]."""
    start = body.find("(")
    if start < 0:
        return []
    depth, piece, pieces, quote, escaped = 0, "", [], None, False
    for ch in body[start:]:
        if quote:                       # inside a string literal: parentheses and commas count
            piece += ch                 # for nothing
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                break
        if ch == "," and depth == 1:
            pieces.append(piece)
            piece = ""
        else:
            piece += ch
    pieces.append(piece)
    out = []
    for p in pieces:
        m = re.match(r"\s*`?([A-Za-z0-9_]+)`?\s+(.*)$", p, re.S)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def _bq_type(duck: str) -> tuple[str, int | None, int | None]:
    t = duck.upper()
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        return ("BIGNUMERIC" if s > 9 or p - s > 29 else "NUMERIC"), p, s
    simple = {"BIGINT": "INTEGER", "INTEGER": "INTEGER", "SMALLINT": "INTEGER",
              "TINYINT": "INTEGER", "HUGEINT": "INTEGER", "DOUBLE": "FLOAT", "FLOAT": "FLOAT",
              "REAL": "FLOAT", "BOOLEAN": "BOOLEAN", "VARCHAR": "STRING", "BLOB": "BYTES",
              "DATE": "DATE", "TIMESTAMP": "DATETIME", "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
              "TIME": "TIME", "JSON": "JSON"}
    return simple.get(t, ""), None, None


_FAMILY = {"INTEGER": "int", "INT64": "int", "FLOAT": "float", "FLOAT64": "float",
           "BOOLEAN": "bool", "BOOL": "bool", "STRING": "text", "JSON": "text"}


@dataclass
class LiveSchemaProxy:
    upstream: str
    url: str = ""
    descriptions: dict = field(default_factory=dict)   # (project, dataset, table) -> {col: text}
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: object = None
    _client: object = None
    count_rows: bool = False      # answer numRows (a COUNT query per tables.get: when asked)

    # -- the emulator's live columns ----------------------------------------------------------

    def client(self):
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import bigquery

            self._client = bigquery.Client(project="hakobu-test",
                                           credentials=AnonymousCredentials(),
                                           client_options=ClientOptions(
                                               api_endpoint=self.upstream))
        return self._client

    def live_columns(self, project: str, dataset: str, table: str) -> list[tuple]:
        if not all(_NAME.fullmatch(x) for x in (project, dataset, table)):
            return []
        rows = self.client().query(
            "SELECT column_name, data_type FROM duckdb_columns() "
            f"WHERE schema_name = '{project}__{dataset}' AND table_name = '{table}' "
            "ORDER BY column_index", job_retry=None).result()
        return [(r["column_name"], r["data_type"]) for r in rows]

    # -- DDL bookkeeping (descriptions) ------------------------------------------------------

    def before_query(self, project: str, sql: str) -> dict:
        """What has to be known before the statement runs: the columns that exist already (ADD
        COLUMN IF NOT EXISTS leaves an existing column, and its description, alone)."""
        m = _ALTER.match(sql)
        if m and _ADD.match(m.group(2).strip()):
            ref = _ref_parts(m.group(1), project)
            if ref:
                return {"existing": {c.lower() for c, _ in self.live_columns(*ref)}}
        return {}

    def after_query(self, project: str, sql: str, before: dict) -> None:
        with self.lock:
            m = _CREATE.match(sql)
            if m:
                ref = _ref_parts(m.group(1), project)
                if ref:
                    rest = sql[m.end():]
                    cols = {} if re.match(r"\s*(CLUSTER|PARTITION|OPTIONS|AS)\b", rest, re.I) \
                        else {n.lower(): d for n, spec in _column_defs(rest)
                              if (d := _description(spec)) is not None}
                    self.descriptions[ref] = cols
                return
            m = _DROP_TABLE.match(sql)
            if m:
                ref = _ref_parts(m.group(1), project)
                self.descriptions.pop(ref, None)
                return
            m = _ALTER.match(sql)
            if not m:
                return
            ref = _ref_parts(m.group(1), project)
            if not ref:
                return
            action = m.group(2).strip()
            cols = self.descriptions.setdefault(ref, {})
            if (a := _ADD.match(action)):
                name = a.group(1).lower()
                if name not in before.get("existing", set()):
                    d = _description(a.group(2))
                    if d is None:
                        cols.pop(name, None)
                    else:
                        cols[name] = d
            elif (d := _DROP_COL.match(action)):
                cols.pop(d.group(1).lower(), None)
            elif (o := _SET_OPTIONS.match(action)):
                desc = _DESCRIPTION.search(o.group(2))
                if desc:
                    cols[o.group(1).lower()] = _literal(desc)

    def forget(self, project: str, dataset: str, table: str | None = None) -> None:
        with self.lock:
            for ref in list(self.descriptions):
                if ref[:2] == (project, dataset) and (table is None or ref[2] == table):
                    del self.descriptions[ref]

    # -- tables.get ---------------------------------------------------------------------------

    def rewrite_table(self, project: str, dataset: str, table: str, body: dict) -> dict:
        live = self.live_columns(project, dataset, table)
        if not live:
            return body
        catalog = {f["name"].lower(): f for f in body.get("schema", {}).get("fields", [])}
        with self.lock:
            described = dict(self.descriptions.get((project, dataset, table), {}))
        fields = []
        for name, duck in live:
            known = catalog.get(name.lower())
            f = dict(known) if known else {"name": name, "type": "STRING", "mode": "NULLABLE"}
            f.pop("precision", None)
            f.pop("scale", None)
            bq, p, s = _bq_type(duck)
            if p is not None:
                f.update(type=bq, precision=str(p), scale=str(s))
            elif bq and (known is None
                         or _FAMILY.get(known["type"], known["type"]) != _FAMILY.get(bq, bq)):
                f["type"] = bq
            if name.lower() in described:
                f["description"] = described[name.lower()]
            else:
                f.pop("description", None)
            fields.append(f)
        body["schema"] = {"fields": fields}
        if self.count_rows:
            body["numRows"] = str(self.row_count(project, dataset, table))
        return body

    def row_count(self, project: str, dataset: str, table: str) -> int:
        rows = self.client().query(f"SELECT COUNT(*) AS n FROM `{project}.{dataset}.{table}`",
                                   job_retry=None).result()
        return int(next(iter(rows))["n"])

    # -- serving ------------------------------------------------------------------------------

    def start(self) -> "LiveSchemaProxy":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _handler(proxy: LiveSchemaProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = self.path
            jobs = _JOBS.match(path) if self.command == "POST" else None
            sql, before = None, {}
            if jobs and body:
                try:
                    req = json.loads(body)
                    sql = (req.get("configuration", {}).get("query", {}).get("query")
                           if jobs.group(2) == "jobs" else req.get("query"))
                except ValueError:
                    sql = None
                if sql:
                    before = proxy.before_query(jobs.group(1), sql)
            status, headers, data = self._upstream(body)
            if sql and status == 200:
                try:
                    answer = json.loads(data)
                except ValueError:
                    answer = {}
                if not answer.get("status", {}).get("errorResult"):
                    proxy.after_query(jobs.group(1), sql, before)
            t = _TABLE_GET.match(path)
            if t and status == 200 and self.command == "GET":
                body_json = proxy.rewrite_table(t.group(1), t.group(2), t.group(3),
                                                json.loads(data))
                data = json.dumps(body_json).encode()
            elif t and self.command == "DELETE" and status in (200, 204):
                proxy.forget(t.group(1), t.group(2), t.group(3))
            elif (d := _DATASET.match(path)) and self.command == "DELETE" and status in (200, 204):
                proxy.forget(d.group(1), d.group(2))
            self._reply(status, headers, data)

        def _upstream(self, body):
            up = urlsplit(proxy.upstream)
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            finally:
                conn.close()
            return resp.status, out, data

        def _reply(self, status: int, headers: dict, data: bytes):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

    return Handler


def start_live_proxy(upstream: str) -> LiveSchemaProxy:
    return LiveSchemaProxy(upstream).start()
