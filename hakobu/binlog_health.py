"""Whether a source's binary log can carry change data capture, and whether a saved position can
still be read: the decisions, pure. `resources/binlog_server.py` reads the facts from the server
(SHOW GLOBAL VARIABLES, SHOW BINARY LOGS, BINLOG_GTID_POS) and calls these.

Two guards, both refusing with every problem at once rather than the first:

- `refuse_unless_ready` before a snapshot starts: without `log_bin`, `binlog_format=ROW`,
  `binlog_row_image=FULL`, `binlog_row_metadata=FULL` (column names in the events; MariaDB
  10.5+, MySQL 8.0.14+) and retention that outlives the snapshot, the changes made while the
  snapshot runs are lost or unreadable, and the hand-off would deliver a silently stale table.
  Peers learnt this the hard way (initial loads outliving Aurora's short default retention).
- `refuse_lost_position` before reading from a saved position: a purged file, an offset past
  the end, or a replaced or reset server would otherwise give "zero events, success" (Airbyte
  #85783 after an RDS blue/green switch). The only honest answer is a backfill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from hakobu.binlog import Checkpoint, ServerIdentity, file_number
from hakobu.errors import BinlogNotReady, PositionLost

# Retention must cover the snapshot twice over (predictions are from past nights and can be
# off by that much) plus a day: the stream may be down for a night before it catches up
# (PeerDB refuses to start below 24 h).
SNAPSHOT_FACTOR = 2.0
HEADROOM_S = 24 * 3600
SNAPSHOT_S = 3600.0          # the longest snapshot expected unless told (`--snapshot-hours`)
RDS_MAX_RETENTION_HOURS = 168        # RDS for MySQL / MariaDB; Aurora MySQL allows 2160


@dataclass(frozen=True)
class BinlogSettings:
    """The server's global settings as read (values as SHOW GLOBAL VARIABLES prints them, names
    lower-case; a variable the server does not have is absent). `on_rds` when the server has
    RDS's `mysql.rds_configuration`; then `rds_retention_hours` is its 'binlog retention hours'
    (None: RDS's default NULL, binlogs removed as soon as no replica needs them)."""

    flavor: str                      # "mariadb" | "mysql"
    version: str
    variables: Mapping[str, str]
    on_rds: bool = False
    rds_retention_hours: int | None = None


def required_retention_s(snapshot_s: float, headroom_s: float = HEADROOM_S) -> int:
    """The binlog retention a snapshot predicted to take `snapshot_s` seconds needs."""
    return math.ceil(snapshot_s * SNAPSHOT_FACTOR + headroom_s)


def retention_s(s: BinlogSettings) -> tuple[float, str]:
    """How long the server keeps binlogs (math.inf: it never purges them by age), and which
    setting says so."""
    v = s.variables
    if s.on_rds:
        hours = s.rds_retention_hours
        return (0.0 if hours is None else hours * 3600.0,
                f"RDS 'binlog retention hours' = {'NULL' if hours is None else hours}")
    if v.get("binlog_expire_logs_auto_purge", "ON").upper() == "OFF":   # MySQL 8.0.29+
        return math.inf, "binlog_expire_logs_auto_purge = OFF"
    seconds = float(v.get("binlog_expire_logs_seconds", "0") or 0)
    days = float(v.get("expire_logs_days", "0") or 0)
    if s.flavor == "mariadb":   # 10.6+: the two are one setting in two units
        if "binlog_expire_logs_seconds" in v:
            return (seconds or math.inf,
                    f"binlog_expire_logs_seconds = {v['binlog_expire_logs_seconds']}, "
                    f"expire_logs_days = {v.get('expire_logs_days', '?')}")
        return days * 86400 or math.inf, f"expire_logs_days = {v.get('expire_logs_days', '0')}"
    if seconds:
        return seconds, f"binlog_expire_logs_seconds = {v['binlog_expire_logs_seconds']}"
    if days:                                                            # MySQL 8.0 only
        return days * 86400, f"expire_logs_days = {v['expire_logs_days']}"
    return math.inf, "binlog_expire_logs_seconds = 0 (never purged by age)"


@dataclass
class _Findings:
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    def add(self, problem: str, fix: str) -> None:
        self.problems.append(problem)
        self.fixes.append(fix)


def _setting_fix(s: BinlogSettings, name: str, value: str) -> str:
    if s.on_rds:
        return (f"set {name} = {value} in the DB parameter group (Aurora: the DB cluster "
                f"parameter group) and reboot the writer")
    persist = "SET PERSIST" if s.flavor == "mysql" else "SET GLOBAL"
    return (f"`{persist} {name} = '{value}'` (new sessions take it; reconnect the writers) and "
            f"`{name} = {value}` under [mysqld] in my.cnf")


def readiness_problems(s: BinlogSettings, snapshot_s: float,
                       headroom_s: float = HEADROOM_S) -> _Findings:
    v = s.variables
    out = _Findings()
    if v.get("log_bin", "OFF").upper() not in ("ON", "1"):
        fix = ("turn on automated backups (backup retention ≥ 1 day) — RDS writes a binlog "
               "only then; Aurora MySQL: binlog_format = ROW in the DB cluster parameter group, "
               "then reboot") if s.on_rds else (
               "add `log_bin = mysql-bin` and a unique `server_id = N` under [mysqld] in my.cnf "
               "and restart the server (log_bin cannot be set at run time)")
        out.add(f"log_bin is {v.get('log_bin', 'absent')}: the server writes no binary log", fix)
    for name, needed in (("binlog_format", "ROW"), ("binlog_row_image", "FULL")):
        found = v.get(name)
        if (found or "").upper() != needed:
            out.add(f"{name} is {found!r}, needs {needed}", _setting_fix(s, name, needed))
    meta = v.get("binlog_row_metadata")
    if meta is None:
        out.add(f"binlog_row_metadata does not exist on {s.flavor} {s.version}: row events carry "
                f"no column names", "upgrade to MariaDB 10.5+ or MySQL 8.0.14+")
    elif meta.upper() != "FULL":
        out.add(f"binlog_row_metadata is {meta!r}, needs FULL (column names, signedness, "
                f"ENUM/SET values in each event)", _setting_fix(s, "binlog_row_metadata", "FULL"))
    if v.get("binlog_row_value_options"):                     # MySQL 8: PARTIAL_JSON
        out.add(f"binlog_row_value_options is {v['binlog_row_value_options']!r}: JSON updates "
                f"would carry partial documents", _setting_fix(s, "binlog_row_value_options", ""))
    _retention(s, snapshot_s, headroom_s, out)
    return out


def _retention(s: BinlogSettings, snapshot_s: float, headroom_s: float, out: _Findings) -> None:
    have, said_by = retention_s(s)
    need = required_retention_s(snapshot_s, headroom_s)
    if have >= need:
        return
    hours = math.ceil(need / 3600)
    problem = (f"binlog retention is {have / 3600:.1f} h ({said_by}), a snapshot predicted to "
               f"take {snapshot_s / 3600:.1f} h needs {hours} h ({SNAPSHOT_FACTOR:g} × the "
               f"snapshot + {headroom_s / 3600:g} h)")
    if s.on_rds:
        fix = f"`CALL mysql.rds_set_configuration('binlog retention hours', {hours})`"
        if hours > RDS_MAX_RETENTION_HOURS:
            fix += (f" (RDS for MySQL/MariaDB allows at most {RDS_MAX_RETENTION_HOURS}; "
                    "Aurora MySQL 2160: snapshot fewer tables at a time)")
    elif s.flavor == "mariadb":
        fix = (f"`SET GLOBAL binlog_expire_logs_seconds = {hours * 3600}` and "
               f"`binlog_expire_logs_seconds = {hours * 3600}` under [mysqld] in my.cnf "
               f"(or expire_logs_days = {math.ceil(hours / 24)})")
    else:
        fix = f"`SET PERSIST binlog_expire_logs_seconds = {hours * 3600}`"
    out.add(problem, fix)


def refuse_unless_ready(s: BinlogSettings, snapshot_s: float, *, where: str,
                        headroom_s: float = HEADROOM_S) -> None:
    """Raise BinlogNotReady naming every setting that keeps `where` (a cluster or host:port)
    from carrying a snapshot of `snapshot_s` seconds and its change stream."""
    found = readiness_problems(s, snapshot_s, headroom_s)
    if found.problems:
        n = len(found.problems)
        raise BinlogNotReady(
            f"the binary log of {where} ({s.flavor} {s.version}) cannot carry change data "
            f"capture: {n} problem{'s' if n != 1 else ''} (global settings read now)",
            found.problems, found.fixes)


@dataclass(frozen=True)
class LogState:
    """The server's binary log now, as far as a saved position is concerned.

    files:       SHOW BINARY LOGS, oldest first: (name, size in bytes)
    boundary:    None if an event starts at the saved offset of the saved file (or the offset
                 is the file's end); else the server's reason (SHOW BINLOG EVENTS ... FROM pos)
    gtid_at:     MariaDB's BINLOG_GTID_POS(file, pos): the GTID state at that offset, None when
                 the server has no such position; not asked (None) on MySQL
    gtid_known:  MySQL: GTID_SUBSET(saved GTID, @@gtid_executed); None when not asked"""

    identity: ServerIdentity
    files: tuple[tuple[str, int], ...]
    boundary: str | None
    gtid_at: str | None = None
    gtid_known: bool | None = None


def _gtid_map(state: str | None) -> dict[int, str]:
    """MariaDB GTID state `0-1-6,1-2-9` by domain."""
    out = {}
    for part in (state or "").replace(" ", "").split(","):
        if part.count("-") == 2:
            out[int(part.split("-")[0])] = part
    return out


def _identity_changes(was: ServerIdentity, now: ServerIdentity) -> list[str]:
    out = [f"{label} was {a}, is {b}: another server"
           for label, a, b in (("flavor", was.flavor, now.flavor),
                               ("server_id", was.server_id, now.server_id),
                               ("server_uuid", was.server_uuid, now.server_uuid),
                               ("gtid_domain_id", was.gtid_domain_id, now.gtid_domain_id))
           if a != b]
    was_n, now_n = file_number(was.first_file), file_number(now.first_file)
    if was.first_file.rsplit(".", 1)[0] != now.first_file.rsplit(".", 1)[0]:
        out.append(f"binlog files were named {was.first_file}, are now {now.first_file}")
    elif was_n is not None and now_n is not None and now_n < was_n:
        out.append(f"the oldest binlog file was {was.first_file}, is now {now.first_file}: "
                   f"the log was reset (RESET MASTER) or the server replaced")
    return out


def _file_problem(saved: Checkpoint, now: LogState) -> str | None:
    """Why the saved offset is not a readable place in a listed file, or None."""
    pos, sizes = saved.position, dict(now.files)
    names = [n for n, _ in now.files]
    if pos.file not in sizes:
        if not names:
            return f"{pos.file} is gone: the server lists no binlog files"
        if (file_number(pos.file) or 0) < (file_number(names[0]) or 0):
            return f"{pos.file} was purged: the oldest binlog file is {names[0]}"
        return f"{pos.file} does not exist (files {names[0]} … {names[-1]})"
    if pos.pos < 4 or pos.pos > sizes[pos.file]:
        return f"offset {pos.pos} is outside {pos.file} ({sizes[pos.file]} bytes)"
    if now.boundary is not None:
        return f"no event starts at {pos.file}:{pos.pos} ({now.boundary})"
    return None


def position_problems(saved: Checkpoint, now: LogState) -> list[str]:
    pos, out = saved.position, _identity_changes(saved.identity, now.identity)
    problem = _file_problem(saved, now)
    if problem is not None:
        out.append(problem)
    elif pos.gtid and now.identity.flavor == "mariadb":
        at = _gtid_map(now.gtid_at)
        if any(at.get(domain) != gtid for domain, gtid in _gtid_map(pos.gtid).items()):
            out.append(f"the GTID at {pos.file}:{pos.pos} is {now.gtid_at or 'none'}, was "
                       f"{pos.gtid}: another history (RESET MASTER, or another server)")
    if now.gtid_known is False:
        out.append(f"GTID {pos.gtid} is not in the server's @@gtid_executed: another history")
    return out


def refuse_lost_position(saved: Checkpoint, now: LogState, *, where: str,
                         tables: Iterable[tuple[str, str]] = ()) -> None:
    """Raise PositionLost when `saved` cannot be read on `where` any more, with every reason."""
    reasons = position_problems(saved, now)
    if not reasons:
        return
    named = ", ".join(f"{s}.{t}" for s, t in sorted(tables)) or "every table read from it"
    raise PositionLost(
        f"the saved binlog position {saved.position} of {where} ({saved.identity}) cannot be "
        f"read any more; the changes after it are lost to the stream",
        reasons,
        hint=f"reload {named} in full with `hakobu backfill TENANT --tables ...` (for each "
             f"tenant of those tables), then record a new position from the server "
             f"(resources.binlog_server.current_checkpoint) and read from there; do not read on "
             f"from this position")
