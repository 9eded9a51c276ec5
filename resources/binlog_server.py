"""A source server's binary log as hakobu's change data capture sees it, on the wire: its global
settings, its files, who it is, and where it writes now. Plain statements only (SHOW, SELECT
@@GLOBAL...): no lock is taken, nothing is written, and every function takes an open DB-API
connection (pymysql) so the caller decides whose connection and pool it is.

The decisions on what the facts mean are in `hakobu/binlog_health.py`; this module reads them
and calls it: `ensure_ready` before a snapshot, `ensure_position` before reading from a saved
position, `current_checkpoint` to record one.

Privileges: SHOW BINARY LOGS and SHOW BINLOG EVENTS need REPLICATION CLIENT (MySQL) or BINLOG
MONITOR (MariaDB 10.5+), the stream itself REPLICATION SLAVE.
"""

from __future__ import annotations

import pymysql

from hakobu.binlog import BinlogPosition, Checkpoint, ServerIdentity
from hakobu.binlog_health import (BinlogSettings, LogState, refuse_lost_position,
                                  refuse_unless_ready)
from hakobu.errors import BinlogNotReady, PositionLost

# The settings the guard reads. Absent ones are simply not reported by the server.
SETTINGS = ("log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata",
            "binlog_row_value_options", "expire_logs_days", "binlog_expire_logs_seconds",
            "binlog_expire_logs_auto_purge", "server_id", "server_uuid", "gtid_domain_id",
            "gtid_mode", "version")
_NOT_LOGGING = 1381          # ER_NO_BINARY_LOGGING: "You are not using binary logging"
_PARSE_ERROR = 1064
_LOG_BIN_FIX = ("add `log_bin = mysql-bin` and a unique `server_id = N` under [mysqld] in my.cnf "
                "and restart the server (RDS: turn on automated backups)")


