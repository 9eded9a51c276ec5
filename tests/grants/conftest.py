"""Fixtures for the grants tests: a config dir with its own datasets in the emulator, and an
etag-enforcing proxy (the emulator ignores If-Match, real BigQuery answers 412)."""

import http.client
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from google.cloud import bigquery

from hakobu.config import Config, load_config

PROJECT = "hakobu-test"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@dataclass
class GrantsEnv:
    root: Path
    customer_a: str
    customer_b: str
    missing: str
    client: bigquery.Client
    settings: object

    @property
    def csv(self) -> Path:
        return self.root / "permissions.csv"

    def config(self) -> Config:
        return load_config(self.root)

    def write_csv(self, *rows: str) -> None:
        self.csv.write_text("dataset,role,member\n" + "".join(r + "\n" for r in rows))

    def live(self, dataset_id: str) -> bigquery.Dataset:
        return self.client.get_dataset(dataset_id, retry=self.settings.retry())

    def member_entries(self, dataset_id: str) -> set[tuple[str, str, str]]:
        """(role, entity type, id) of the live string-valued entries."""
        return {(e.role, e.entity_type, e.entity_id) for e in self.live(dataset_id).access_entries
                if isinstance(e.entity_id, str)}

    def console_grant(self, dataset_id: str, entry: bigquery.AccessEntry) -> None:
        """What someone clicking in the console does: straight to BigQuery, bypassing hakobu."""
        ds = self.live(dataset_id)
        ds.access_entries = [*ds.access_entries, entry]
        self.client.update_dataset(ds, ["access_entries"], retry=self.settings.retry())


def write_config(root: Path, datasets: dict[str, str], extra: list[str] = ()) -> None:
    """tenants/ with one tenant per (tenant id -> dataset), plus extra datasets."""
    tdir = root / "tenants"
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "clusters.yaml").write_text(
        "clusters:\n  main:\n    host: 127.0.0.1\n    user: hakobu\n")
    for tenant, dataset in datasets.items():
        (tdir / f"{tenant}.yaml").write_text(
            f"tenant: {tenant}\ncluster: main\nsource:\n  schema: {tenant}_db\n"
            f"destination:\n  project: {PROJECT}\n  dataset: {dataset}\n  location: US\n"
            "schedule:\n  cron: '0 2 * * *'\n  timezone: Asia/Tokyo\n"
            "deliver_by: '06:00'\ntables:\n  - name: orders\n")
    if extra:
        (tdir / "datasets.yaml").write_text(
            "datasets:\n" + "".join(f"  - project: {PROJECT}\n    dataset: {d}\n" for d in extra))


@pytest.fixture
def grants_env(tmp_path, bq_client, bq_settings, bq_env, monkeypatch):
    """Two customer datasets that exist in the emulator and one declared dataset that does not."""
    a, b, missing = unique_name("grt_a"), unique_name("grt_b"), unique_name("grt_missing")
    root = tmp_path / "config"
    write_config(root, {"acme": a, "beta": b}, extra=[missing])
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
    env = GrantsEnv(root, f"{PROJECT}.{a}", f"{PROJECT}.{b}", f"{PROJECT}.{missing}",
                    bq_client, bq_settings)
    env.write_csv()
    for ds in (env.customer_a, env.customer_b):
        bq_client.create_dataset(ds, retry=bq_settings.retry())
    yield env
    for ds in (env.customer_a, env.customer_b, env.missing):
        bq_client.delete_dataset(ds, delete_contents=True, not_found_ok=True,
                                 retry=bq_settings.retry())


# ---------------------------------------------------------------------------------------------
# etag-enforcing proxy

_DATASET_PATH = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/?]+)(\?.*)?$")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class EtagProxy:
    url: str
    upstream: str
    #: called with (project, dataset) before a write's etag is checked: simulates a concurrent
    #: change landing between hakobu's read and its write. Return value ignored.
    before_write: object = None
    rejected: int = 0
    writes: list = field(default_factory=list)

    def current_etag(self, path: str) -> str | None:
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=10)
        try:
            conn.request("GET", path.split("?")[0])
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        return json.loads(body).get("etag") if resp.status == 200 else None


def _handler(proxy: EtagProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            match = _DATASET_PATH.match(self.path)
            if self.command in ("PATCH", "PUT") and match:
                if proxy.before_write is not None:
                    proxy.before_write(match.group(1), match.group(2))
                wanted = self.headers.get("If-Match")
                if wanted is not None and wanted != proxy.current_etag(self.path):
                    proxy.rejected += 1
                    return self._reply(412, {"Content-Type": "application/json"}, json.dumps(
                        {"error": {"code": 412, "message": "Precondition check failed.",
                                   "status": "FAILED_PRECONDITION"}}).encode())
                proxy.writes.append(self.path)
            up = urlsplit(proxy.upstream)
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            finally:
                conn.close()
            self._reply(resp.status, out, data)

        def _reply(self, status: int, headers: dict, data: bytes):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

    return Handler


@pytest.fixture
def etag_proxy(bq_emulator):
    proxy = EtagProxy(url="", upstream=bq_emulator.url)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy_client(etag_proxy, bq_settings):
    """A client that talks to the emulator through the etag-enforcing proxy."""
    from resources.bigquery_client import BigQuerySettings, make_client

    settings = BigQuerySettings(endpoint=etag_proxy.url,
                                retry_deadline_s=bq_settings.retry_deadline_s)
    return make_client(settings, PROJECT)
