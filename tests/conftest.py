"""Session fixtures: the real MariaDB and the BigQuery emulator, started and stopped here.

Tests create and drop their own schemas and datasets (use `unique_name`), so they run in any order.
"""

import os
import uuid
from pathlib import Path

import pytest

from hakobu.localenv.emulator import start_emulator
from hakobu.localenv.mariadb import ensure_mysql

REPO = Path(__file__).resolve().parent.parent
# Keyset queries stream several chunks each (hakobu.plan.TablePlan.rows_per_query); with the
# small chunk_rows of the tests, three chunks per query makes every multi-chunk test cross query
# boundaries (the keyset continuation) as well as chunk boundaries inside one streamed query.
os.environ.setdefault("HAKOBU_QUERY_CHUNKS", "3")
# The suite's tables are a few pages each: by default (full_read_below_kib) every one with a
# cursor would be read whole every night, and no test would exercise the incremental passes.
# 0 keeps them incremental; tests/integration/test_full_read.py runs the default.
os.environ.setdefault("HAKOBU_FULL_READ_BELOW_KIB", "0")
STATE = Path(os.environ.get("HAKOBU_TEST_STATE", REPO / ".local" / "test"))


# Run alone, after the rest (`make test`: `-m "not serial"` on three workers, then `-m serial`):
# tests that read the shared server's server-wide counters or hold open transactions on it,
# that time a stop or a kill of loads on it, and the bench's quick forms, whose seeding holds
# long write transactions (every other test's incremental bound would wait behind them:
# resources/mysql_bound.py).
SERIAL = ("tests/integration/test_governor.py", "tests/integration/test_open_writers.py",
          "tests/integration/test_crash_and_stop.py", "tests/bench/")
# One at a time, beside the rest (xdist group `machine`: one worker takes them all, in turn,
# with `--dist loadgroup`): tests that use one fixed resource for the whole machine (the
# production stack's PostgreSQL databases and ports, `hakobu up`'s state dir). They mostly
# wait on processes of their own.
MACHINE = ("tests/deploy/", "tests/localenv/")


@pytest.hookimpl(tryfirst=True)           # before xdist reads the groups from the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()
        if path.startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
        elif path.startswith(MACHINE):
            item.add_marker(pytest.mark.xdist_group("machine"))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def mysql_server():
    server = ensure_mysql(STATE / "mariadb")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory):
    emu = start_emulator(tmp_path_factory.mktemp("bqemu"))
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def bq_live(bq_emulator):
    """The emulator as real BigQuery's tables.get answers: live columns after DDL, NUMERIC
    precision/scale, DDL descriptions (tests/bq_live.py). Every client of the tests uses it."""
    from tests.bq_live import start_live_proxy

    proxy = start_live_proxy(bq_emulator.url)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def bq_settings(bq_live):
    from resources.bigquery_client import BigQuerySettings

    return BigQuerySettings(endpoint=bq_live.url, retry_deadline_s=10.0)


@pytest.fixture(scope="session")
def bq_client(bq_settings):
    from resources.bigquery_client import make_client

    return make_client(bq_settings, project="hakobu-test")


@pytest.fixture(scope="session")
def bq_strict(bq_live):
    """BigQuery's real limits in front of the live-schema proxy (hakobu/localenv/strict_bq.py):
    2 mutating DML running + 20 queued per table, 1,500 writes per table per day, the project's
    query queue — with a short job latency (20 ms; real BigQuery's ~1 s would slow the suite,
    bench/night.py runs with it). The warehouse and fan-out tests run through it."""
    from hakobu.localenv.strict_bq import StrictLimits, start_strict

    layer = start_strict(bq_live.url, StrictLimits(job_latency_s=0.02))
    yield layer
    layer.stop()


@pytest.fixture
def strict_env(bq_strict, monkeypatch):
    """bq_env through the strict layer; fails the test if it caused a quota error."""
    monkeypatch.setenv("HAKOBU_BIGQUERY_ENDPOINT", bq_strict.url)
    monkeypatch.setenv("HAKOBU_BIGQUERY_RETRY_DEADLINE", "10.0")
    before = sum(bq_strict.stats()["quota_errors"].values())
    yield bq_strict
    errors = bq_strict.stats()["quota_errors"]
    assert sum(errors.values()) == before, f"BigQuery quota errors under the strict layer: {errors}"


@pytest.fixture
def bq_env(bq_settings, monkeypatch):
    """Point code that reads the environment (CLI, Dagster resources) at the emulator."""
    monkeypatch.setenv("HAKOBU_BIGQUERY_ENDPOINT", bq_settings.endpoint)
    monkeypatch.setenv("HAKOBU_BIGQUERY_RETRY_DEADLINE", str(bq_settings.retry_deadline_s))
    return bq_settings
