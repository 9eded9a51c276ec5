"""Keyset chunk reads (one pass, or several pk ranges at once) under the cluster's read gate."""

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from hakobu import cancel as stopping
from hakobu.errors import SourceError
from hakobu.keys import last_key
from hakobu.plan import TablePlan, pk_ranges, splittable
from resources.mysql_read import _TRIM, TRIM_EVERY, ReaderMixin, ZeroDateRead
from resources.mysql_sql import chunk_sql

SPLIT_MIN_ROWS = int(os.environ.get("HAKOBU_SPLIT_MIN_ROWS", "200000"))


def initial_splits(source: ReaderMixin, plan: TablePlan, gov) -> int:
    """How many primary-key ranges a first load reads at once: the cluster's max_connections
    (gov.max_conn) for a table with a single integer key spanning at least SPLIT_MIN_ROWS
    values, else one."""

    if splittable(plan) and gov.max_conn and gov.max_conn > 1:
        bounds = source.pk_bounds(plan)
        if bounds and bounds[1] - bounds[0] >= SPLIT_MIN_ROWS:
            return gov.max_conn
    return 1


# One scheduling loop: widen while slots are free, hand batches on in key order, stop cleanly.
# long: split, the loop's invariants would be spread over several functions
def iter_parallel(source: ReaderMixin, plan: TablePlan, pass_: str, upper: Any, parts: int,
                  on_chunk=None, gate=None, queue_depth: int = 2) -> Iterator[pa.Table]:
    """Read a whole pass over `parts` primary-key ranges at once (each a keyset reader under the
    governor), yielding chunks as they arrive — so one big table does not serialize a night.
    Order across ranges is not kept (the staging MERGE does not need it)."""
    import queue
    import threading


    bounds = source.pk_bounds(plan) if parts > 1 else None
    if bounds is None:
        for batch, _ in iter_chunks(source, plan, pass_, None, upper, on_chunk, gate):
            yield batch
        return
    ranges = pk_ranges(bounds[0], bounds[1], parts)
    # n streams at once hold what one would: chunks and queries 1/n the size
    n = len(ranges)
    chunk = max(1, plan.chunk_rows // n)
    plan = dataclasses.replace(plan, chunk_rows=chunk,
                               query_rows=max(chunk, plan.rows_per_query // n))
    if source.reader == "connectorx":
        yield from _cx_parallel(source, plan, pass_, upper, ranges, on_chunk, gate)
        return
    q: queue.Queue = queue.Queue(maxsize=queue_depth)
    done = object()
    stop = threading.Event()

    def reader(rng):
        try:
            for batch, _ in iter_chunks(source, plan, pass_, None, upper, on_chunk, gate,
                                        pk_range=rng):
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    threads = [threading.Thread(target=reader, args=(r,), daemon=True,
                                name=f"hakobu-split-{plan.table}-{i}")
               for i, r in enumerate(ranges)]
    for t in threads:
        t.start()
    remaining = len(threads)
    try:
        while remaining:
            item = q.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        while True:                     # unblock readers waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        for t in threads:
            t.join(timeout=30)


def _read_plan(source: ReaderMixin, plan: TablePlan, pass_: str) -> TablePlan:
    """The plan to read with: without the zero-date guard while no zero date has been seen in
    this table (connectorx only: it refuses one loudly instead of misreading it; the zeros
    pass selects them on purpose)."""
    fast = (source.reader == "connectorx" and plan.guard_zero_dates and plan.has_zero_guards
            and pass_ != "zeros" and not source.has_zero_dates(plan))
    return dataclasses.replace(plan, guard_zero_dates=False) if fast else plan


def _between_chunks(handed: int, pace, plan: TablePlan) -> None:
    """After a chunk is handed on: give freed memory back now and then, let the governor pace."""
    stopping.check(plan.tenant, plan.table)
    if handed % TRIM_EVERY == 0:
        _TRIM(0)
    if pace is not None:
        pace(plan.tenant, plan.table)


# long: the connectorx variant of the same loop, one query per range per round
def _cx_parallel(source: ReaderMixin, plan: TablePlan, pass_: str, upper: Any,
                 ranges: list[tuple[int, int]], on_chunk, gate) -> Iterator[pa.Table]:
    """iter_parallel for connectorx: one read_sql call per round carries one keyset query per
    unfinished range; connectorx runs them at once in its own threads (measured 1.18x one
    plain SELECT here, where Python threads gained little) and interleaves their batches, each
    from one query. Batches are routed to their range by primary key, assembled into chunks,
    and every range continues from its own last key in the next round — the same keyset
    semantics as iter_chunks, the same lazy zero-date guard. Each range's query holds a slot
    of the governor; a round takes as many ranges as slots are free (at least one)."""

    pk = plan.primary_key[0]
    limit = plan.rows_per_query
    rplan = _read_plan(source, plan, pass_)
    after: list[tuple | None] = [None] * len(ranges)
    done = [False] * len(ranges)
    pace = getattr(gate, "pace", None)
    handed = 0
    while not all(done):
        todo = [i for i in range(len(ranges)) if not done[i]]
        with contextlib.ExitStack() as stack:
            take = []
            for i in todo:
                if gate is None:
                    take.append(i)
                elif not take:
                    stack.enter_context(gate.slot(plan.tenant, plan.table))
                    take.append(i)
                elif stack.enter_context(gate.try_slot(plan.tenant, plan.table)):
                    take.append(i)
                else:
                    break
            sqls = [chunk_sql(rplan, pass_, after[i], upper, pk_range=ranges[i]) for i in take]
            got = {i: 0 for i in take}
            parts: dict[int, list] = {i: [] for i in take}
            rows = {i: 0 for i in take}
            t0 = time.monotonic()

            def hand(i: int):
                out = source.conformed(rplan, parts[i])
                parts[i], rows[i] = [], 0
                got[i] += out.num_rows
                after[i] = last_key(plan, out, pass_)
                if on_chunk is not None:
                    on_chunk(out.num_rows, time.monotonic() - t0)
                return out

            try:
                with source._errors("streaming", tenant=plan.tenant, table=plan.table):
                    for batch in source.cx_batches(sqls, plan.chunk_rows):
                        keys = batch.column(pk)
                        first, last = keys[0].as_py(), keys[-1].as_py()
                        i = next(j for j in take if ranges[j][0] <= first < ranges[j][1])
                        if not ranges[i][0] <= last < ranges[i][1]:
                            raise SourceError(f"connectorx mixed two key ranges in one batch "
                                              f"({first}..{last})", tenant=plan.tenant,
                                              table=plan.table)
                        parts[i].append(batch)
                        rows[i] += batch.num_rows
                        del batch
                        if rows[i] >= plan.chunk_rows:
                            yield hand(i)
                            handed += 1
                            _between_chunks(handed, pace, plan)
                            t0 = time.monotonic()
                    for i in take:
                        if parts[i]:
                            yield hand(i)
            except ZeroDateRead:
                if rplan is plan:
                    raise
                source.saw_zero_dates(plan)
                rplan = plan         # this round again, guarded, from each range's last key
                continue
        for i in take:
            if got[i] < limit or (after[i] is not None and after[i][-1] >= ranges[i][1] - 1):
                done[i] = True


def iter_chunks(source: ReaderMixin, plan: TablePlan, pass_: str, after: tuple | None,
                upper: Any, on_chunk=None, gate=None,
                pk_range: tuple[int, int] | None = None) -> Iterator[tuple[pa.Table, tuple]]:
    """Yield (chunk, key after it) for one pass, in key order.

    Each keyset query asks for up to plan.rows_per_query rows; its result streams to the client
    and is handed on in chunks of plan.chunk_rows as it arrives (the server keeps producing
    while the client decodes: no turn-taking per chunk). A query that returns fewer rows than
    its LIMIT ends the pass; otherwise the next one starts after the last key. Each query holds
    a slot of the cluster's governor (gate); between chunks the governor may pace the read
    (ReadGovernor.pace).

    Date columns are read without the zero-date guard by connectorx, which refuses a zero date
    loudly rather than misread it: at the first one, the query is run again guarded from the
    last key handed on, and this source reads the table guarded from then on."""

    limit = plan.rows_per_query
    pace = getattr(gate, "pace", None)
    rplan = _read_plan(source, plan, pass_)
    handed = 0
    while True:
        sql = chunk_sql(rplan, pass_, after, upper, pk_range=pk_range)
        got = 0
        slot = gate.slot(plan.tenant, plan.table) if gate is not None else contextlib.nullcontext()
        try:
            with slot:
                t0 = time.monotonic()
                for batch in source.stream(rplan, sql, plan.chunk_rows):
                    if batch.num_rows == 0:
                        continue
                    got += batch.num_rows
                    if on_chunk is not None:
                        on_chunk(batch.num_rows, time.monotonic() - t0)
                    after = last_key(plan, batch, pass_)
                    yield batch, after
                    del batch
                    handed += 1
                    _between_chunks(handed, pace, plan)
                    t0 = time.monotonic()
        except ZeroDateRead:
            if rplan is plan:
                raise
            source.saw_zero_dates(plan)
            rplan = plan                 # the same query again, guarded, from the last key
            continue
        if got == 0 and on_chunk is not None:
            on_chunk(0, time.monotonic() - t0)
        if got < limit:
            return
        if pk_range is not None and pass_ != "main" and after[-1] >= pk_range[1] - 1:
            return                       # the split's last key was read: nothing can follow
