"""After every table's merges: hard deletes by key checksums, then tonight's content slice.

The comparison and repair logic is hakobu.checksums' and hakobu.verify's; this module decides,
per sink, what runs after a table's delivery and how its outcome reaches the result.
"""

import logging
import os

from hakobu.checksums import compare_table, repair_deletes
from hakobu.errors import HakobuError, LoadError
from hakobu.plan import TablePlan
from hakobu.ports import ReadGate, Source
from hakobu.results import Hooks, TableResult
from hakobu.sinks import CUSTOMER, Sink
from hakobu.verify import nightly_content

log = logging.getLogger("hakobu.sync")


RECONCILE = os.environ.get("HAKOBU_RECONCILE", "1") != "0"
VERIFY_CONTENT = os.environ.get("HAKOBU_VERIFY_CONTENT", "1") != "0"


def after_table(source: Source, plan: TablePlan, sinks: list[Sink], res: TableResult,
                hooks: Hooks, gov: ReadGate | None = None, run_id: str = "",
                verify: bool = False) -> None:
    """At the end of every incremental table, after every sink merged and moved its watermark:
    hard deletes, then tonight's slice of content verification.

    Keys: per-bucket key checksums of the source and of each sink's table are compared
    (hakobu/checksums.py); only buckets that differ are re-read, and rows that vanished from
    the source are deleted (missing rows are merged, for the customer's table). Content: the
    buckets of tonight's slice of the rotation (hakobu/verify.py: every bucket once every
    `verify_every` nights) are compared value by value, and rows that differ are re-read and
    merged through the sink (the warehouse's too). A customer sink's error fails the table; the
    warehouse's sets that sink aside.

    The customer's comparison is kept as res.check — after a repair, compared again, so it
    says what the table holds now. With verify, tables loaded in the other modes (first load,
    full read) are compared too (keys and tonight's content slice); tables without a key
    cannot be."""
    if (RECONCILE or verify) and plan.primary_key and res.mode != "replace":
        for s in sinks:
            reconcile = RECONCILE and _reconciles(res.mode, s)
            if not s.active or (not reconcile and (not verify or s.kind != CUSTOMER)):
                continue
            if getattr(s.dest, "deferred", False):
                continue         # a pending slice: checked by the merge step once merged
            pre = "" if s.kind == CUSTOMER else "warehouse_"
            try:
                cmp = compare_table(source, s.dest, plan, table=s.table, gate=gov,
                                    remember=True, run_id=run_id)
                if reconcile:
                    rep = repair_deletes(source, s.dest, plan, cmp, gate=gov,
                                         run_id=f"{run_id}_cks", merge_missing=s.kind == CUSTOMER)
                    if rep.rows_deleted:
                        announce_deletes(sinks, run_id)
                    res.extra.update({pre + k: v for k, v in rep.metadata().items()})
                    res.extra[pre + "checksum_buckets_differing"] = cmp.buckets_differing
                    if not cmp.equal:
                        cmp = compare_table(source, s.dest, plan, table=s.table, gate=gov,
                                            bucketing=cmp.bucketing)
                if VERIFY_CONTENT and cmp.dest_exists and res.mode != "initial":
                    content_pass(source, s, plan, cmp, res, gov, run_id, pre)
                if s.kind == CUSTOMER:
                    res.check = cmp
            except HakobuError as exc:
                if s.critical:
                    raise
                s.fail(exc)              # reported as a failed warehouse/<table>, never "ok"
                res.warehouse, res.warehouse_error = "failed", str(exc)
    hooks("table_done", table=res.table, plan=plan, sinks=sinks, result=res)


def announce_deletes(sinks: list[Sink], run_id: str) -> None:
    """The customer's key check deleted rows that vanished from the source: a deferred
    warehouse sink that staged nothing this run (a night of deletes only) stages an empty
    slice, so the merge step checks this tenant's warehouse slice too — it checks only the
    tenants whose slices it merged, and without one the deleted rows would stay there until
    some row of the table changed."""
    for s in sinks:
        if s.kind != CUSTOMER and s.active and getattr(s.dest, "deferred", False) \
                and not s.merges:
            s.merge([], run_id=f"{run_id}_del")


def _reconciles(mode: str, sink: Sink) -> bool:
    """Whether this run's read leaves deletes for the key check to find: an incremental one,
    and a first load into a table that already held rows (a table read whole until it grew, or
    re-read because a column was added): a first load merges, it deletes nothing. A table made
    this run holds only what was read (`evolution.created`; None: not known here, checked)."""
    if mode == "incremental":
        return True
    return mode == "initial" and not (sink.evolution is not None and sink.evolution.created)


def content_pass(source, sink: Sink, plan: TablePlan, cmp, res: TableResult, gov, run_id: str,
                 pre: str) -> None:
    """Tonight's content slice for one sink; its outcome goes on the key comparison (what the
    check reports) and into the metadata. A slice that still differs after its repair fails
    the customer's `in_sync_with_source` check (the rows merged this run stay delivered); for
    the warehouse, which has no such check, it fails that sink (a failed warehouse/<table>)."""
    content, note = nightly_content(source, sink, plan, cmp, every=plan.verify_every, gate=gov,
                                    run_id=f"{run_id}_vfy")
    cmp.content, cmp.note = content, note
    res.extra.update({pre + k: v for k, v in content.metadata().items()})
    if note is not None:
        res.extra.update({pre + k: v for k, v in note.metadata().items()})
    if not (content.equal or content.repaired or content.skipped):
        if sink.kind == CUSTOMER:
            log.error("%s/%s: content still differs after its repair: %s", plan.tenant,
                      sink.table, content.summary())
            return
        raise LoadError(f"content still differs after its repair: {content.summary()}",
                        tenant=plan.tenant, table=sink.table,
                        hint=f"run `hakobu verify {plan.tenant} --tables {plan.table}` for the "
                             "rows; a backfill reloads the table")
