"""`start_private(state_dir, binlog=True)`: the session's binlog server runs with what the
reader needs, and its state dir is never reused for a server of the other kind."""

import pytest

from hakobu.errors import HakobuError
from hakobu.localenv.mariadb import BINLOG_RETENTION_S, BINLOG_SERVER_ID, start_private
from tests.cdc.conftest import STATE


def test_the_binlog_server_runs_with_the_readers_settings(cdc_conn):
    with cdc_conn.cursor() as cur:
        cur.execute("SELECT @@log_bin, @@server_id, @@binlog_format, @@binlog_row_image, "
                    "@@binlog_row_metadata, @@binlog_expire_logs_seconds, @@log_bin_basename")
        row = cur.fetchone()
    assert row[:6] == (1, BINLOG_SERVER_ID, "ROW", "FULL", "FULL", BINLOG_RETENTION_S)
    assert row[6].startswith(str(STATE / "mariadb-binlog"))


def test_its_state_dir_is_not_reused_without_binlog(binlog_server):
    state = binlog_server.datadir.parent       # the session's (one per xdist worker)
    with pytest.raises(HakobuError) as caught:
        start_private(state, binlog=False)
    assert "runs with a binary log, but binlog=False" in str(caught.value)
    assert start_private(state, binlog=True).pid == binlog_server.pid
