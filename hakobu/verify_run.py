"""`hakobu verify TENANT`: a full content comparison of a tenant's tables on demand.

Every bucket of every selected table is compared value by value (hakobu/verify.py) in the
customer's dataset and, when enabled, the tenant's slice of the warehouse, through the cluster's
read governor, in groups of buckets so a progress bar can follow. With repair, the rows that
differ are re-read and merged, the extra ones deleted, and the table compared again.

A `delivery: realtime` table is first brought up to the stream's recorded checkpoint: its
change log is merged up to the tenant's newest checkpoint (resources.changelog.RealtimeDataset.
merge, idempotent; its state row is left to the running `hakobu stream`, which owns it and
merges the same range again harmlessly). A row changed in the source after that point can still
differ, so a difference is re-merged (up to the checkpoint recorded meanwhile) and compared
again, REMERGES times REMERGE_WAIT_S apart, before the table is called different.
"""

import time

from collections.abc import Callable
from dataclasses import dataclass

from hakobu.checksums import compare_table, slot
from hakobu.config import Config
from hakobu.errors import HakobuError
from hakobu.sinks import build_sinks
from hakobu.verify import ContentComparison, compare_content, repair_content
from hakobu.planning import plan_for
from hakobu.realtime import CHECKPOINT_TABLE, STREAMING, change_seq, checkpoint_of
from hakobu.warehouse import open_warehouse
from hakobu.warehouse_merge import merge_warehouse_tables
from resources.changelog import RealtimeDataset

GROUPS = 20                      # source queries per table (progress steps) for range buckets
REMERGES = 3                     # a realtime table: re-merge and compare again this many times
REMERGE_WAIT_S = 2.0             # apart (the stream flushes every 2 s)


@dataclass
class TableVerdict:
    target: str                  # "customer/<table>" or "warehouse/<table>"
    rows: int = 0
    buckets: int = 0
    missing: int = 0
    extra: int = 0
    changed: int = 0
    duplicated: int = 0          # keys BigQuery holds more than once
    repaired: bool = False
    equal: bool = True
    error: str | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Progress:
    target: str
    done: int
    total: int


def verify_tenant(config: Config, tenant_id: str, *, io, tables: list[str] | None = None,
                  repair: bool = False, on_progress: Callable[[Progress], None] | None = None,
                  remerge_wait_s: float = REMERGE_WAIT_S) -> list[TableVerdict]:
    """`io` (hakobu.ports.IO) gives the tenant's source, read gate and destinations (the CLI
    passes resources.dagster.open_io's)."""
    tenant = config.tenant(tenant_id)
    names = tables or [t.name for t in tenant.tables]
    for n in names:
        tenant.table(n)
    cluster = config.cluster_of(tenant)
    source = io.source(cluster)
    source.ping()
    gate = io.gate(cluster)
    dest = io.customer(tenant)
    out: list[TableVerdict] = []
    plans = {}
    for n in names:
        try:
            plans[n] = plan_for(source, tenant, tenant.table(n))
        except HakobuError as exc:
            out.append(TableVerdict(f"customer/{n}", equal=False, error=str(exc)))
    warehouse = open_warehouse(config, tenant, io, list(plans.values())) \
        if plans else None
    if warehouse is not None and warehouse.dest is not None:
        # slices a scheduled run staged and the merge step has not applied yet: applied first,
        # so the comparison (and a repair) sees what the warehouse will hold
        merge_warehouse_tables(config, io, tenants=[tenant.tenant], tables=list(plans),
                               check=False)
    for n, plan in plans.items():
        exported, sinks, _, wh_error = build_sinks(plan, tenant.table(n), dest, warehouse)
        if wh_error:
            out.append(TableVerdict(f"warehouse/{n}", equal=False, error=wh_error))
        for sink in sinks:
            target = f"{sink.kind}/{n}"
            try:
                if tenant.table(n).delivery == "realtime" and sink.kind == "customer":
                    out.append(_verify_realtime(source, sink, exported, target, repair, gate,
                                                on_progress, tenant.cluster, remerge_wait_s))
                    continue
                out.append(_verify_sink(source, sink, exported, target, repair, gate,
                                        on_progress))
            except HakobuError as exc:
                out.append(TableVerdict(target, equal=False, error=str(exc)))
    return out


