"""The binlog reader's thread for `hakobu stream` (hakobu.stream): every transaction with the
reader's checkpoint and acked_at right after it into a queue, then END; an error goes into
the queue too, raised by the stream's loop."""

from __future__ import annotations

import queue
from dataclasses import dataclass

from hakobu.binlog import Checkpoint
from resources.binlog_reader import BinlogReader

END = object()


def pump(reader: BinlogReader, q: queue.Queue) -> None:
    """The reader's thread: every transaction (with the checkpoint right after it) into the
    queue, then END; an error goes into the queue to be raised by the loop."""
    try:
        with reader:
            for txn in reader.transactions():
                q.put(Txn(txn.changes, reader.checkpoint, reader.acked_at))
            q.put(Txn((), reader.checkpoint, reader.acked_at))   # the end: caught up
        q.put(END)
    except BaseException as exc:  # noqa: BLE001 — handed to the loop, raised there
        q.put(exc)


@dataclass(frozen=True)
class Txn:
    changes: tuple
    checkpoint: Checkpoint
    acked_at: object = None           # dt.datetime: BinlogReader.acked_at
