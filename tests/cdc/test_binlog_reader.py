"""The binlog reader on the private binlog server: whole committed transactions with the position
after their commit, resuming from a saved checkpoint without gaps or repeats, exact (schema,
table) filtering, a blocking reader that writers never wait for and that stops when asked, and
the statement-logged change it refuses rather than miss."""

import threading
import time

import pytest
from pymysqlreplication.gtid import Gtid, GtidSet

from hakobu.binlog import ChangeKind
from hakobu.errors import BinlogNotReady
from resources.binlog_reader import BinlogReader
from resources.binlog_server import current_checkpoint
from tests.cdc.conftest import reader_id
from tests.helpers import Sql, unique


def make_table(sql, schema, name="t"):
    sql(f"CREATE TABLE `{schema}`.`{name}` (id INT PRIMARY KEY, v VARCHAR(40), n INT)")


def source_rows(sql, schema, name="t") -> dict[int, dict]:
    return {i: {"id": i, "v": v, "n": n}
            for i, v, n in sql(f"SELECT id, v, n FROM `{schema}`.`{name}`")}


def read_all(cluster, checkpoint, tables):
    with BinlogReader(cluster, checkpoint, tables, reader_id=reader_id()) as reader:
        txns = list(reader.transactions())
    return txns, reader.checkpoint


def test_transactions_positions_and_resume(binlog_cluster, cdc_sql, cdc_conn, cdc_schema):
    s = cdc_schema
    make_table(cdc_sql, s)
    start = current_checkpoint(cdc_conn)
    cdc_sql(f"INSERT INTO `{s}`.t VALUES (1, 'a', 1), (2, 'b', 2)")
    cdc_sql("BEGIN")
    cdc_sql(f"UPDATE `{s}`.t SET v = 'a2', n = n + 10 WHERE id = 1")
    cdc_sql(f"INSERT INTO `{s}`.t VALUES (3, 'c', 3)")
    cdc_sql(f"DELETE FROM `{s}`.t WHERE id = 2")
    cdc_sql("COMMIT")
    cdc_sql("BEGIN")
    cdc_sql(f"UPDATE `{s}`.t SET v = 'never' WHERE id = 3")
    cdc_sql("ROLLBACK")
    first_rows = source_rows(cdc_sql, s)
    server_then = current_checkpoint(cdc_conn)
    (t1, t2), saved = read_all(binlog_cluster, start, [(s, "t")])

    # the position after the last commit is where the server was, GTID included
    assert saved.position == server_then.position and t2.position == server_then.position
    assert t1.position < t2.position and t1.position.gtid != t2.position.gtid
    assert [c.kind for c in t1.changes] == [ChangeKind.INSERT, ChangeKind.INSERT]
    assert [(c.kind, c.row["id"], c.seq) for c in t2.changes] == [
        (ChangeKind.UPDATE, 1, 0), (ChangeKind.INSERT, 3, 1), (ChangeKind.DELETE, 2, 2)]
    assert all(c.position == t2.position for c in t2.changes)
    upd, ins, dele = t2.changes
    assert upd.row == first_rows[1] and ins.row == first_rows[3]
    assert upd.before == {**first_rows[1], "v": "a", "n": 1} and dele.row["id"] not in first_rows
    (now,) = cdc_sql("SELECT UTC_TIMESTAMP()")
    assert 0 <= (now[0] - t2.committed_at.replace(tzinfo=None)).total_seconds() < 60

    # resume: only what came after the saved checkpoint, once
    cdc_sql(f"UPDATE `{s}`.t SET n = 99 WHERE id = 3")
    (t3,), again = read_all(binlog_cluster, saved, [(s, "t")])
    assert [(c.kind, c.row) for c in t3.changes] == [
        (ChangeKind.UPDATE, source_rows(cdc_sql, s)[3])]
    assert again.position > saved.position
    assert read_all(binlog_cluster, again, [(s, "t")])[0] == []


def test_only_the_pairs_asked_for(binlog_cluster, cdc_sql, cdc_conn, cdc_schema):
    """Schema s1 and s2 both have tables t and u; asking for (s1, t) and (s2, u) must not give
    s1.u or s2.t (the library's only_schemas × only_tables would)."""
    s1, s2 = cdc_schema, unique("hk_cdc")
    cdc_sql(f"CREATE DATABASE `{s2}`")
    try:
        for s in (s1, s2):
            make_table(cdc_sql, s, "t")
            make_table(cdc_sql, s, "u")
        start = current_checkpoint(cdc_conn)
        for s in (s1, s2):
            for name in ("t", "u"):
                cdc_sql(f"INSERT INTO `{s}`.`{name}` VALUES (1, %s, 1)", (f"{s}.{name}",))
        txns, _ = read_all(binlog_cluster, start, [(s1, "t"), (s2, "u")])
    finally:
        cdc_sql(f"DROP DATABASE `{s2}`")
    got = [(c.schema, c.table, c.row["v"]) for t in txns for c in t.changes]
    assert got == [(s1, "t", f"{s1}.t"), (s2, "u", f"{s2}.u")]


