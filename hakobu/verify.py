"""Content verification: every delivered value equals the source's, bucket by bucket.

The key checksums (hakobu/checksums.py) prove that BigQuery holds the source's *keys*; a lost
update, a cursor that went backwards or a value rounded on the way keeps the keys and changes the
content. Here each side computes, per primary-key bucket (the same bucketing as the keys), COUNT
and BIT_XOR of a 60-bit hash of every delivered column in one canonical text
(hakobu/canonical.py) — one aggregate query on MariaDB, one on BigQuery, nothing moves but a
few numbers per bucket. Buckets whose digest differs are drilled into, row by row (key text and
row hash from both sides, for those buckets only), which names each row missing, extra or
changed; a repair re-reads exactly those rows from the source (by key, through the read gate),
merges them through the table's sink (the warehouse's converts and hashes as in a delivery) and
deletes the extra ones. The warehouse is verified through its own policies: dropped columns are
not compared, hashed ones must hold a hash (canonical.py).

Content digests read whole rows, so a night verifies only a slice (`night_slice`): bucket b is
compared on the nights where b ≡ night + offset (mod verify_every), so every bucket once every
`verify_every` nights at about 1/verify_every of a full read per night (`GOAL verify-cost` in
make bench). Range buckets are read as primary-key ranges (the clustered index); tables whose
keys are hash-bucketed (non-integer keys) cannot read a slice of hash buckets without reading
every row, so they are verified whole on one night in `verify_every` (the offset spreads a
tenant's tables over the nights; hakobu/rotation.py). `hakobu verify` compares every bucket
at once.

Here: what is compared, the drill-down and the repair decisions. The queries are the adapters',
behind hakobu.ports.SourceChecks / DestinationChecks.
"""

import contextlib
import json
import time
from dataclasses import dataclass, field

from hakobu.bucketing import MASK64, Bucketing
from hakobu.canonical import Part, comparable
from hakobu.checksums import read_by_keys, size_bucketing, slot
from hakobu.errors import LoadError
from hakobu.plan import TablePlan
from hakobu.ports import ContentRow
# the rotation, re-exported: callers (assets.checks, tests) take it from here, and nightly_content
# looks night_number up in this module (tests pin the night by patching hakobu.verify)
from hakobu.rotation import (VerifyNote, next_note, night_number, night_slice, slice_number,
                             table_offset)

DEFAULT_VERIFY_EVERY = 7
DRILL_BUCKETS = 200         # differing buckets drilled into per source query

__all__ = ["ContentComparison", "VerifyNote", "compare_content", "next_note", "night_number",
           "night_slice", "nightly_content", "repair_content", "slice_number", "table_offset"]


@dataclass
class ContentComparison:
    """What one content comparison of a table looked at and found."""

    table: str
    bucketing: Bucketing
    buckets: list[int] | None               # the buckets compared; None: all of them
    slice_desc: str = "all buckets"
    buckets_compared: int = 0
    differing: list[int] = field(default_factory=list)
    missing: list[tuple] = field(default_factory=list)      # source keys (raw) not in BigQuery
    extra: list[str] = field(default_factory=list)          # BigQuery key texts not in source
    changed: list[tuple] = field(default_factory=list)      # source keys whose content differs
    duplicated: list[str] = field(default_factory=list)     # key texts BigQuery holds twice
    rows_compared: int = 0
    repaired: bool = False
    rows_merged: int = 0
    rows_deleted: int = 0
    seconds: float = 0.0
    skipped: str | None = None              # why nothing was compared (e.g. no key)

    @property
    def equal(self) -> bool:
        return not self.differing

    def counts(self) -> dict:
        return {"missing": len(self.missing), "extra": len(self.extra),
                "changed": len(self.changed), "duplicated": len(self.duplicated)}

    def summary(self) -> str:
        if self.skipped:
            return f"content not compared: {self.skipped}"
        c = self.counts()
        head = (f"content of {self.buckets_compared} buckets ({self.slice_desc}), "
                f"{self.rows_compared} rows")
        if self.equal:
            return f"{head}: equal"
        state = "repaired" if self.repaired else "DIFFERENT"
        return (f"{head}: {state}: {len(self.differing)} buckets differ; missing {c['missing']}, "
                f"extra {c['extra']}, changed {c['changed']}, duplicated {c['duplicated']}")

    def metadata(self) -> dict:
        return {"content_buckets_compared": self.buckets_compared,
                "content_slice": self.slice_desc if not self.skipped else f"none ({self.skipped})",
                "content_rows_compared": self.rows_compared,
                "content_buckets_differing": len(self.differing),
                "content_rows_missing": len(self.missing),
                "content_rows_extra": len(self.extra),
                "content_rows_changed": len(self.changed),
                "content_rows_duplicated": len(self.duplicated),
                "content_repaired": self.repaired,
                "content_rows_merged": self.rows_merged,
                "content_rows_deleted": self.rows_deleted,
                "content_seconds": round(self.seconds, 3)}


