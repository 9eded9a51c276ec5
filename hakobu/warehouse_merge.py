"""The warehouse's merge step: every tenant's pending slices of a warehouse table in one MERGE,
then each tenant's slice checked against its source.

Tenant runs do not MERGE into the shared warehouse tables (that would be one mutating DML
statement per tenant and table: BigQuery runs 2 per table at once, queues 20 and fails the next,
and counts every write against 1,500 per table per day). They stage their slices (pending
tables, resources/warehouse_pending.py) and move their watermarks. This step, per warehouse
table: takes the table's merge lock, applies every pending slice in one statement, drops them.
Then, for each tenant whose slices of that table are all merged, the same checks a run makes
after a table (hakobu.table_checks.after_table: key checksums with hard deletes, tonight's
content slice with its repair), against that tenant's source, under its cluster's gate.

Who runs it: the `warehouse_merge` schedule of the code location (every few minutes: at most one
MERGE per table per tick, whatever the number of tenants); a run launched by hand
(`sync_tenant(merge_warehouse=True)`, the CLI, tests) runs it at its end for its own tables.
"""

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hakobu.config import Config, Table, Tenant
from hakobu.errors import HakobuError
from hakobu.naming import table_name
from hakobu.planning import plan_for
from hakobu.policy import any_hashed
from hakobu.ports import IO
from hakobu.results import NO_HOOKS, TableResult
from hakobu.sinks import build_sinks
from hakobu.table_checks import after_table
from hakobu.warehouse import WarehouseTarget, enabled, open_warehouse

log = logging.getLogger("hakobu.warehouse")
CHECK_WORKERS = 8        # slices checked at once (each source read waits for its cluster's gate)


@dataclass
class TableMerge:
    """One warehouse table's merge step."""
    table: str                       # the warehouse table (BigQuery name)
    slices: int = 0
    tenants: list[str] = field(default_factory=list)      # whose slices were merged
    rows_affected: int = 0
    statements: int = 0              # mutating DML statements on the warehouse table
    locked_out: bool = False         # another merge held the lock: nothing done
    error: str | None = None
    checks: dict[str, TableResult] = field(default_factory=dict)   # tenant -> its check
    kinds: dict[str, str] = field(default_factory=dict)   # tenant -> what its slices were

    def metadata(self) -> dict:
        failed = sorted(t for t, r in self.checks.items() if r.warehouse == "failed")
        return {"slices": self.slices, "tenants": len(self.tenants),
                "rows_affected": self.rows_affected, "dml_statements": self.statements,
                "locked_out": self.locked_out, "checked": len(self.checks),
                "checks_failed": ", ".join(failed) or "-", "error": self.error or "-"}


class _Tenant:
    """What checking one tenant's slices needs: its source, gate, warehouse target (direct)."""

    def __init__(self, config: Config, tenant: Tenant, io: IO):
        self.config, self.tenant, self.io = config, tenant, io
        cluster = config.cluster_of(tenant)
        self.source, self.gate = io.source(cluster), io.gate(cluster)
        self._target: WarehouseTarget | None = None
        self._lock = threading.Lock()

    def flush(self) -> None:
        """The rotation notes of this tenant's checked slices, in one statement."""
        dest = self._target.dest if self._target is not None else None
        if dest is not None and hasattr(dest, "flush_notes"):
            dest.flush_notes()

    def sink(self, table: Table):
        plan = plan_for(self.source, self.tenant, table)
        with self._lock:               # the tenant's tables are checked from several threads
            if self._target is None or (self._target.hasher is None
                                        and any_hashed([plan], self.config.warehouse)):
                self.flush()
                self._target = open_warehouse(self.config, self.tenant, self.io, [plan])
                dest = self._target.dest
                if dest is not None and hasattr(dest, "hold_notes"):
                    dest.hold_notes()     # flushed after the step's checks
                if dest is not None and hasattr(dest, "prefetch_watermarks"):
                    # the notes and key stats of all its tables in one query, not two per table
                    dest.prefetch_watermarks([table_name(t.name) for t in self.tenant.tables])
            target = self._target
        exported, sinks, _, err = build_sinks(plan, table, None, target)
        if err or not sinks:
            raise HakobuError(err or "warehouse: this table is not delivered to the warehouse")
        return exported, sinks[0]


def delivering(config: Config, tenants: list[str] | None = None,
               tables: list[str] | None = None) -> dict[str, list[tuple[Tenant, Table]]]:
    """Warehouse table -> (tenant, its table entry) of every tenant delivering it (of `tenants`,
    and among the source tables `tables`, when given)."""
    out: dict[str, list[tuple[Tenant, Table]]] = {}
    for tenant in config.tenants.values():
        if tenants is not None and tenant.tenant not in tenants:
            continue
        for t in tenant.tables:
            if tables is None or t.name in tables:
                out.setdefault(table_name(t.name), []).append((tenant, t))
    return out


