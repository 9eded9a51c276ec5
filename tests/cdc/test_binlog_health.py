"""The binlog health guard against real servers: the private binlog server passes; each setting
the reader needs is broken for real (SET GLOBAL, restored in `finally`) and the refusal must
name the variable read and the exact fix, every problem in one error; log_bin OFF is the
shared server's own state."""

import math

import pytest

from hakobu.binlog_health import BinlogSettings, refuse_unless_ready, required_retention_s
from hakobu.errors import BinlogNotReady
from resources.binlog_server import current_checkpoint, ensure_ready, read_settings


def set_globals(conn, **values):
    with conn.cursor() as cur:
        for name, value in values.items():
            cur.execute(f"SET GLOBAL {name} = %s", (value,))


def current(conn, *names) -> dict:
    with conn.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"@@GLOBAL.{n}" for n in names))
        return dict(zip(names, cur.fetchone()))


def test_the_private_binlog_server_is_ready(cdc_conn):
    settings = ensure_ready(cdc_conn, snapshot_seconds=3600)
    assert settings.flavor == "mariadb"
    # what the guard read is what the server says
    assert settings.variables["binlog_format"] == current(cdc_conn, "binlog_format")[
        "binlog_format"]


BROKEN = {
    "binlog_format": ("STATEMENT", "SET GLOBAL binlog_format = 'ROW'"),
    "binlog_row_image": ("MINIMAL", "SET GLOBAL binlog_row_image = 'FULL'"),
    "binlog_row_metadata": ("MINIMAL", "SET GLOBAL binlog_row_metadata = 'FULL'"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_setting_is_refused_with_its_fix(cdc_conn, name):
    bad, fix = BROKEN[name]
    saved = current(cdc_conn, name)
    try:
        set_globals(cdc_conn, **{name: bad})
        with pytest.raises(BinlogNotReady) as caught:
            ensure_ready(cdc_conn, snapshot_seconds=600)
    finally:
        set_globals(cdc_conn, **saved)
    err = caught.value
    assert len(err.problems) == 1, err.problems
    assert f"{name} is '{bad}'" in err.problems[0]
    assert fix in str(err) and f"{name} = " in err.hint and "my.cnf" in err.hint


def test_every_problem_is_reported_at_once(cdc_conn):
    saved = current(cdc_conn, *BROKEN, "binlog_expire_logs_seconds")
    try:
        set_globals(cdc_conn, binlog_format="MIXED", binlog_row_image="NOBLOB",
                    binlog_row_metadata="NO_LOG", binlog_expire_logs_seconds=3600)
        with pytest.raises(BinlogNotReady) as caught:
            ensure_ready(cdc_conn, snapshot_seconds=1800)
    finally:
        set_globals(cdc_conn, **saved)
    err = caught.value
    text = str(err)
    assert len(err.problems) == 4, err.problems
    for name in ("binlog_format", "binlog_row_image", "binlog_row_metadata",
                 "binlog_expire_logs_seconds = 3600"):
        assert name in text, name
    need_h = math.ceil(required_retention_s(1800) / 3600)
    assert f"SET GLOBAL binlog_expire_logs_seconds = {need_h * 3600}" in err.hint


def test_retention_is_weighed_against_the_predicted_snapshot(cdc_conn):
    """The server keeps binlogs for its configured time (read, not assumed): a snapshot that
    fits in it passes, one that does not is refused, naming the variable and its value."""
    have = int(current(cdc_conn, "binlog_expire_logs_seconds")["binlog_expire_logs_seconds"])
    fits = (have - 24 * 3600) / 2          # required = 2 × snapshot + 24 h
    ensure_ready(cdc_conn, snapshot_seconds=fits)
    with pytest.raises(BinlogNotReady) as caught:
        ensure_ready(cdc_conn, snapshot_seconds=fits + 3600)
    err = caught.value
    assert len(err.problems) == 1
    assert f"binlog_expire_logs_seconds = {have}" in err.problems[0]
    assert "expire_logs_days" in err.problems[0]


def test_a_server_without_binlog_is_refused(mysql_server):
    """The shared server (127.0.0.1:3306, log_bin OFF) — or the suite's private one without a
    binary log when no shared server answers."""
    conn = mysql_server.connect(autocommit=True)
    try:
        assert current(conn, "log_bin")["log_bin"] == 0
        with pytest.raises(BinlogNotReady) as caught:
            ensure_ready(conn, snapshot_seconds=600)
        with pytest.raises(BinlogNotReady):
            current_checkpoint(conn)
        settings = read_settings(conn)
    finally:
        conn.close()
    err = caught.value
    assert err.problems[0].startswith("log_bin is OFF")
    assert "log_bin = mysql-bin" in err.hint and "server_id" in err.hint and "restart" in err.hint
    # the other settings are judged as they are, in the same error
    if settings.variables["binlog_format"] != "ROW":
        assert any(p.startswith("binlog_format is") for p in err.problems)


def test_on_rds_the_fixes_name_the_parameter_group_and_the_retention_procedure(cdc_conn):
    """RDS cannot be reached here: the settings read from the real server, marked as RDS with
    its default NULL retention, must give RDS's fixes (pure decision, hakobu/binlog_health)."""
    real = read_settings(cdc_conn)
    variables = dict(real.variables, binlog_format="MIXED")
    rds = BinlogSettings(flavor=real.flavor, version=real.version, variables=variables,
                         on_rds=True, rds_retention_hours=None)
    with pytest.raises(BinlogNotReady) as caught:
        refuse_unless_ready(rds, 7200, where="mydb.xxxx.rds.amazonaws.com:3306")
    hint = caught.value.hint
    need_h = math.ceil(required_retention_s(7200) / 3600)
    assert f"CALL mysql.rds_set_configuration('binlog retention hours', {need_h})" in hint
    assert "binlog_format = ROW in the DB parameter group" in hint
    assert "'binlog retention hours' = NULL" in str(caught.value)