def _rows(conn, sql: str, args=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def _variables(conn) -> dict[str, str]:
    marks = ", ".join(["%s"] * len(SETTINGS))
    rows = _rows(conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({marks})", SETTINGS)
    return {str(name).lower(): "" if value is None else str(value) for name, value in rows}


def _flavor(variables: dict[str, str]) -> str:
    return "mariadb" if "mariadb" in variables.get("version", "").lower() else "mysql"


def _rds_retention(conn) -> tuple[bool, int | None]:
    """(on RDS, its 'binlog retention hours'). RDS and Aurora keep the setting in a table of
    their own, invisible to SHOW VARIABLES."""
    found = _rows(conn, "SELECT COUNT(*) FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'rds_configuration'")
    if not found[0][0]:
        return False, None
    rows = _rows(conn, "SELECT value FROM mysql.rds_configuration "
                       "WHERE name = 'binlog retention hours'")
    value = rows[0][0] if rows else None
    return True, None if value is None else int(value)


def read_settings(conn) -> BinlogSettings:
    variables = _variables(conn)
    on_rds, hours = _rds_retention(conn)
    return BinlogSettings(flavor=_flavor(variables), version=variables.get("version", "?"),
                          variables=variables, on_rds=on_rds, rds_retention_hours=hours)


def _where(conn) -> str:
    host = getattr(conn, "host", None)
    port = getattr(conn, "port", None)
    return f"{host}:{port}" if host else "the source server"


def ensure_ready(conn, snapshot_seconds: float, *, where: str | None = None,
                 headroom_seconds: float | None = None) -> BinlogSettings:
    """Refuse (BinlogNotReady, every problem named with its fix) unless the server's binary log
    can carry a snapshot predicted to take `snapshot_seconds` and the stream after it. Returns
    the settings read, for the caller's record."""
    settings = read_settings(conn)
    kw = {} if headroom_seconds is None else {"headroom_s": headroom_seconds}
    refuse_unless_ready(settings, snapshot_seconds, where=where or _where(conn), **kw)
    return settings


def binary_logs(conn) -> tuple[tuple[str, int], ...]:
    """SHOW BINARY LOGS, oldest first; BinlogNotReady when the server writes none."""
    try:
        rows = _rows(conn, "SHOW BINARY LOGS")
    except Exception as exc:
        if getattr(exc, "args", (None,))[0] == _NOT_LOGGING:
            raise BinlogNotReady(f"{_where(conn)} writes no binary log", ["log_bin is OFF"],
                                 [_LOG_BIN_FIX]) from exc
        raise
    return tuple((str(r[0]), int(r[1])) for r in rows)


def identity(conn, files: tuple[tuple[str, int], ...] | None = None) -> ServerIdentity:
    variables = _variables(conn)
    files = binary_logs(conn) if files is None else files
    flavor = _flavor(variables)
    domain = variables.get("gtid_domain_id")
    return ServerIdentity(flavor=flavor, server_id=int(variables["server_id"]),
                          server_uuid=variables.get("server_uuid") or None,
                          gtid_domain_id=int(domain) if flavor == "mariadb" and domain else None,
                          first_file=files[0][0])


def _status(conn) -> tuple:
    """SHOW BINARY LOG STATUS (MySQL 8.2+, MariaDB's SHOW BINLOG STATUS) or, before, SHOW
    MASTER STATUS (gone in MySQL 8.4)."""
    try:
        rows = _rows(conn, "SHOW BINARY LOG STATUS")
    except Exception as exc:
        if getattr(exc, "args", (None,))[0] != _PARSE_ERROR:
            raise
        rows = _rows(conn, "SHOW MASTER STATUS")
    if not rows:
        raise BinlogNotReady(f"{_where(conn)} writes no binary log", ["log_bin is OFF"],
                             [_LOG_BIN_FIX])
    return rows[0]


def current_checkpoint(conn) -> Checkpoint:
    """Where the server writes now, with who it is: the position to record before a snapshot.
    On MariaDB its GTID is BINLOG_GTID_POS of that very offset (so the two agree whatever
    commits in between); on MySQL the status's Executed_Gtid_Set (empty without gtid_mode)."""
    files = binary_logs(conn)
    ident = identity(conn, files)
    status = _status(conn)
    file, pos = str(status[0]), int(status[1])
    if ident.flavor == "mariadb":
        gtid = _rows(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))[0][0] or None
    else:
        gtid = (str(status[4]).replace("\n", "") or None) if len(status) > 4 else None
    return Checkpoint(position=BinlogPosition(file=file, pos=pos, gtid=gtid), identity=ident)


def _boundary(conn, file: str, pos: int) -> str | None:
    """None when an event starts at `pos` of `file` (or `pos` is its end)."""
    try:
        _rows(conn, "SHOW BINLOG EVENTS IN %s FROM %s LIMIT 1", (file, pos))
    except Exception as exc:
        args = getattr(exc, "args", ())
        if len(args) >= 2 and isinstance(args[0], int):
            return str(args[1])
        raise
    return None


def log_state(conn, saved: Checkpoint) -> LogState:
    files = binary_logs(conn)
    now = identity(conn, files)
    pos = saved.position
    listed = dict(files)
    inside = pos.file in listed and 4 <= pos.pos <= listed[pos.file]
    boundary = _boundary(conn, pos.file, pos.pos) if inside else None
    gtid_at = gtid_known = None
    if inside and now.flavor == "mariadb":
        gtid_at = _rows(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (pos.file, pos.pos))[0][0]
    elif pos.gtid and now.flavor == "mysql":
        gtid_known = bool(_rows(conn, "SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)",
                                (pos.gtid,))[0][0])
    return LogState(identity=now, files=files, boundary=boundary, gtid_at=gtid_at,
                    gtid_known=gtid_known)


def ensure_position(conn, saved: Checkpoint, *, where: str | None = None,
                    tables=()) -> LogState:
    """Refuse (PositionLost, with how to recover) unless `saved` can still be read on this
    server: same server, file present, offset on an event boundary inside it, same history."""
    where = where or _where(conn)
    try:
        state = log_state(conn, saved)
    except BinlogNotReady as exc:
        raise PositionLost(f"the saved binlog position {saved.position} of {where} cannot be "
                           f"read: the server writes no binary log now",
                           ["log_bin is OFF"],
                           hint=f"{exc.hint}; then reload the tables with `hakobu backfill "
                                f"TENANT --tables ...` and record a new position") from exc
    refuse_lost_position(saved, state, where=where, tables=tables)
    return state


def connect(cluster):
    """A plain autocommit connection to a cluster's server (its password from the env)."""
    return pymysql.connect(host=cluster.host, port=cluster.port, user=cluster.user,
                           password=cluster.password().reveal(), autocommit=True,
                           connect_timeout=10, charset="utf8mb4")


def on_cluster(cluster, fn, *args, **kwargs):
    """fn(conn, *args, **kwargs) on a connection of its own, closed after."""
    conn = connect(cluster)
    try:
        return fn(conn, *args, **kwargs)
    finally:
        conn.close()