# -- what is compared ---------------------------------------------------------------------------

def parts_of(plan: TablePlan, sink=None) -> list[Part]:
    """The delivered columns of a sink (the customer's: the exported plan's; the warehouse's:
    its columns, hashed ones marked, dropped ones absent). Float values only by NULL-ness."""
    wt = getattr(sink, "wt", None)
    if wt is None:
        return [Part(s, s.bq_name) for s in plan.specs]
    return [Part(plan.spec(src), spec.bq_name, hashed=src in wt.hashed)
            for spec, src in zip(wt.specs, wt.source_names)]


def uncompared_columns(parts: list[Part]) -> list[str]:
    """Columns whose value (beyond NULL-ness) the digest cannot compare (FLOAT/DOUBLE)."""
    return [p.dest_name for p in parts if not p.hashed and not comparable(p.spec)]


def json_equal(a: str | None, b: str | None) -> bool:
    """Two JSON texts hold the same value (the engines escape and print numbers differently:
    '"\\u00e9"' and '"é"', '1e3' and '1000.0' are equal)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


# -- compare ------------------------------------------------------------------------------------

def _digests(rows) -> dict[int, tuple[int, int]]:
    return {int(b): (int(n), int(x or 0) & MASK64) for b, n, x in rows}


def compare_content(source, dest, plan: TablePlan, *, table: str | None = None, sink=None,
                    bucketing: Bucketing | None = None, buckets: list[int] | None = None,
                    slice_desc: str = "all buckets", gate=None, drill: bool = True
                    ) -> ContentComparison:
    """Compare the content of `buckets` (None: all) of the tenant's table; drill into the
    differing ones row by row. Read-only."""
    t0 = time.monotonic()
    table = table or plan.bq_table
    parts = parts_of(plan, sink)
    b = bucketing or size_bucketing(source, dest, plan, table, gate=gate)
    cmp = ContentComparison(table, b, buckets, slice_desc=slice_desc)
    if b.mode == "count":
        cmp.skipped = "no primary key, or a key without a canonical text (FLOAT)"
        return cmp
    if buckets is not None and not buckets:
        cmp.seconds = time.monotonic() - t0
        return cmp
    with slot(gate, plan):
        src = _digests(source.content_digests(plan, b, parts, buckets))
    dst = _digests(dest.content_digests(table, plan, b, parts, buckets))
    keys = set(src) | set(dst)
    cmp.buckets_compared = len(keys) if buckets is None else len(buckets)
    cmp.rows_compared = sum(v[0] for v in src.values())
    cmp.differing = sorted(k for k in keys if src.get(k, (0, 0)) != dst.get(k, (0, 0)))
    if drill and cmp.differing:
        _drill(source, dest, plan, b, parts, cmp, gate)
    cmp.seconds = time.monotonic() - t0
    return cmp


def _drill(source, dest, plan: TablePlan, b: Bucketing, parts: list[Part],
           cmp: ContentComparison, gate) -> None:
    """Settle the candidate buckets row by row: name every row missing, extra, changed or
    duplicated in BigQuery; a bucket whose rows are all equal (its digests differed only in how
    the engines print a JSON value) is no longer differing."""
    real: set[int] = set()
    for i in range(0, len(cmp.differing), DRILL_BUCKETS):
        group = cmp.differing[i:i + DRILL_BUCKETS]
        with slot(gate, plan):
            src = {r.key_text: r for r in source.content_rows(plan, b, parts, group)}
        dst: dict[str, list[ContentRow]] = {}
        for r in dest.content_rows(cmp.table, plan, b, parts, group):
            dst.setdefault(r.key_text, []).append(r)
        real |= classify(src, dst, cmp)
    cmp.differing = sorted(real)


def _same(a: ContentRow, b: ContentRow) -> bool:
    return ((a.hash ^ b.hash) & MASK64) == 0 and len(a.json) == len(b.json) \
        and all(json_equal(x, y) for x, y in zip(a.json, b.json))


def classify(src: dict[str, ContentRow], dst: dict[str, list[ContentRow]],
             cmp: ContentComparison) -> set[int]:
    """Pure: add each drilled row to cmp.missing / extra / changed / duplicated; return the
    buckets that really differ."""
    real: set[int] = set()
    for kt, row in src.items():
        got = dst.get(kt)
        if got is None:
            cmp.missing.append(row.key)
        elif len(got) > 1:
            cmp.duplicated.append(kt)
            cmp.changed.append(row.key)          # its copies go, the source row is merged
        elif not _same(row, got[0]):
            cmp.changed.append(row.key)
        else:
            continue
        real.add(row.bucket)
    for kt, got in dst.items():
        if kt not in src:
            cmp.extra.append(kt)
            if len(got) > 1:
                cmp.duplicated.append(kt)
            real.add(got[0].bucket)
    return real


# -- repair -------------------------------------------------------------------------------------

def repair_content(source, dest, plan: TablePlan, sink, cmp: ContentComparison, *, gate=None,
                   run_id: str = "", max_delete_fraction: float = 0.5,
                   dest_rows: int | None = None) -> ContentComparison:
    """Make the drilled rows equal: re-read missing and changed rows by key and merge them
    through the sink; delete the extra ones. Idempotent. Returns the comparison of the same
    buckets afterwards (repaired=True when it is equal)."""
    if cmp.equal or cmp.skipped:
        return cmp
    if cmp.extra or cmp.duplicated:
        total = dest_rows if dest_rows is not None else \
            dest.key_stats(cmp.table, plan, None).rows
        if len(cmp.extra) > max_delete_fraction * max(total, 1):
            raise LoadError(
                f"refusing to delete {len(cmp.extra)} of {total} BigQuery rows found only in "
                "BigQuery by the content comparison", tenant=plan.tenant, table=cmp.table,
                hint="check the tenant's schema and tenant_value; `hakobu backfill` reloads "
                     "the table in full")
        cmp.rows_deleted = dest.delete_keys(cmp.table, plan, cmp.extra) if cmp.extra else 0
    if cmp.duplicated:    # every copy goes; a key the source has is merged again below
        extra = set(cmp.extra)
        again = [k for k in cmp.duplicated if k not in extra]
        cmp.rows_deleted += dest.delete_keys(cmp.table, plan, again) if again else 0
    todo = cmp.missing + cmp.changed
    if todo:
        cmp.rows_merged = _merge_rows(source, plan, sink, todo, gate, run_id)
    after = compare_content(source, dest, plan, table=cmp.table, sink=sink,
                            bucketing=cmp.bucketing, buckets=cmp.differing,
                            slice_desc=cmp.slice_desc, gate=gate)
    cmp.repaired = after.equal
    if not after.equal:
        cmp.differing = after.differing
    return cmp


def _merge_rows(source, plan: TablePlan, sink, keys: list[tuple], gate, run_id: str) -> int:
    sink.open()
    try:
        for batch in read_by_keys(source, plan, keys, gate):
            sink.write(batch)
        files = sink.take()
        if not files:
            return 0
        stats = sink.merge(files, run_id=f"{run_id}_vfy")
        return stats.rows_staged
    finally:
        with contextlib.suppress(Exception):
            sink.discard()


def column_info(parts: list[Part]) -> str:
    """For the check's metadata: which columns the digest compares, and how."""
    floats = uncompared_columns(parts)
    hashed = [p.dest_name for p in parts if p.hashed]
    out = f"{len(parts)} columns"
    if floats:
        out += f"; NULL-ness only (FLOAT/DOUBLE): {', '.join(floats)}"
    if hashed:
        out += f"; hashed (must hold a hash): {', '.join(hashed)}"
    return out


