"""The strict BigQuery layer's HTTP side: the request handler in front of the emulator
(jobs.insert, jobs.query, resumable uploads, jobs.get / getQueryResults / cancel); the layer
itself (hakobu.localenv.strict_bq) is injected as `layer`."""

import json
import re
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
_JOBS = re.compile(r"^/bigquery/v2/projects/([^/]+)/jobs/?(\?.*)?$")
_QUERY = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries/?(\?.*)?$")
_JOB = re.compile(r"^/bigquery/v2/projects/([^/]+)/(jobs|queries)/([^/?]+)(/cancel)?(\?.*)?$")
_UPLOAD = re.compile(r"^/upload/bigquery/v2/projects/([^/]+)/jobs")



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


_CODES = {"duplicate": 409, "notFound": 404, "accessDenied": 403, "quotaExceeded": 403,
          "rateLimitExceeded": 403, "resourcesExceeded": 400, "invalidQuery": 400,
          "invalid": 400}


def _failed(answer) -> dict | None:
    """The errorResult of an upstream's 200 answer to jobs.insert (a job that ran and failed)."""
    if not answer or answer[0] != 200:
        return None
    status = _json(answer[2]).get("status") or {}
    return status.get("errorResult") if status.get("state") == "DONE" else None


class _Handler(BaseHTTPRequestHandler):
    """One request; `layer` is set on the subclass StrictBigQuery.start() makes."""
    layer: "StrictBigQuery"   # noqa: F821 — injected; importing it here would be a cycle
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
                                    or (job.answer and job.answer[0] != 200)
                                    or _failed(job.answer)):
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
            if job.done.is_set() and not job.refusal and (err := _failed(job.answer)):
                # the upstream ran it and it failed (the emulator forgets such jobs): answer
                # as BigQuery does, with the job's error as the HTTP error
                code = _CODES.get(err.get("reason"), 400)
                return self._reply(code, {}, json.dumps({"error": {
                    "code": code, "message": err.get("message", ""), "errors": [err]}}).encode())
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

