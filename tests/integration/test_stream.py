"""Streamed keyset queries: one query hands on several chunks as its result arrives; the zero-date
guard is skipped by connectorx until a zero date shows up, then the read goes on, guarded, from
the last key handed on — no row lost, none twice."""

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest

from hakobu.config import Cluster, Tenant
from hakobu.errors import TypeContractError
from hakobu.planning import plan_for
from resources.mysql_source import MySQLSource, iter_chunks, iter_parallel


def setup(sql, schema, mysql_server, *, n=100, zero_at=None, reader="connectorx", chunk=10,
          query=None):
    sql(f"CREATE TABLE `{schema}`.ev (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "born DATE NULL, note VARCHAR(20), INDEX ix_u (updated_at))")
    base = dt.datetime(2026, 1, 1)
    sql.many(f"INSERT INTO `{schema}`.ev VALUES (%s, %s, %s, %s)",
             [(i, base + dt.timedelta(seconds=i), dt.date(2000, 1, 1) + dt.timedelta(days=i),
               f"n{i}") for i in range(1, n + 1)])
    if zero_at is not None:
        sql("SET SESSION sql_mode = ''")
        sql(f"UPDATE `{schema}`.ev SET born = '0000-00-00' WHERE id = {zero_at}")
        sql("SET SESSION sql_mode = DEFAULT")
    cluster = Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    table = {"name": "ev", "cursor": "updated_at", "chunk_rows": chunk}
    if query:
        table["query_rows"] = query
    tenant = Tenant(tenant="t", cluster="main", source={"schema": schema},
                    destination={"project": "hakobu-test", "dataset": "x"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00", tables=[table])
    source = MySQLSource(cluster, reader=reader)
    return source, plan_for(source, tenant, tenant.tables[0])


def select_list(sql: str) -> str:
    """The SELECT list of a chunk query (its WHERE tests the cursor through the guard anyway)."""
    return sql.split(" FROM ")[0]


def spy(monkeypatch, source):
    """Record the SQL of every query the source streams."""
    seen = []
    real = source.stream

    def stream(plan, sql, batch_rows=50_000):
        seen.append(sql)
        return real(plan, sql, batch_rows)

    monkeypatch.setattr(source, "stream", stream)
    return seen


def test_one_query_hands_on_several_chunks(sql, schema, mysql_server, monkeypatch):
    source, plan = setup(sql, schema, mysql_server, n=95, chunk=10, query=40)
    seen = spy(monkeypatch, source)
    chunks = list(iter_chunks(source, plan, "main", None, None))
    ids = [i for b, _ in chunks for i in b.column("id").to_pylist()]
    assert ids == list(range(1, 96))                       # each row once, in key order
    assert all(b.num_rows <= 10 for b, _ in chunks) and len(chunks) >= 10
    assert len(seen) == 3                                  # 40 + 40 + 15 rows: three queries
    assert all(q.endswith("LIMIT 40") for q in seen)
    assert "INTERVAL 0" not in select_list(seen[0])        # no zero date: the fast path
    assert chunks[-1][1] == (dt.datetime(2026, 1, 1, 0, 1, 35), 95)
    source.dispose()


def test_zero_date_mid_stream_falls_back_to_the_guard(sql, schema, mysql_server, monkeypatch):
    source, plan = setup(sql, schema, mysql_server, n=100, zero_at=57, chunk=10, query=100)
    seen = spy(monkeypatch, source)
    rows = pa.concat_tables([b for b, _ in iter_chunks(source, plan, "main", None, None)])
    ids = rows.column("id").to_pylist()
    assert ids == list(range(1, 101))                      # nothing lost, nothing twice
    born = dict(zip(ids, rows.column("born").to_pylist()))
    assert born[57] is None and born[56] == dt.date(2000, 2, 26)
    assert "INTERVAL 0" not in select_list(seen[0]) and "INTERVAL 0 DAY" in select_list(seen[1])
    assert source.has_zero_dates(plan)
    # the same source reads this table guarded from the start now
    seen.clear()
    again = sum(b.num_rows for b, _ in iter_chunks(source, plan, "main", None, None))
    assert again == 100 and all("INTERVAL 0 DAY" in q for q in seen)
    source.dispose()


def test_zero_date_fail_policy_still_names_the_row(sql, schema, mysql_server):
    source, plan = setup(sql, schema, mysql_server, n=60, zero_at=33, chunk=10, query=60)
    strict = dataclasses.replace(plan, zero_dates="fail")
    with pytest.raises(TypeContractError, match=r"'born'.*'id': 33"):
        list(iter_chunks(source, strict, "main", None, None))
    source.dispose()


@pytest.mark.parametrize("reader", ["connectorx", "pymysql"])
def test_parallel_ranges_read_every_row_once(sql, schema, mysql_server, reader):
    source, plan = setup(sql, schema, mysql_server, n=1000, zero_at=500, reader=reader,
                         chunk=60, query=180)
    got = [i for b in iter_parallel(source, plan, "initial", None, 3)
           for i in b.column("id").to_pylist()]
    assert sorted(got) == list(range(1, 1001))
    source.dispose()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_leaving_a_stream_early_leaves_nothing_behind(sql, schema, mysql_server):
    """A consumer that stops mid-query (an error downstream): pymysql's unbuffered cursor would
    read the rest of the result on close, so the connection is dropped instead — without the
    cursor's finaliser reading the closed socket — and the pool goes on working."""
    import time

    source, plan = setup(sql, schema, mysql_server, n=3000, reader="pymysql", chunk=10,
                         query=3000)
    it = iter_chunks(source, plan, "main", None, None)
    first, _ = next(it)
    it.close()
    del it
    import gc

    gc.collect()
    assert first.num_rows == 10
    for _ in range(50):
        busy = source.query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE "
                            "ID <> CONNECTION_ID() AND INFO LIKE :q", {"q": f"%`{schema}`.`ev`%"})
        if busy[0][0] == 0:
            break
        time.sleep(0.1)
    assert busy[0][0] == 0
    assert sum(b.num_rows for b, _ in iter_chunks(source, plan, "main", None, None)) == 3000
    source.dispose()


def test_a_zero_date_panic_never_reaches_the_terminal(sql, schema, mysql_server, capfd,
                                                      monkeypatch):
    """connectorx's panic report at a zero date goes to fd 2 from Rust's panic hook; hakobu
    handles the case (the guard), so nothing of it may reach the user — while everything else
    written to stderr meanwhile still does, partial lines (progress bars) included."""
    import os
    import sys

    monkeypatch.setenv("RUST_BACKTRACE", "1")      # the loudest report: a whole backtrace
    source, plan = setup(sql, schema, mysql_server, n=100, zero_at=57, chunk=10, query=100)
    before = os.fstat(2)
    ids = []
    for i, (batch, _) in enumerate(iter_chunks(source, plan, "main", None, None)):
        ids += batch.column("id").to_pylist()
        if i == 2:
            print("progress 30%", end="\r", file=sys.stderr, flush=True)
            os.write(2, b"a line of our own\n")
    assert ids == list(range(1, 101)) and source.has_zero_dates(plan)
    err = capfd.readouterr().err
    assert "panicked" not in err and "backtrace" not in err.lower(), err
    assert "RUST_BACKTRACE" not in err and "Couldn't convert" not in err, err
    assert "progress 30%\r" in err and "a line of our own\n" in err
    assert os.fstat(2).st_ino == before.st_ino       # stderr is itself again
    source.dispose()
