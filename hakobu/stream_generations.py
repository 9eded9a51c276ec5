"""The generations of a cluster stream's tables (hakobu.stream.ClusterStream, mixed in): the
snapshot of a table not streaming yet (position first, then the nightly read), `--recover`
(a new generation from the current position), and a table that rejoins the stream after its
tenant's checkpoint moved on without it (snapshotted again). docs/realtime.md."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from hakobu.binlog import Checkpoint
from hakobu.errors import ConfigError, HakobuError
from hakobu.realtime import SNAPSHOT, STREAMING, RealtimeState, change_seq, checkpoint_json
from hakobu.table import sync_table
from resources import binlog_server

if TYPE_CHECKING:
    from hakobu.config import Tenant
    from hakobu.stream import TableStream, TenantStream

log = logging.getLogger("hakobu.stream")


def behind(ts: TenantStream, covered: set[str] | None) -> list[TableStream]:
    """The streaming tables the tenant's last checkpoint did not cover (taken out of the
    tenant file, or made nightly, while its other tables streamed on): their changes below
    that checkpoint were never read, so they are snapshotted again (a new generation), as a
    recover would. A checkpoint that lists no tables covers all."""
    if covered is None:
        return []
    return [t for bq, t in ts.tables.items()
            if t.state is not None and t.state.phase == STREAMING and bq not in covered]


def check_recover(tenant: Tenant | None, tenant_id: str, cluster: str,
                  tables: list[str] | None) -> list[str]:
    """The realtime tables a `--recover` of this tenant names (default: all of them), or a
    ConfigError before anything is read or written: a tenant without realtime tables on the
    cluster, an unknown table, a table that is not `delivery: realtime`."""
    if tenant is None or tenant.cluster != cluster or not tenant.realtime_tables:
        raise ConfigError(f"tenant {tenant_id!r} has no `delivery: realtime` table on "
                          f"cluster {cluster!r}: nothing to recover",
                          hint="name a tenant with realtime tables on this cluster "
                               "(`hakobu stream --cluster C --recover TENANT`)")
    names = tables or tenant.realtime_tables
    for n in names:
        tenant.table(n)                               # an unknown name: ConfigError
        if n not in tenant.realtime_tables:
            raise ConfigError(f"table {n!r} of tenant {tenant_id!r} is not `delivery: "
                              "realtime`: `hakobu stream` does not deliver it",
                              hint="its realtime tables: " + ", ".join(tenant.realtime_tables))
    return names


class GenerationsMixin:
    def recover(self, tenant_id: str, tables: list[str] | None) -> list[str]:
        """Start a new generation of these tables (default: all of the tenant's realtime
        tables) from the current position: each is snapshotted again by `snapshot_new`."""
        ts = self.tenants.get(tenant_id)
        names = check_recover(ts.tenant if ts else None, tenant_id, self.cluster.name, tables)
        chosen = [t for t in ts.tables.values() if t.route.table in names]
        self._new_generation(ts, chosen)
        return [t.route.table for t in chosen]

    def _new_generation(self, ts: TenantStream, chosen: list[TableStream]) -> None:
        now = self._current()
        moved = {t.route.bq_table: RealtimeState(
            SNAPSHOT, checkpoint_json(now), (t.state.gen + 1) if t.state else 1,
            change_seq(now.position), t.state.version if t.state else 0) for t in chosen}
        for bq, s in ts.rt.write_states(moved, self.run_id).items():
            ts.tables[bq].state = s
        if len(chosen) == len(ts.tables):      # every table starts at `now`: so may the reader
            ts.rt.record_checkpoint(self.cluster.name, checkpoint_json(now, tables=ts.tables),
                                    change_seq(now.position))
            ts.checkpoint = now

    def _current(self) -> Checkpoint:
        return binlog_server.on_cluster(self.cluster, binlog_server.current_checkpoint)

    # -- snapshot -------------------------------------------------------------------------

    def snapshot_new(self) -> list[str]:
        """Snapshot every table not streaming yet: position first, then the nightly read."""
        done = []
        for ts in self.tenants.values():
            if ts.behind:
                log.warning("%s: %s not streamed since the tenant's last checkpoint: "
                            "snapshotted again", ts.tenant.tenant,
                            ", ".join(t.route.table for t in ts.behind))
                self._new_generation(ts, ts.behind)
                ts.behind = []
            fresh = {bq: t for bq, t in ts.tables.items()
                     if t.state is None or t.state.phase == SNAPSHOT}
            if not fresh:
                continue
            now = self._current()                 # position first: before any read
            new = {bq: RealtimeState(SNAPSHOT, checkpoint_json(now), 1, change_seq(now.position))
                   for bq, t in fresh.items() if t.state is None}
            for bq, s in ts.rt.write_states(new, self.run_id).items():
                fresh[bq].state = s
            for bq, t in fresh.items():
                if t.log_stale:       # a new generation: its log starts after this snapshot
                    ts.rt.ensure_change_log(bq, list(t.route.plan.specs), replace=True)
                    t.log_stale = False
                self.hooks("before_snapshot", table=t.route.table)
                self._snapshot(ts, t)
                self.hooks("after_snapshot", table=t.route.table)
                streaming = dataclasses.replace(t.state, phase=STREAMING,
                                                merged=t.state.start_seq)
                t.state = ts.rt.write_states({bq: streaming}, self.run_id)[bq]
                ts.rt.create_live_view(bq, list(t.route.plan.specs),
                                       [t.route.plan.bq(k) for k in t.route.plan.primary_key],
                                       t.state.gen)
                t.last_merge = time.monotonic()
                done.append(f"{ts.tenant.tenant}/{t.route.table}")
        self.stats.snapshots += done
        return done

    def _snapshot(self, ts: TenantStream, t: TableStream) -> None:
        res = sync_table(self.io.source(self.cluster), ts.rt.dest, ts.tenant, t.route.table,
                         run_id=f"{self.run_id}_s", governor=self.io.gate(self.cluster),
                         hooks=self.hooks, plan=t.route.plan, warehouse=None)
        if not res.ok:
            raise HakobuError(f"snapshot of {ts.tenant.tenant}/{t.route.table} failed: "
                              f"{res.error}", tenant=ts.tenant.tenant, table=t.route.table,
                              hint="fix the cause and rerun `hakobu stream`: the snapshot "
                                   "starts again from the position it recorded")