def test_a_blocking_reader_sees_writes_as_they_commit_and_stops(
        binlog_server, binlog_cluster, cdc_sql, cdc_conn, cdc_schema):
    s = cdc_schema
    make_table(cdc_sql, s)
    start = current_checkpoint(cdc_conn)
    seen, errors = [], []
    reader = BinlogReader(binlog_cluster, start, [(s, "t")], reader_id=reader_id(),
                          blocking=True, heartbeat_s=0.5)

    def consume():
        try:
            for change in reader.changes():
                seen.append(change)
        except Exception as exc:            # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    writer = Sql(binlog_server)
    try:
        for i in range(1, 6):
            began = time.monotonic()
            writer(f"INSERT INTO `{s}`.t VALUES ({i}, 'w', {i})")
            assert time.monotonic() - began < 2.0       # writers never wait for the reader
        deadline = time.monotonic() + 20
        while len(seen) < 5 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert not errors, errors
        assert [c.row for c in seen] == sorted(source_rows(cdc_sql, s).values(),
                                               key=lambda r: r["id"])
    finally:
        writer.close()
        reader.stop()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the reader did not stop"
    assert reader.checkpoint.position == current_checkpoint(cdc_conn).position


def test_a_statement_logged_change_stops_the_reader(binlog_server, binlog_cluster, cdc_sql,
                                                    cdc_conn, cdc_schema):
    """A session may log as statements whatever the global setting says; those changes carry no
    rows. The reader refuses them for the tables it watches."""
    s = cdc_schema
    make_table(cdc_sql, s)
    start = current_checkpoint(cdc_conn)
    writer = Sql(binlog_server)
    try:
        writer("SET SESSION binlog_format = 'STATEMENT'")
        writer(f"INSERT INTO `{s}`.t VALUES (1, 'stmt', 1)")
    finally:
        writer.close()
    with pytest.raises(BinlogNotReady) as caught:
        read_all(binlog_cluster, start, [(s, "t")])
    assert "logged a change as a statement" in str(caught.value)
    assert "SET GLOBAL binlog_format = 'ROW'" in caught.value.hint


def test_the_library_gtid_parser_limits():
    """python-mysql-replication 1.0.17: MySQL `uuid:n` sets parse, MySQL 8.4 tagged GTIDs do not
    (docs/realtime.md). If this starts failing, the library learnt tags: update the docs."""
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    assert str(GtidSet(f"{uuid}:1-5")) == f"{uuid}:1-5"
    with pytest.raises(ValueError):
        Gtid(f"{uuid}:mytag:1-5")
    with pytest.raises(ValueError):
        GtidSet(f"{uuid}:mytag:1-5")


def test_acked_at_is_the_commit_time_while_behind_and_a_heartbeat_once_caught_up(
        binlog_cluster, cdc_sql, cdc_conn, cdc_schema):
    """The lag the `realtime_lag` check reports: reading an old backlog, the reader has the
    source only up to the last commit it passed; once the server has nothing newer (its
    heartbeat), up to now."""
    s = cdc_schema
    make_table(cdc_sql, s)
    start = current_checkpoint(cdc_conn)
    cdc_sql(f"INSERT INTO `{s}`.t VALUES (1, 'a', 1)")
    time.sleep(2.5)                           # the backlog is 2.5 s old when reading starts
    began = time.time()
    reader = BinlogReader(binlog_cluster, start, [(s, "t")], reader_id=reader_id(),
                          blocking=True, heartbeat_s=0.5, progress_every_s=0.2)
    seen = []
    timer = threading.Timer(15, reader.stop)          # never hangs on a missing heartbeat
    timer.start()
    with reader:
        for txn in reader.transactions():
            seen.append((bool(txn.changes), reader.acked_at))
            if not txn.changes:
                break
    timer.cancel()
    (had_rows, behind), (idle, caught_up) = seen[0], seen[-1]
    assert had_rows
    assert behind.timestamp() <= began - 1.5           # the commit's time: 2.5 s behind
    assert not idle and caught_up.timestamp() >= began      # a heartbeat: nothing newer