def merge_warehouse_tables(config: Config, io: IO, *, tenants: list[str] | None = None,
                           tables: list[str] | None = None, check: bool = True,
                           run_id: str | None = None, modes: dict[str, str] | None = None,
                           on_table: Callable[[TableMerge], None] | None = None
                           ) -> list[TableMerge]:
    """The merge step over the warehouse tables that `tenants` (all: None) deliver. Every pending
    slice of such a table is merged, whichever tenant staged it; then the slices of `tenants`
    (all: None) with nothing left pending are checked against their sources. A table's failure
    is its TableMerge's error, never the other tables'. `modes`: source table -> the mode the
    run read it in (a first load's slice gets the key checks, not tonight's content slice, as
    after a run's own table)."""
    if not enabled(config):
        return []
    run_id = run_id or uuid.uuid4().hex[:12]
    scope = delivering(config, tenants, tables)
    everyone = delivering(config)
    if not scope:
        return []
    anchor = next(iter(config.tenants.values()))
    dest = io.warehouse(config, anchor)
    waiting = dest.pending_tables(sorted(scope))
    contexts = _Contexts(config, io)
    merges = {w: TableMerge(w) for w in sorted(scope)}
    checks = []
    for wtable, m in merges.items():
        try:
            if wtable in waiting:
                _merge(dest, wtable, everyone[wtable], waiting[wtable], contexts, m)
        except Exception as exc:  # noqa: BLE001 — one table's failure is its outcome
            log.error("warehouse merge of %s failed: %s", wtable, exc)
            m.error = str(exc)
            continue
        if check:
            checks += [(m, tenant, table) for tenant, table in scope[wtable]
                       if tenants is not None or tenant.tenant in m.tenants]
    if checks:       # slices staged while this step merged: not the source's yet (one listing)
        left = dest.pending_tables(sorted(scope))
        checks = [(m, t, tb, t.tenant in left.get(m.table, ())) for m, t, tb in checks]
    _run_checks(checks, contexts, run_id, modes or {})
    for m in merges.values():
        if on_table is not None:
            on_table(m)
    return list(merges.values())


def _run_checks(checks: list, contexts: "_Contexts", run_id: str, modes: dict) -> None:
    """The slices' checks side by side: each reads its own source under its cluster's gate
    (which bounds that cluster's reads), and waits mostly on BigQuery jobs — one after the
    other, a night of hundreds of tenants would take hours of job latency."""
    def one(item) -> None:
        m, tenant, table, waiting = item
        mode = modes.get(table.name) or {"full": "full", "upsert": "incremental"}.get(
            m.kinds.get(tenant.tenant, ""))
        m.checks[tenant.tenant] = _check(tenant, table, contexts, run_id, mode, waiting)

    if not checks:
        return
    try:
        with ThreadPoolExecutor(max_workers=min(CHECK_WORKERS, len(checks)),
                                thread_name_prefix="hakobu-whm") as ex:
            list(ex.map(one, checks))
    finally:
        contexts.flush()


class _Contexts:
    """One _Tenant per tenant, made once, from any thread."""

    def __init__(self, config: Config, io: IO):
        self.config, self.io = config, io
        self._made: dict[str, _Tenant] = {}
        self._lock = threading.Lock()

    def flush(self) -> None:
        for ctx in self._made.values():
            ctx.flush()

    def of(self, tenant: Tenant) -> _Tenant:
        with self._lock:
            if tenant.tenant not in self._made:
                self._made[tenant.tenant] = _Tenant(self.config, tenant, self.io)
            return self._made[tenant.tenant]


def _merge(dest, wtable: str, deliverers, tenant_ids: list[str], contexts: _Contexts,
           m: TableMerge) -> None:
    """The table's key from one waiting tenant's plan (every tenant's is (tenant_id, source
    key)); then the one MERGE."""
    by_id = {t.tenant: (t, tb) for t, tb in deliverers}
    tenant, table = next((by_id[i] for i in tenant_ids if i in by_id), deliverers[0])
    plan, sink = contexts.of(tenant).sink(table)
    r = dest.merge_pending(wtable, sink.key if plan.primary_key else [])   # [] : replace
    m.slices, m.tenants, m.rows_affected = r.slices, r.tenants, r.rows_affected
    m.statements, m.locked_out, m.kinds = r.statements, r.locked_out, dict(r.kinds)
    log.info("warehouse %s: %d pending slices of %d tenants merged in %d statement(s)%s",
             wtable, r.slices, len(r.tenants), r.statements,
             " (locked by another merge)" if r.locked_out else "")


def _check(tenant: Tenant, table: Table, contexts: _Contexts, run_id: str,
           mode: str | None, waiting: bool) -> TableResult:
    """The checks a run makes after a table, on this tenant's warehouse slice — when nothing of
    it is pending any more (`waiting`: a slice came after the merge, so the slice is not the
    source's yet; the next merge checks)."""
    res = TableResult(tenant.tenant, table.name, customer=False)
    if waiting:
        res.warehouse, res.warehouse_extra["merge"] = "ok", "pending"
        return res
    try:
        ctx = contexts.of(tenant)
        plan, sink = ctx.sink(table)
        # the mode the slice was read in (the run's, or its slices' kind); else the table's
        # kind, never a whole read's: the plan may say otherwise than when it was read
        res.mode = mode or ("incremental" if plan.cursor is not None and not plan.full_replace
                            else "full")
        res.warehouse = "ok"
        after_table(ctx.source, plan, [sink], res, NO_HOOKS, ctx.gate, f"{run_id}_whm")
        res.warehouse_extra["merge"] = "merged"
    except Exception as exc:  # noqa: BLE001 — reported as this tenant's warehouse failure
        res.warehouse, res.warehouse_error = "failed", str(exc)
    return res


def fold_merge(results: list[TableResult], merges: list[TableMerge], tenant: str) -> None:
    """A run's own merge step into its table results: the warehouse checks' outcome and
    metadata, a merge's failure as the warehouse's."""
    by_table = {m.table: m for m in merges}
    for r in results:
        if r.warehouse != "ok" or "warehouse" not in r.landed:
            continue
        m = by_table.get(r.landed["warehouse"][0].rsplit(".", 1)[-1])
        if m is None:
            continue
        c = m.checks.get(tenant)
        if m.error:
            r.warehouse, r.warehouse_error = "failed", f"warehouse merge: {m.error}"
        elif c is not None:
            r.warehouse, r.warehouse_error = c.warehouse, c.warehouse_error
            r.extra.update(c.extra)
            r.warehouse_extra.update(c.warehouse_extra)
