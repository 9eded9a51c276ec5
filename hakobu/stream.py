"""`hakobu stream`: realtime delivery of one source cluster (issue #15; docs/realtime.md has
the whole design, its guarantees and limits).

One `ClusterStream` per source cluster holds one `BinlogReader` over every tenant's
`delivery: realtime` tables on it, and for each table: **snapshot, position first** (the
checkpoint P0 into the table's state row, then the nightly read, no lock: later changes are
applied after it, full row images, latest per key wins); **stream** (every change after the
table's start appended to its change log by insertAll every `flush_every_s`, then the cluster
checkpoint appended to each tenant's `_hakobu_rt_checkpoint` — recorded only once the changes
before it were accepted; changes at or below it are skipped on a replay); **merge** (every
`merge_every_minutes`, the latest change per key with seq in (merged, checkpoint] into the
customer's table; the tenant's state rows in one compare-and-set MERGE). A snapshot of a new
table pauses the cluster's stream; the reader then catches up from the oldest start.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hakobu import cancel
from hakobu.binlog import Checkpoint
from hakobu.binlog_health import SNAPSHOT_S
from hakobu.config import Config, Tenant
from hakobu.errors import PositionLost, SourceTableChanged
from hakobu.naming import change_log
from hakobu.planning import plan_for
from hakobu.policy import export_plan
from hakobu.realtime import (STREAMING, Delivery, RealtimeState, Route, Router,
                             change_seq, checkpoint_json, checkpoint_of, covered_tables,
                             log_rows, recover_commands, streamable)
from hakobu.results import NO_HOOKS, Hooks
from hakobu.stream_generations import GenerationsMixin, behind
from resources import binlog_server
from resources.binlog_reader import BinlogReader
from resources.binlog_pump import END, pump
from resources.changelog import RealtimeDataset
from resources.stream_claim import StreamClaim
from resources.io import LiveIO

log = logging.getLogger("hakobu.stream")
RECOVER_HINT = ("re-snapshot the tables from a new position: `hakobu stream --recover TENANT` "
                "for each tenant with realtime tables on the cluster (optionally --tables ...)")


@dataclass
class TableStream:
    route: Route
    merge_every_s: float
    state: RealtimeState | None = None
    pending: list[Delivery] = field(default_factory=list)
    last_merge: float = 0.0
    appended: int = 0
    merged_rows: int = 0
    merges: int = 0
    log_stale: bool = False     # its change log has other columns than the source now


@dataclass
class TenantStream:
    tenant: Tenant
    rt: RealtimeDataset
    tables: dict[str, TableStream]           # by BigQuery table name
    checkpoint: Checkpoint | None = None     # the last one recorded in its dataset
    recorded_at: float = 0.0
    behind: list[TableStream] = field(default_factory=list)   # rejoined: snapshotted again


@dataclass
class StreamStats:
    transactions: int = 0
    changes: int = 0
    flushes: int = 0
    snapshots: list[str] = field(default_factory=list)
    dropped: dict = field(default_factory=dict)


class ClusterStream(GenerationsMixin):
    """The realtime delivery of one cluster's tenants (see the module docstring)."""

    def __init__(self, config: Config, cluster: str, io: LiveIO, *, reader_id: int,
                 flush_every_s: float = 2.0, snapshot_seconds: float = SNAPSHOT_S,
                 merge_every_s: float | None = None, hooks: Hooks = NO_HOOKS,
                 tenants: list[str] | None = None, checkpoint_every_s: float = 60.0):
        self.config, self.cluster = config, config.clusters[cluster]
        self.io, self.reader_id, self.hooks = io, reader_id, hooks
        self.flush_every_s, self.snapshot_seconds = flush_every_s, snapshot_seconds
        self.merge_every_s, self.checkpoint_every_s = merge_every_s, checkpoint_every_s
        self.run_id = uuid.uuid4().hex[:12]
        self.stats = StreamStats()
        self.tenants: dict[str, TenantStream] = {}
        self._wanted = tenants
        self._stop = threading.Event()
        self._claim = None                # the connection holding the tenants' locks

    # -- opening --------------------------------------------------------------------------

    def guard(self) -> None:
        """Refuse a server whose binlog cannot carry a snapshot and the stream (BinlogNotReady)."""
        binlog_server.on_cluster(self.cluster, binlog_server.ensure_ready, self.snapshot_seconds)

    def claim(self) -> None:
        """One stream per tenant at a time (resources.stream_claim): call after open(); a
        second `hakobu stream` over one of these tenants — a `--recover` beside the running
        service — is refused, naming the holder. close() releases it."""
        if self._claim is None:
            self._claim = StreamClaim(self.cluster, sorted(self.tenants))

    def close(self) -> None:
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def open(self) -> None:
        """Plan every realtime table on the cluster, make its change log, read the states."""
        source = self.io.source(self.cluster)
        for tenant in self.config.tenants.values():
            if tenant.cluster != self.cluster.name or not tenant.realtime_tables:
                continue
            if self._wanted is not None and tenant.tenant not in self._wanted:
                continue
            dest = self.io.customer(tenant)
            if dest.ensure_dataset(labels={"managed-by": "hakobu", "tenant": tenant.tenant}):
                self.io.grant_new_dataset(self.config, dest)
            dest.ensure_state_table()
            rt = RealtimeDataset(dest)
            rt.ensure_checkpoints()
            tables = {}
            for name in tenant.realtime_tables:
                cfg = tenant.table(name)
                plan = streamable(export_plan(plan_for(source, tenant, cfg), cfg))
                fits = rt.ensure_change_log(plan.bq_table, list(plan.specs))
                every = self.merge_every_s if self.merge_every_s is not None \
                    else cfg.merge_every_minutes * 60.0
                tables[plan.bq_table] = TableStream(Route(tenant.tenant, name, plan), every,
                                                    log_stale=not fits)
            states = rt.read_states(list(tables))
            for bq, ts in tables.items():
                ts.state = states.get(bq)
                if ts.state is not None and ts.state.phase == STREAMING and not ts.log_stale:
                    # again at every start: a crash between the state's move to STREAMING
                    # and the view's DDL must not leave an older generation's view
                    plan = ts.route.plan
                    rt.create_live_view(bq, list(plan.specs),
                                        [plan.bq(k) for k in plan.primary_key], ts.state.gen)
            latest = rt.latest_checkpoint(self.cluster.name)
            ts = self.tenants[tenant.tenant] = TenantStream(
                tenant, rt, tables, checkpoint_of(latest) if latest else None)
            ts.behind = behind(ts, covered_tables(latest))

    # -- streaming ------------------------------------------------------------------------

    def start(self) -> Checkpoint:
        """Where the reader starts: the oldest of every tenant's recorded checkpoint and every
        table's start (changes at or below a table's skip point are dropped, see _skip)."""
        points = []
        for ts in self.tenants.values():
            for t in ts.tables.values():
                points.append(ts.checkpoint if ts.checkpoint is not None
                              and change_seq(ts.checkpoint.position) >= t.state.start_seq
                              else checkpoint_of(t.state.start))
        return min(points, key=lambda c: change_seq(c.position))

    def _skip(self, ts: TenantStream, t: TableStream) -> int:
        marks = [t.state.start_seq] + ([change_seq(ts.checkpoint.position)]
                                       if ts.checkpoint else [])
        return max(marks)

    def stop(self) -> None:
        self._stop.set()

    def _refuse_stale_logs(self) -> None:
        """A streaming table whose source changed shape (a DDL while the stream was down, or
        the one it stopped at) cannot take changes in its old change log: recover it."""
        stale = [(ts.tenant.tenant, t.route.table) for ts in self.tenants.values()
                 for t in ts.tables.values() if t.log_stale]
        by_tenant: dict[str, list[str]] = {}
        for tenant, table in stale:
            by_tenant.setdefault(tenant, []).append(table)
        if stale:
            raise SourceTableChanged(
                f"the source columns of {', '.join(f'{a}/{b}' for a, b in stale)} differ from "
                f"their change logs (`{change_log('<table>')}`): the source table, or the "
                f"tenant file's column policy, changed",
                schema="", tables=[b for _, b in stale],
                hint="re-snapshot them in the new shape (a new generation, its change log made "
                     "again): " + recover_commands(self.cluster.name, by_tenant))

    def recover_hint(self) -> str:
        """What to run after a PositionLost: the recover command of every tenant streamed."""
        cmds = recover_commands(self.cluster.name, dict.fromkeys(self.tenants))
        return f"{RECOVER_HINT}: {cmds}" if cmds else RECOVER_HINT

    # long: the service loop in one piece: read, flush on time, merge on time, stop
    def run(self, *, blocking: bool = True, for_seconds: float | None = None,
            on_round: Callable[[], None] | None = None) -> StreamStats:
        """Stream until stopped (or the end of the log when not blocking; or for_seconds),
        flushing every flush_every_s and merging each table at its cadence. Not blocking, the
        last round merges every table (a catch-up run: `hakobu stream --once`)."""
        if not self.tenants or cancel.requested():
            return self.stats
        self._refuse_stale_logs()
        self._stop.clear()                 # a run after a finished one (catch-up rounds)
        router = Router(t.route for ts in self.tenants.values() for t in ts.tables.values())
        q: queue.Queue = queue.Queue(maxsize=1000)
        start = self.start()
        reader = BinlogReader(self.cluster, start, router.tables, reader_id=self.reader_id,
                              blocking=blocking, stop=self._stop, owners=router.owners,
                              progress_every_s=self.checkpoint_every_s / 2)
        thread = threading.Thread(target=pump, args=(reader, q), daemon=True,
                                  name=f"hakobu-binlog-{self.cluster.name}")
        thread.start()
        deadline = None if for_seconds is None else time.monotonic() + for_seconds
        last_flush, position, ended = time.monotonic(), start, False
        acked_at = None                    # BinlogReader.acked_at of the last item taken
        try:
            while not ended:
                timeout = max(0.05, self.flush_every_s - (time.monotonic() - last_flush))
                try:
                    item = q.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if isinstance(item, BaseException):
                    raise item
                if item is END:
                    ended = True
                elif item is not None:
                    position = self._take(router, item) or position
                    acked_at = item.acked_at or acked_at
                if deadline is not None and time.monotonic() >= deadline:
                    self._stop.set()
                    ended = True
                if self._stop.is_set():
                    ended = True
                if ended or time.monotonic() - last_flush >= self.flush_every_s:
                    self._flush(position, acked_at)
                    self._merge_due(force=ended and not blocking)
                    if self._claim is not None:
                        self._claim.keep()
                    last_flush = time.monotonic()
                    if on_round is not None:
                        on_round()
        except PositionLost as exc:
            exc.hint = self.recover_hint()
            raise
        finally:
            self._stop.set()
            reader.stop()
            thread.join(timeout=10)
            self.stats.dropped = {f"{s}.{t}": n for (s, t), n in router.dropped.items()}
        return self.stats

    def _take(self, router: Router, txn) -> Checkpoint | None:
        """Route a transaction's changes; an empty one (the reader's progress past other
        tables' commits) only moves the position."""
        self.stats.transactions += 1 if txn.changes else 0
        for change in txn.changes:
            self.stats.changes += 1
            for d in router.route(change):
                ts = self.tenants[d.route.tenant]
                t = ts.tables[d.route.bq_table]
                if d.seq > self._skip(ts, t):
                    t.pending.append(d)
        return txn.checkpoint

    def _flush(self, position: Checkpoint | None, acked_at: dt.datetime | None) -> None:
        """Append every pending change (insertAll), then record the checkpoint they reach in
        each tenant's dataset: only now may a restart skip them.

        A tenant's checkpoint is recorded after a flush that wrote its rows, and otherwise at
        least every checkpoint_every_s (the heartbeat; insertAll, no table write): everything
        of the tenant up to `position` is acknowledged at this point, so an idle tenant's
        saved position keeps up with the reader and never falls behind the binlog retention,
        and `recorded_at` says the stream is alive (the `realtime_lag` check reads it). Never
        backwards: while the reader catches up to a tenant's recorded point, it stays."""
        self.stats.flushes += 1
        for ts in self.tenants.values():
            wrote = False
            for bq, t in ts.tables.items():
                if not t.pending:
                    continue
                rows = log_rows(t.route, t.pending, gen=t.state.gen)
                ids = [f"{t.state.gen}:{d.seq}:{d.idx}" for d in t.pending]
                self.hooks("before_append", table=t.route.table, rows=len(rows))
                t.appended += ts.rt.append(change_log(bq), rows, ids)
                self.hooks("after_append", table=t.route.table, rows=len(rows))
                t.pending, wrote = [], True
            if position is None or (ts.checkpoint is not None and change_seq(
                    position.position) < change_seq(ts.checkpoint.position)):
                continue
            moved = ts.checkpoint is None or position.position != ts.checkpoint.position
            stale = time.monotonic() - ts.recorded_at >= self.checkpoint_every_s
            if (moved and wrote) or stale:
                self.hooks("before_checkpoint", table="")
                ts.rt.record_checkpoint(self.cluster.name,
                                        checkpoint_json(position, acked_at=acked_at,
                                                        tables=ts.tables),
                                        change_seq(position.position))
                ts.checkpoint, ts.recorded_at = position, time.monotonic()

    def _merge_due(self, force: bool = False) -> None:
        """MERGE each streaming table whose cadence is due, up to its tenant's recorded
        checkpoint; then the tenant's state rows in one compare-and-set."""
        now = time.monotonic()
        for ts in self.tenants.values():
            if ts.checkpoint is None:
                continue
            upto = change_seq(ts.checkpoint.position)
            moved = {}
            for bq, t in ts.tables.items():
                s = t.state
                if s.phase != STREAMING or upto <= s.merged:
                    continue
                if not force and now - t.last_merge < t.merge_every_s:
                    continue
                plan = t.route.plan
                self.hooks("before_merge", table=t.route.table, sink="realtime")
                t.merged_rows += ts.rt.merge(bq, list(plan.specs),
                                             [plan.bq(k) for k in plan.primary_key],
                                             s.gen, s.merged, upto, version=s.version)
                t.merges += 1
                self.hooks("after_merge", table=t.route.table, sink="realtime")
                t.last_merge = now
                moved[bq] = s.merged_to(upto)
            for bq, s in ts.rt.write_states(moved, self.run_id).items():
                ts.tables[bq].state = s
