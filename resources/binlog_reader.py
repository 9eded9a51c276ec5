"""One source cluster's binary log as a stream of committed row changes (issue #15).

`BinlogReader` holds one replication connection per cluster (a replica's COM_BINLOG_DUMP, plus
the library's one control connection) and yields `hakobu.binlog.Transaction`s — whole committed
transactions, with the position right after their commit — for the (schema, table) pairs it is
given. It takes no lock on the source (no FLUSH TABLES, no LOCK): the server streams what it
already wrote, and writers never wait for the reader.

Built on PyPI `mysql-replication` 1.0.17 (python-mysql-replication). What it can and cannot do,
measured here against MariaDB 10.11 or read in its source (more in docs/realtime.md):

- Positions: file + offset on both servers (COM_BINLOG_DUMP, `resume_stream=True`). With
  `is_mariadb=True` and no GTID it always starts at the first file's offset 4 (it sends an
  empty file name), so this reader does not set it for file/offset resumes; MariaDB still sends
  its GTID events (the library sets @mariadb_slave_capability=4). GTID resumes (MySQL
  `auto_position`, MariaDB `@slave_connect_state`) exist in the library, not used here.
- GTIDs parsed: MySQL `uuid:n` (GTID_LOG_EVENT) and MariaDB `domain-server-seq`. MySQL 8.4
  tagged GTIDs (`uuid:tag:n`, GTID_TAGGED_LOG_EVENT, type 42) are not: the event is skipped
  (its transaction has no GTID here) and `GtidSet("uuid:tag:1-5")` raises ValueError.
- Commit time: the header timestamp of the commit event, whole seconds (MySQL 8's
  microsecond `immediate_commit_timestamp` in the GTID event is not parsed by the library).
- Row values: see resources/binlog_values.py (BIT, SET, TIMESTAMP, TIME, YEAR 0000 and
  BINARY padding differ from a SELECT and are brought to the nightly's form; GEOMETRY and
  MySQL's binary JSON are not).
- Filtering: `only_schemas` and `only_tables` are separate lists in the library (a table name
  matches in every listed schema), so the exact pairs are filtered again here.
- The library reconnects by itself after errors 2006/2013, from the last event it read; each
  connection it opens goes through `_connect`, which refuses a server that is not the one the
  checkpoint was recorded on (PositionLost), so a failover never reads on silently.
- A change logged as a statement (a session that set binlog_format=STATEMENT or MIXED, which
  the global guard cannot see) carries no rows: the reader stops with BinlogNotReady when such
  a statement names a watched schema or table, rather than miss it.
- A transaction's changes are held in memory until its commit (so every change carries the
  commit's position and time): a single huge transaction needs memory for all its rows.

Stopping: `stop()` (any thread) or the `stop` event; a blocking reader notices it at the next
event or heartbeat (every `heartbeat_s`). Non-blocking (`blocking=False`, for tests and
catch-up runs): the iteration ends at the current end of the log.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Iterable, Iterator

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, QueryEvent,
                                      RotateEvent, XidEvent)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from hakobu.binlog import BinlogPosition, ChangeKind, Checkpoint, RowChange, Transaction
from hakobu.config import Cluster
from hakobu.errors import BinlogNotReady, PositionLost, SourceError
from resources import binlog_server
from resources.binlog_values import nightly_row

_EVENTS = [WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent, GtidEvent,
           MariadbGtidEvent, RotateEvent, HeartbeatLogEvent]
_KINDS = {WriteRowsEvent: ChangeKind.INSERT, UpdateRowsEvent: ChangeKind.UPDATE,
          DeleteRowsEvent: ChangeKind.DELETE}
_STATEMENT_DML = ("insert", "update", "delete", "replace", "load data")
_LOST = 1236                 # ER_MASTER_FATAL_ERROR_READING_BINLOG: purged, impossible position


class BinlogReader:
    """Committed row changes of `tables` from `start` on; see the module docstring.

    reader_id is this reader's replica server_id: unique among the cluster's replicas and
    readers (a second connection with the same id makes the server drop the first), never the
    source's own @@server_id."""

    def __init__(self, cluster: Cluster, start: Checkpoint, tables: Iterable[tuple[str, str]], *,
                 reader_id: int, blocking: bool = False, heartbeat_s: float = 1.0,
                 stop: threading.Event | None = None, connect_timeout: float = 10.0,
                 progress_every_s: float | None = None):
        self.cluster = cluster
        self.tables = frozenset((s, t) for s, t in tables)
        if not self.tables:
            raise ValueError("BinlogReader needs at least one (schema, table)")
        self.reader_id = reader_id
        self.blocking = blocking
        self.heartbeat_s = heartbeat_s
        self._stop = stop or threading.Event()
        self._start = start
        self._checkpoint = start
        self._password = cluster.password()
        self._timeout = connect_timeout
        self._stream: BinLogStreamReader | None = None
        self.progress_every_s = progress_every_s
        self._yielded_at = time.monotonic()

    @property
    def checkpoint(self) -> Checkpoint:
        """The last commit passed (with or without changes to our tables): save it after the
        changes yielded before it are durable."""
        return self._checkpoint

    @property
    def where(self) -> str:
        return f"{self.cluster.host}:{self.cluster.port} (cluster {self.cluster.name!r})"

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> BinlogReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def changes(self) -> Iterator[RowChange]:
        for txn in self.transactions():
            yield from txn.changes

    def transactions(self) -> Iterator[Transaction]:
        """Every committed transaction after the checkpoint that changed one of our tables.

        With `progress_every_s`, also an empty transaction (no changes) at a commit of other
        tables or a DDL when nothing was yielded for that long: a consumer whose tables stay
        idle while the server writes elsewhere can then move its saved position too, so it
        never falls behind the binlog's retention (a restart would stop with PositionLost)."""
        self._stream = self._open()
        try:
            yield from self._assemble(self._stream)
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == _LOST:
                raise PositionLost(
                    f"{self.where} refused to stream from {self._checkpoint.position}",
                    [str(exc.args[1])],
                    hint="reload the tables read from it with `hakobu backfill TENANT --tables "
                         "...`, then record a new position") from exc
            raise
        finally:
            self.close()

    # -- opening ------------------------------------------------------------------------------

    def _settings(self) -> dict:
        return dict(host=self.cluster.host, port=self.cluster.port, user=self.cluster.user,
                    passwd=self._password.reveal(), connect_timeout=self._timeout,
                    read_timeout=max(30.0, 4 * self.heartbeat_s), charset="utf8mb4")

    def _verify(self, conn) -> None:
        """The checkpoint must still exist on the server that wrote it: an impossible
        position must never look like "no changes"."""
        binlog_server.ensure_position(conn, self._checkpoint, where=self.where,
                                      tables=self.tables)
        if self._checkpoint.identity.server_id == self.reader_id:
            raise SourceError(f"reader_id {self.reader_id} is the server_id of {self.where}",
                              hint="give the reader a replica server_id no server uses")

    def _connect(self, **kwargs):
        """Every connection the library opens — the first ones and each reconnect after a
        dropped connection — is checked first: same server, checkpoint still readable."""
        check = pymysql.connect(**self._settings(), autocommit=True)
        try:
            self._verify(check)
        finally:
            check.close()
        return pymysql.connect(**kwargs)

    def _open(self) -> BinLogStreamReader:
        pos = self._checkpoint.position
        return BinLogStreamReader(
            connection_settings=self._settings(), server_id=self.reader_id,
            resume_stream=True, log_file=pos.file, log_pos=pos.pos, blocking=self.blocking,
            only_events=_EVENTS, only_schemas=sorted({s for s, _ in self.tables}),
            only_tables=sorted({t for _, t in self.tables}),
            slave_heartbeat=self.heartbeat_s if self.blocking else None,
            pymysql_wrapper=self._connect, enable_logging=False)

    # -- assembling transactions --------------------------------------------------------------

    def _assemble(self, stream: BinLogStreamReader) -> Iterator[Transaction]:
        gtid: str | None = None
        pending: list[tuple] = []        # (event class, schema, table, columns, pk, row)
        for event in stream:
            if self._stop.is_set():
                return
            if isinstance(event, (GtidEvent, MariadbGtidEvent)):
                gtid, pending = event.gtid, []
            elif isinstance(event, tuple(_KINDS)):
                if (event.schema, event.table) in self.tables:
                    pk = _key(event.primary_key)
                    pending.extend((type(event), event.schema, event.table, event.columns, pk,
                                    row) for row in event.rows)
            elif isinstance(event, XidEvent) or _is_commit(event):
                txn = self._commit(stream, event, gtid, pending)
                gtid, pending = None, []
                if txn.changes or self._progress_due():
                    self._yielded_at = time.monotonic()
                    yield txn
            elif isinstance(event, QueryEvent):
                self._refuse_statement(event)
                if event.query.strip().upper() != "BEGIN":   # DDL: its own transaction
                    txn = self._commit(stream, event, gtid, [])
                    gtid, pending = None, []
                    if self._progress_due():
                        self._yielded_at = time.monotonic()
                        yield txn

    def _progress_due(self) -> bool:
        return (self.progress_every_s is not None
                and time.monotonic() - self._yielded_at >= self.progress_every_s)

    def _commit(self, stream, event, gtid, pending) -> Transaction:
        position = BinlogPosition(file=stream.log_file, pos=event.packet.log_pos, gtid=gtid)
        committed = dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc)
        changes = tuple(_change(item, seq, position, committed)
                        for seq, item in enumerate(pending))
        self._checkpoint = self._checkpoint.moved_to(position)
        return Transaction(position=position, committed_at=committed, changes=changes)

    def _refuse_statement(self, event: QueryEvent) -> None:
        text = event.query.strip()
        if not text.lower().startswith(_STATEMENT_DML):
            return
        schema = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
        lowered = text.lower()
        if schema in {s for s, _ in self.tables} or any(t.lower() in lowered
                                                        for _, t in self.tables):
            raise BinlogNotReady(
                f"{self.where} logged a change as a statement (ending at "
                f"{self._stream.log_file}:{event.packet.log_pos}), not as rows: its rows "
                f"cannot be read from the binlog",
                [f"statement-logged change (schema {schema!r}): {text[:200]}"],
                ["make every session write ROW events: SET GLOBAL binlog_format = 'ROW' and "
                 "no `SET SESSION binlog_format` in the application; then reload the tables "
                 "with `hakobu backfill TENANT --tables ...`"])


def _is_commit(event) -> bool:
    """A non-transactional table's transaction ends in a COMMIT query, not an XID."""
    return isinstance(event, QueryEvent) and event.query.strip().upper() == "COMMIT"


def _key(primary_key) -> tuple[str, ...]:
    if not primary_key:
        return ()
    return (primary_key,) if isinstance(primary_key, str) else tuple(primary_key)


def _change(item: tuple, seq: int, position: BinlogPosition,
            committed: dt.datetime) -> RowChange:
    cls, schema, table, columns, pk, row = item
    kind = _KINDS[cls]
    if kind is ChangeKind.UPDATE:
        after = nightly_row(columns, row["after_values"], row.get("after_none_sources"))
        before = nightly_row(columns, row["before_values"], row.get("before_none_sources"))
    else:
        after, before = nightly_row(columns, row["values"], row.get("none_sources")), None
    return RowChange(schema=schema, table=table, kind=kind, row=after, before=before,
                     primary_key=pk, position=position, committed_at=committed, seq=seq)
