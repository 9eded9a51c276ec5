"""The plain records of change data capture (issue #15): where a change sits in a server's binary
log, which server that log belongs to, and the row changes read from it.

Pure data, no IO: the reader (`resources/binlog_reader.py`) produces them, the health guard
(`hakobu/binlog_health.py`) judges them, and the later parts (snapshot hand-off, the BigQuery
change log and merge, `hakobu stream`) store and consume them without knowing the replication
library. A position is only meaningful together with the identity of the server that wrote it
(`Checkpoint`): file names and offsets restart at `hakobu-bin.000001:4` after a `RESET MASTER`
or on a replacement server, so a bare (file, pos) can point at someone else's history.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import Any, Mapping

_FILE_NUMBER = re.compile(r"^(?P<base>.*)\.(?P<n>\d+)$")


class ChangeKind(str, enum.Enum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, order=True)
class BinlogPosition:
    """A point between two events of one server's binary log: `file` and the byte offset `pos`
    where the next event starts. hakobu only hands out positions right after a commit (an XID,
    or a `COMMIT` query for non-transactional tables), so resuming there never replays half a
    transaction. `gtid` is the GTID of that committed transaction when the server writes one
    (MariaDB `domain-server-seq`, always; MySQL `uuid:n` with gtid_mode=ON), or the server's
    GTID state when the position was read from the server rather than from an event."""

    file: str
    pos: int
    gtid: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.pos}"
        return f"{where} (GTID {self.gtid})" if self.gtid else where


def file_number(name: str) -> int | None:
    """The sequence number of a binlog file name (`hakobu-bin.000012` → 12), None if it has
    none. Numbers only grow on one server; they go back to 1 only with a `RESET MASTER`."""
    m = _FILE_NUMBER.match(name)
    return int(m.group("n")) if m else None


@dataclass(frozen=True)
class ServerIdentity:
    """Who wrote a binary log, recorded with every saved position so that a replaced server (an
    RDS blue/green switch, a restore, a failover to a host with another log) or a reset log is
    told apart from "nothing happened since".

    flavor:         "mariadb" or "mysql"
    server_id:      @@server_id
    server_uuid:    @@server_uuid (MySQL; MariaDB has none)
    gtid_domain_id: @@gtid_domain_id (MariaDB; None on MySQL)
    first_file:     the oldest binlog file on the server when the position was recorded; an
                    older one later means the log was reset, a newer one is normal purging."""

    flavor: str
    server_id: int
    server_uuid: str | None
    gtid_domain_id: int | None
    first_file: str

    def __str__(self) -> str:
        who = f"server_id={self.server_id}"
        if self.server_uuid:
            who += f" server_uuid={self.server_uuid}"
        if self.gtid_domain_id is not None:
            who += f" gtid_domain_id={self.gtid_domain_id}"
        return f"{self.flavor} {who}, first binlog {self.first_file}"


@dataclass(frozen=True)
class Checkpoint:
    """What a consumer saves to resume later: the position and the identity of its server."""

    position: BinlogPosition
    identity: ServerIdentity

    def moved_to(self, position: BinlogPosition) -> Checkpoint:
        """The same server, a later position (the identity was checked when reading began)."""
        return Checkpoint(position=position, identity=self.identity)


@dataclass(frozen=True)
class RowChange:
    """One row changed by one committed transaction.

    row:        the after image for an insert or update; for a delete, the deleted row (its
                before image). Every column, by MySQL column name (binlog_row_image=FULL and
                binlog_row_metadata=FULL are demanded by the health guard).
    before:     for an update, the row before it; None otherwise.
    primary_key: the primary key's column names in table order (the binlog does not keep the
                key's own column order), empty when the table has none.
    position:   the position right after the transaction's commit: save it once every change
                of the transaction is durable, never before.
    committed_at: the commit event's timestamp, UTC, whole seconds (what the binlog records).
    seq:        the change's index within its transaction (0, 1, ...), to order changes that
                share one position."""

    schema: str
    table: str
    kind: ChangeKind
    row: Mapping[str, Any]
    before: Mapping[str, Any] | None
    primary_key: tuple[str, ...]
    position: BinlogPosition
    committed_at: dt.datetime
    seq: int


@dataclass(frozen=True)
class Transaction:
    """A committed transaction's changes to the tables asked for (possibly none: the position
    still moves past transactions that touched other tables)."""

    position: BinlogPosition
    committed_at: dt.datetime
    changes: tuple[RowChange, ...]
