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
from typing import Iterable, Iterator, Mapping

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (GtidEvent, HeartbeatLogEvent, MariadbGtidEvent, QueryEvent,
                                      RotateEvent, XidEvent)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from hakobu.binlog import BinlogPosition, ChangeKind, Checkpoint, RowChange, Transaction
from hakobu.config import Cluster
from hakobu.errors import BinlogNotReady, PositionLost, SourceError, SourceTableChanged
from hakobu.realtime import recover_commands
from resources import binlog_server
from resources.binlog_sql import (CONTROL as _CONTROL, DDL as _DDL,  # noqa: F401
                                  ddl_targets as _ddl_targets, references as _references,
                                  tokens as _tokens, word as _word)
from resources.binlog_values import primary_key_of, row_change

_EVENTS = [WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent, GtidEvent,
           MariadbGtidEvent, RotateEvent, HeartbeatLogEvent]
_KINDS = {WriteRowsEvent: ChangeKind.INSERT, UpdateRowsEvent: ChangeKind.UPDATE,
          DeleteRowsEvent: ChangeKind.DELETE}
_LOST = 1236                 # ER_MASTER_FATAL_ERROR_READING_BINLOG: purged, impossible position


class BinlogReader:
    """Committed row changes of `tables` from `start` on; see the module docstring.

    reader_id is this reader's replica server_id: unique among the cluster's replicas and
    readers (a second connection with the same id makes the server drop the first), never the
    source's own @@server_id."""

    def __init__(self, cluster: Cluster, start: Checkpoint, tables: Iterable[tuple[str, str]], *,
                 reader_id: int, blocking: bool = False, heartbeat_s: float = 1.0,
                 stop: threading.Event | None = None, connect_timeout: float = 10.0,
                 progress_every_s: float | None = None,
                 owners: Mapping[tuple[str, str], Iterable[tuple[str, str]]] | None = None):
        self.cluster = cluster
        self.owners = {k: list(v) for k, v in (owners or {}).items()}
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
        self._acked_at: dt.datetime | None = None

    @property
    def checkpoint(self) -> Checkpoint:
        """The last commit passed (with or without changes to our tables): save it after the
        changes yielded before it are durable."""
        return self._checkpoint

    @property
    def acked_at(self) -> dt.datetime | None:
        """Up to when the source's commits are all read at `checkpoint`: the commit time of the
        last commit passed while reading a backlog; the time of a server heartbeat (sent only
        when the server has nothing newer) or of the log's end once caught up. How far behind
        the source the stream is — not how recently it recorded (issue #15's lag)."""
        return self._acked_at

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
                    hint="re-snapshot the tables read from it from a new position: "
                         + self.recover_command(sorted(self.tables))) from exc
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

    # long: the event state machine in one piece: GTID, rows, XID/COMMIT, queries, heartbeat
    def _assemble(self, stream: BinLogStreamReader) -> Iterator[Transaction]:
        gtid: str | None = None
        pending: list[tuple] = []        # (event class, schema, table, columns, pk, row)
        in_txn = False                   # between BEGIN (or a MariaDB transaction's GTID event)
        for event in stream:             # and its XID or COMMIT
            if self._stop.is_set():
                return
            if isinstance(event, HeartbeatLogEvent):
                if not in_txn:           # the server had nothing newer to send: caught up
                    self._acked_at = dt.datetime.now(dt.timezone.utc)
                    if self._progress_due():
                        self._yielded_at = time.monotonic()
                        yield Transaction(position=self._checkpoint.position,
                                          committed_at=self._acked_at, changes=())
                continue
            if isinstance(event, (GtidEvent, MariadbGtidEvent)):
                gtid, pending = event.gtid, []
                # MariaDB logs no BEGIN: its GTID event says whether a transaction follows
                in_txn = (isinstance(event, MariadbGtidEvent)
                          and not event.flags & _MARIADB_STANDALONE)
            elif isinstance(event, tuple(_KINDS)):
                if (event.schema, event.table) in self.tables:
                    pk = primary_key_of(event.primary_key)
                    pending.extend((type(event), event.schema, event.table, event.columns, pk,
                                    row) for row in event.rows)
            elif isinstance(event, XidEvent):
                txn = self._commit(stream, event, gtid, pending)
                gtid, pending, in_txn = None, [], False
                if txn.changes or self._progress_due():
                    self._yielded_at = time.monotonic()
                    yield txn
            elif isinstance(event, QueryEvent):
                words = _tokens(event.query)
                verb = _word(words, 0)
                if verb == "COMMIT" or (verb == "ROLLBACK" and _word(words, 1) != "TO"):
                    # a non-transactional table's transaction ends in a COMMIT query; a
                    # ROLLBACK is logged only when one was changed (its rows stay applied, the
                    # transactional ones are undone: which are which is not logged)
                    if verb == "ROLLBACK" and pending:
                        raise self._not_ready(event, "a transaction that changed a watched "
                                              "table ended in ROLLBACK", pending)
                    txn = self._commit(stream, event, gtid, pending if verb == "COMMIT" else [])
                    gtid, pending, in_txn = None, [], False
                    if txn.changes or self._progress_due():
                        self._yielded_at = time.monotonic()
                        yield txn
                elif in_txn:
                    self._inside(event, words, verb, pending)
                elif verb == "BEGIN" or (verb, _word(words, 1)) in (
                        ("XA", "START"), ("XA", "BEGIN"), ("START", "TRANSACTION")):
                    in_txn, pending = True, []
                else:                                 # outside a transaction: DDL, its own
                    if verb in _DDL:
                        self._refuse_ddl(event, words)
                    elif verb not in _CONTROL:
                        self._refuse_statement(event, words)
                    txn = self._commit(stream, event, gtid, [])
                    gtid, pending = None, []
                    if self._progress_due():
                        self._yielded_at = time.monotonic()
                        yield txn
        if not in_txn:                   # the log's end (not blocking): every commit is read
            self._acked_at = dt.datetime.now(dt.timezone.utc)

    def _inside(self, event: QueryEvent, words: list, verb: str, pending: list) -> None:
        """A query inside a transaction: never a DDL's own commit. SAVEPOINT and RELEASE
        SAVEPOINT change nothing. A ROLLBACK TO SAVEPOINT of InnoDB changes is not logged at
        all (the rolled-back rows are simply absent); it is logged only when a
        non-transactional table was changed, and XA transactions log their rows at PREPARE and
        the outcome later: those two are refused when the transaction changed a watched
        table."""
        if verb in ("BEGIN", "SAVEPOINT", "RELEASE", ""):
            return
        if verb == "ROLLBACK":                         # ROLLBACK TO [SAVEPOINT] x
            if pending:
                raise self._not_ready(event, "ROLLBACK TO SAVEPOINT was logged (a "
                                      "non-transactional table changed) in a transaction that "
                                      "changed a watched table: which rows it undid is not "
                                      "logged", pending)
        elif verb == "XA":
            if pending:
                raise self._not_ready(event, "an XA transaction changed a watched table: its "
                                      "rows are logged at XA PREPARE, its outcome later",
                                      pending)
        elif verb in _DDL:
            self._refuse_ddl(event, words)
        elif verb not in _CONTROL:
            self._refuse_statement(event, words)

    def _not_ready(self, event: QueryEvent, what: str, pending: list) -> BinlogNotReady:
        tables = sorted({(s, t) for _, s, t, *_ in pending})
        return BinlogNotReady(
            f"{self.where} logged a transaction the reader cannot replay (ending at "
            f"{self._stream.log_file}:{event.packet.log_pos})",
            [f"{what} ({', '.join(f'{s}.{t}' for s, t in tables)}): {_kind(event)}"],
            ["keep watched tables out of XA transactions and non-transactional (MyISAM, Aria) "
             "tables out of their transactions; then re-snapshot them with "
             + self.recover_command(tables)])

    def recover_command(self, pairs: Iterable[tuple[str, str]]) -> str:
        """The `hakobu stream --recover` command(s) that re-snapshot these (schema, table)s:
        one per tenant that streams them (`owners`; TENANT when the reader was not told)."""
        by_tenant: dict[str, set[str]] = {}
        for pair in pairs:
            for tenant, name in self.owners.get(pair) or [("TENANT", pair[1])]:
                by_tenant.setdefault(tenant, set()).add(name)
        return recover_commands(self.cluster.name, by_tenant)

    def _progress_due(self) -> bool:
        return (self.progress_every_s is not None
                and time.monotonic() - self._yielded_at >= self.progress_every_s)

    def _commit(self, stream, event, gtid, pending) -> Transaction:
        position = BinlogPosition(file=stream.log_file, pos=event.packet.log_pos, gtid=gtid)
        committed = dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc)
        changes = tuple(row_change(item, _KINDS[item[0]], seq, position, committed, self.where,
                                   self.recover_command) for seq, item in enumerate(pending))
        self._checkpoint = self._checkpoint.moved_to(position)
        self._acked_at = committed
        return Transaction(position=position, committed_at=committed, changes=changes)

    def _refuse_ddl(self, event: QueryEvent, words: list) -> None:
        """TRUNCATE, DROP, RENAME, ALTER (or CREATE OR REPLACE) of a watched table: no row
        event says what it did to the rows or the columns, so the stream stops."""
        targets, schemas = _ddl_targets(words, _schema_of(event))
        hit = sorted({p for p in targets if p in self.tables}
                     | {p for p in self.tables if p[0] in schemas})
        if not hit:
            return
        raise SourceTableChanged(
            f"{self.where} logged {_word(words, 0)} of watched table(s) "
            f"{', '.join(f'{s}.{t}' for s, t in hit)} (ending at "
            f"{self._stream.log_file}:{event.packet.log_pos}); the change log and the "
            f"delivered table no longer describe the source: {_kind(event)}",
            schema=hit[0][0], tables=[t for _, t in hit],
            hint=f"re-snapshot the table(s) from the new shape: {self.recover_command(hit)} "
                 "(a new generation: its change log is made again with the new columns)")

    def _refuse_statement(self, event: QueryEvent, words: list) -> None:
        """Any other query that names a watched table, or runs in a watched schema, is a change
        logged as a statement (a session's binlog_format=STATEMENT or MIXED): no rows."""
        schema = _schema_of(event)
        named = _references(words, schema) & self.tables
        if not (schema in {s for s, _ in self.tables} or named):
            return
        hit = sorted(named or {p for p in self.tables if p[0] == schema})
        raise BinlogNotReady(
            f"{self.where} logged a change as a statement (ending at "
            f"{self._stream.log_file}:{event.packet.log_pos}), not as rows: its rows "
            f"cannot be read from the binlog",
            [f"a statement-logged change of {', '.join(f'{a}.{b}' for a, b in hit)}: "
             f"{_kind(event)}"],
            ["make every session write ROW events: SET GLOBAL binlog_format = 'ROW' and "
             "no `SET SESSION binlog_format` in the application; then re-snapshot the "
             "tables with " + self.recover_command(hit)])


# -- the text of query events ------------------------------------------------------------------

_MARIADB_STANDALONE = 1      # MariaDB GTID event flag FL_STANDALONE: no transaction follows
def _schema_of(event: QueryEvent) -> str:
    schema = event.schema
    return schema.decode() if isinstance(schema, bytes) else (schema or "")


def _kind(event: QueryEvent) -> str:
    """What a logged statement was, never its text: its literals may be values of columns the
    tenant file withholds, or a password (errors reach logs). Its first two words and where
    it ends in the log."""
    words = _tokens(event.query)
    verb = " ".join(w for w in (_word(words, 0), _word(words, 1)) if w)
    return f"a {verb or 'statement'} statement, default schema {_schema_of(event) or '(none)'}"

