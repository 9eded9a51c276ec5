"""Saved positions that can no longer be read, provoked for real on the private binlog server:
an offset past the end or inside an event, a purged file, a reset log, a replaced server. Each
must raise PositionLost naming why and `hakobu backfill`; and the reader must never turn such
a position into "zero changes"."""

import dataclasses

import pytest

from hakobu.binlog import BinlogPosition, Checkpoint
from hakobu.errors import PositionLost
from resources.binlog_reader import BinlogReader
from resources.binlog_server import binary_logs, current_checkpoint, ensure_position
from tests.cdc.conftest import reader_id


def run(conn, *statements):
    with conn.cursor() as cur:
        for s in statements:
            cur.execute(s)


def write_rows(conn, schema, n, width=10):
    run(conn, f"CREATE TABLE IF NOT EXISTS `{schema}`.t (id INT AUTO_INCREMENT PRIMARY KEY, "
              f"v VARCHAR(200))")
    for _ in range(n):
        run(conn, f"INSERT INTO `{schema}`.t (v) VALUES (REPEAT('x', {width}))")


def at(cp: Checkpoint, **changes) -> Checkpoint:
    return dataclasses.replace(cp, position=dataclasses.replace(cp.position, **changes))


def lost(conn, cp, tables=()) -> PositionLost:
    with pytest.raises(PositionLost) as caught:
        ensure_position(conn, cp, tables=tables)
    err = caught.value
    assert "hakobu backfill" in err.hint
    return err


def test_a_fresh_position_is_valid_before_and_after_writes(cdc_conn, cdc_schema):
    cp = current_checkpoint(cdc_conn)
    ensure_position(cdc_conn, cp)
    write_rows(cdc_conn, cdc_schema, 3)
    ensure_position(cdc_conn, cp)
    ensure_position(cdc_conn, current_checkpoint(cdc_conn))


def test_an_offset_past_the_end_or_inside_an_event(cdc_conn, cdc_schema):
    write_rows(cdc_conn, cdc_schema, 1)
    cp = current_checkpoint(cdc_conn)
    size = dict(binary_logs(cdc_conn))[cp.position.file]
    assert size == cp.position.pos
    err = lost(cdc_conn, at(cp, pos=size + 100), tables=[(cdc_schema, "t")])
    assert any(f"offset {size + 100} is outside" in r for r in err.reasons), err.reasons
    assert f"{cdc_schema}.t" in err.hint
    err = lost(cdc_conn, at(cp, pos=size - 1))
    assert any("no event starts" in r for r in err.reasons), err.reasons


def test_the_reader_refuses_an_impossible_position_instead_of_reading_nothing(
        binlog_cluster, cdc_conn, cdc_schema):
    write_rows(cdc_conn, cdc_schema, 1)
    cp = current_checkpoint(cdc_conn)
    impossible = at(cp, pos=cp.position.pos + 4096)
    reader = BinlogReader(binlog_cluster, impossible, [(cdc_schema, "t")], reader_id=reader_id())
    with pytest.raises(PositionLost):
        list(reader.transactions())
    gone = at(cp, file="hakobu-bin.999999", pos=4)
    with pytest.raises(PositionLost) as caught:
        list(BinlogReader(binlog_cluster, gone, [(cdc_schema, "t")],
                          reader_id=reader_id()).transactions())
    assert any("does not exist" in r for r in caught.value.reasons)


def test_a_purged_file(cdc_conn, cdc_schema):
    write_rows(cdc_conn, cdc_schema, 2)
    cp = current_checkpoint(cdc_conn)
    run(cdc_conn, "FLUSH BINARY LOGS")
    write_rows(cdc_conn, cdc_schema, 1)
    newest = binary_logs(cdc_conn)[-1][0]
    # the server keeps a file a replica connection still reads: end the dump threads an earlier
    # test's reader left behind (this worker's own server; its tests run one at a time)
    with cdc_conn.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE "
                    "'Binlog Dump%'")
        for (thread,) in cur.fetchall():
            cur.execute(f"KILL {int(thread)}")
    run(cdc_conn, f"PURGE BINARY LOGS TO '{newest}'")
    assert cp.position.file not in dict(binary_logs(cdc_conn))      # really gone
    err = lost(cdc_conn, cp)
    assert any(f"{cp.position.file} was purged" in r for r in err.reasons), err.reasons


def test_a_reset_log_is_another_history(cdc_conn, cdc_schema):
    """RESET MASTER on the same server, then other writes: file names and offsets exist again,
    but they are not the saved ones. The GTID at the offset (MariaDB's BINLOG_GTID_POS) or the
    event boundary tells."""
    run(cdc_conn, "RESET MASTER")
    write_rows(cdc_conn, cdc_schema, 3, width=10)
    cp = current_checkpoint(cdc_conn)
    assert cp.position.file.endswith(".000001") and cp.position.gtid
    run(cdc_conn, "RESET MASTER")
    write_rows(cdc_conn, cdc_schema, 6, width=150)       # other sizes: other offsets
    assert dict(binary_logs(cdc_conn))[cp.position.file] > cp.position.pos
    err = lost(cdc_conn, cp)
    assert any("no event starts" in r for r in err.reasons), err.reasons


def test_a_reset_log_with_the_same_offsets_is_told_by_its_gtids(cdc_conn, cdc_schema):
    """The worst case: after RESET MASTER the same kind of writes put events at the very same
    offsets (an event boundary where the saved position was). Only the GTID at that offset
    (BINLOG_GTID_POS) tells the histories apart."""
    write_rows(cdc_conn, cdc_schema, 1)          # the table exists before either history
    run(cdc_conn, "RESET MASTER")
    write_rows(cdc_conn, cdc_schema, 3)
    cp = current_checkpoint(cdc_conn)
    run(cdc_conn, "RESET MASTER", "SET SESSION gtid_seq_no = 500")
    write_rows(cdc_conn, cdc_schema, 3)
    again = current_checkpoint(cdc_conn)
    assert again.position.pos == cp.position.pos and again.position.gtid != cp.position.gtid
    err = lost(cdc_conn, cp)
    assert any(f"is {again.position.gtid}, was {cp.position.gtid}: another history (RESET MASTER"
               in r for r in err.reasons), err.reasons


def test_a_replaced_server(cdc_conn, cdc_schema):
    """Another server answers at the same address (blue/green, restore): its server_id and
    GTID domain differ. Provoked by changing them on the running server."""
    write_rows(cdc_conn, cdc_schema, 1)
    cp = current_checkpoint(cdc_conn)
    with cdc_conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.server_id, @@GLOBAL.gtid_domain_id")
        server_id, domain = cur.fetchone()
    try:
        run(cdc_conn, "SET GLOBAL server_id = 4242", "SET GLOBAL gtid_domain_id = 7")
        err = lost(cdc_conn, cp)
    finally:
        run(cdc_conn, f"SET GLOBAL server_id = {int(server_id)}",
            f"SET GLOBAL gtid_domain_id = {int(domain)}")
    assert any(f"server_id was {server_id}, is 4242" in r for r in err.reasons), err.reasons
    assert any("gtid_domain_id was 0, is 7" in r for r in err.reasons), err.reasons
    ensure_position(cdc_conn, cp)        # the same server again: readable


def test_a_position_saved_elsewhere_names_the_server(cdc_conn):
    cp = current_checkpoint(cdc_conn)
    other = dataclasses.replace(cp, identity=dataclasses.replace(cp.identity, server_id=99))
    err = lost(cdc_conn, other)
    assert "server_id=99" in str(err) and str(cp.position.file) in str(err)
    assert isinstance(cp.position, BinlogPosition)