def nightly_content(source, sink, plan: TablePlan, keys_cmp, *, every: int, gate=None,
                    run_id: str = "", night: int | None = None) -> tuple[ContentComparison,
                                                                       VerifyNote | None]:
    """Tonight's slice of the content rotation for one sink's table, repaired when it differs.

    `keys_cmp` is this run's key comparison (hakobu.checksums.Comparison: its bucketing and the
    buckets that exist). Skipped, with the reason, when tonight's slice was already verified
    (several runs a night verify it once). Returns the comparison and the new note (None when
    nothing was compared)."""
    night = night_number() if night is None else night
    b = keys_cmp.bucketing
    every = max(1, int(every))
    offset = table_offset(plan.tenant, sink.table, every)
    r = slice_number(night, offset, every)
    prev = VerifyNote.from_dict(sink.dest.read_note(sink.table))
    desc = b.describe()
    if prev is not None and prev.verified_tonight(every, desc, r, night):
        cmp = ContentComparison(sink.table, b, [], slice_desc="already verified tonight")
        return cmp, prev
    buckets, slice_desc = night_slice(b, keys_cmp.bucket_ids, every, night, offset)
    cmp = compare_content(source, sink.dest, plan, table=sink.table, sink=sink, bucketing=b,
                          buckets=buckets, slice_desc=slice_desc, gate=gate)
    if not cmp.equal and not cmp.skipped:
        cmp = repair_content(source, sink.dest, plan, sink, cmp, gate=gate, run_id=run_id,
                             dest_rows=keys_cmp.dest_rows)
    if cmp.skipped:
        return cmp, prev
    whole = every == 1 or (b.mode == "hash" and r == 0)
    if b.mode == "hash" and not whole:
        return cmp, prev           # a hash-bucketed table's off night: nothing to record
    note = next_note(prev, every, desc, r, night, whole)
    if cmp.equal or cmp.repaired:
        sink.dest.write_note(sink.table, note.to_dict(), run_id)
        return cmp, note
    return cmp, prev
