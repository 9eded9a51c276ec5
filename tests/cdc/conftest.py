"""Fixtures of the change data capture tests (issue #15): one private MariaDB with a binary log
(`start_private(..., binlog=True)`: ROW, FULL image, FULL metadata, 2 days' retention) for the
whole session, under the tests' ignored state dir (.local/test/mariadb-binlog, or
$HAKOBU_TEST_STATE), on a free port; the shared server on 3306 is never reconfigured.

Tests make their databases with `cdc_schema` (`hk_cdc_<random>`, dropped afterwards). A test
that changes a global setting restores it in `finally`; `binlog_globals` checks after each
test that nobody left one changed, so a failure cannot leak into the next test.
"""

import os
import threading
from pathlib import Path

import pytest

from hakobu.config import Cluster
from hakobu.localenv.mariadb import start_private
from tests.helpers import Sql, dataset_factory, fresh_schema

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("HAKOBU_TEST_STATE", REPO / ".local" / "test"))
GLOBALS = ("binlog_format", "binlog_row_image", "binlog_row_metadata",
           "binlog_expire_logs_seconds", "server_id")
_readers = iter(range(1000, 10**6))
_readers_lock = threading.Lock()


@pytest.fixture(scope="session")
def binlog_server():
    # one per xdist worker (make test runs two): tests change its global settings
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    server = start_private(STATE / f"mariadb-binlog{worker}", binlog=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def binlog_cluster(binlog_server) -> Cluster:
    return Cluster(name="cdc", host=binlog_server.host, port=binlog_server.port,
                   user=binlog_server.user)


@pytest.fixture
def cdc_sql(binlog_server):
    s = Sql(binlog_server)
    yield s
    s.close()


@pytest.fixture
def cdc_conn(binlog_server):
    """A plain autocommit connection, as the health guard is given one."""
    conn = binlog_server.connect(autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def cdc_schema(cdc_sql):
    yield from fresh_schema(cdc_sql, "hk_cdc")


@pytest.fixture(autouse=True)
def binlog_globals(request):
    """Fail a test that left a global setting of the binlog server changed."""
    if "binlog_server" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("binlog_server")
    before = _globals(server)
    yield
    after = _globals(server)
    assert after == before, f"global settings left changed: {before} → {after}"


def _globals(server) -> dict:
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT " + ", ".join(f"@@GLOBAL.{g}" for g in GLOBALS))
            return dict(zip(GLOBALS, cur.fetchone()))
    finally:
        conn.close()


def reader_id() -> int:
    """A replica server_id no other reader of this session uses."""
    with _readers_lock:
        return next(_readers)


# The realtime tests' own datasets and schemas (a test file that needs other prefixes defines
# its own `datasets` / `schema`).
@pytest.fixture
def datasets(bq_client):
    yield from dataset_factory(bq_client, "hk_rto")


@pytest.fixture
def schema(cdc_sql):
    yield from fresh_schema(cdc_sql, "hk_rto")