def _verify_sink(source, sink, plan, target: str, repair: bool, gate, on_progress
                 ) -> TableVerdict:
    dest = sink.dest
    if dest.table_schema(sink.table) is None:
        with slot(gate, plan):
            rows = source.key_stats(plan, None).rows
        return TableVerdict(target, rows=rows, missing=rows, equal=rows == 0,
                            note="not delivered yet")
    keys = compare_table(source, dest, plan, table=sink.table, gate=gate)
    b = keys.bucketing
    ids = sorted(keys.bucket_ids)
    if b.mode == "count":
        return TableVerdict(target, rows=keys.source_rows, equal=keys.equal,
                            missing=max(0, keys.source_rows - keys.dest_rows),
                            extra=max(0, keys.dest_rows - keys.source_rows),
                            note="counts only (no key with a canonical text)")
    groups = [None] if b.mode == "hash" else _groups(ids)
    verdict = TableVerdict(target, buckets=len(ids))
    found: list[ContentComparison] = []
    for i, group in enumerate(groups):
        cmp = compare_content(source, dest, plan, table=sink.table, sink=sink, bucketing=b,
                              buckets=group, gate=gate)
        verdict.rows += cmp.rows_compared
        if not cmp.equal:
            found.append(cmp)
        if on_progress is not None:
            on_progress(Progress(target, i + 1, len(groups)))
    for cmp in found:
        c = cmp.counts()
        verdict.missing += c["missing"]
        verdict.extra += c["extra"]
        verdict.changed += c["changed"]
        verdict.duplicated += c["duplicated"]
    verdict.equal = not found
    if found and repair:
        for cmp in found:
            repair_content(source, dest, plan, sink, cmp, gate=gate, run_id="verify",
                           dest_rows=keys.dest_rows)
        again = compare_table(source, dest, plan, table=sink.table, gate=gate)
        verdict.repaired = again.equal and all(c.repaired for c in found)
        verdict.equal = verdict.repaired
    return verdict


def _verify_realtime(source, sink, plan, target: str, repair: bool, gate, on_progress,
                     cluster: str, wait_s: float) -> TableVerdict:
    """A realtime table: merged up to the stream's checkpoint, then compared; a difference is
    re-merged and compared again (REMERGES times) before it counts; then repaired if asked."""
    for attempt in range(REMERGES + 1):
        if attempt:
            time.sleep(wait_s)
        merged = merge_realtime(sink.dest, plan, cluster)
        verdict = _verify_sink(source, sink, plan, target, False, gate, on_progress)
        if verdict.equal or merged is None:
            break
    if not verdict.equal and repair:
        verdict = _verify_sink(source, sink, plan, target, True, gate, on_progress)
    verdict.note = "; ".join(p for p in (verdict.note, "realtime: " + (
        f"merged up to the stream's checkpoint, compared {attempt + 1} time(s)"
        if merged is not None else "not streaming yet, nothing merged")) if p)
    return verdict


def merge_realtime(dest, plan, cluster: str) -> int | None:
    """Merge a realtime table's change log up to its tenant's newest recorded checkpoint,
    without moving its state row (the stream's). None when it is not streaming yet (no state,
    a snapshot in progress, no checkpoint); else the rows the MERGE affected."""
    if dest.table_schema(plan.bq_table) is None or dest.table_schema(CHECKPOINT_TABLE) is None:
        return None                       # never streamed: nothing to merge, nor a state
    rt = RealtimeDataset(dest)
    state = rt.read_states([plan.bq_table]).get(plan.bq_table)
    if state is None or state.phase != STREAMING:
        return None
    text = rt.latest_checkpoint(cluster)
    if text is None:
        return None
    upto = change_seq(checkpoint_of(text).position)
    if upto <= state.merged:
        return 0
    return rt.merge(plan.bq_table, list(plan.specs), [plan.bq(k) for k in plan.primary_key],
                    state.gen, state.merged, upto)


def _groups(ids: list[int]) -> list[list[int] | None]:
    if not ids:
        return [[]]
    size = max(1, -(-len(ids) // GROUPS))
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def render(verdicts: list[TableVerdict]) -> str:
    lines = [f"{'table':<28}{'rows':>10}{'buckets':>9}{'missing':>9}{'extra':>7}"
             f"{'changed':>9}{'doubled':>9}  result"]
    for v in verdicts:
        if v.error:
            state = f"ERROR: {v.error}"
        elif v.repaired:
            state = "repaired, now equal"
        else:
            state = "equal" if v.equal else "DIFFERENT"
        if v.note:
            state += f" ({v.note})"
        lines.append(f"{v.target:<28}{v.rows:>10}{v.buckets:>9}{v.missing:>9}{v.extra:>7}"
                     f"{v.changed:>9}{v.duplicated:>9}  {state}")
    return "\n".join(lines)
