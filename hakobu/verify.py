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
tenant's tables over the nights). `hakobu verify` compares every bucket at once.
"""

import contextlib
import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field

from hakobu.canonical import (Part, bq_key_text, bq_row_hash, bq_text, comparable, is_json,
                              my_key_text, my_row_hash, my_text)
from hakobu.checksums import (Bucketing, _bq_bucket, _bq_scope, _dest_slice, _from, _my_bucket,
                              _my_range, _my_rows, _ranges, _slot, _tenant_where, _where,
                              choose_bucketing, key_columns, read_by_keys, size_bucketing)
from hakobu.errors import LoadError
from hakobu.plan import TablePlan

DEFAULT_VERIFY_EVERY = 7
DRILL_BUCKETS = 200         # differing buckets drilled into per source query


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


def table_offset(tenant: str, table: str, n: int) -> int:
    """A stable offset per tenant and table, so a tenant's tables do not all verify their
    whole-table (hash-bucketed) pass on the same night."""
    h = hashlib.sha256(f"{tenant}\0{table}".encode()).digest()
    return int.from_bytes(h[:4], "big") % max(1, n)


def night_number(now: dt.datetime | None = None) -> int:
    """The night a run belongs to: the UTC date's ordinal (a run at 02:00 and one at 23:00
    of the same UTC day verify the same slice)."""
    return (now or dt.datetime.now(dt.timezone.utc)).date().toordinal()


def night_slice(b: Bucketing, buckets: set[int], n: int, night: int, offset: int
                ) -> tuple[list[int], str]:
    """Pure: which buckets tonight's content pass compares, and a description."""
    n = max(1, int(n))
    r = (night + offset) % n
    if n == 1:
        return sorted(buckets), "all buckets (verify_every 1)"
    if b.mode in ("int", "prefix"):
        return sorted(x for x in buckets if x % n == r), f"buckets ≡ {r} mod {n}"
    if b.mode == "hash":
        if r == 0:
            return sorted(buckets), f"all buckets (hash-bucketed: whole table 1 night in {n})"
        return [], f"none tonight (hash-bucketed: whole table on night ≡ {offset % n} mod {n})"
    return [], "none (no key to bucket by)"


# -- SQL ----------------------------------------------------------------------------------------

def _my_filter(plan: TablePlan, b: Bucketing, buckets: list[int] | None) -> list[str]:
    conds = _tenant_where(plan)
    if buckets is None:
        return conds
    if b.mode in ("int", "prefix"):
        return conds + [_my_range(plan, b, _ranges(b, buckets))]
    return conds + [f"{_my_bucket(plan, b)} IN ({', '.join(str(int(x)) for x in buckets)})"]


def source_digest_sql(plan: TablePlan, b: Bucketing, parts: list[Part],
                      buckets: list[int] | None) -> str:
    """Per bucket: rows and BIT_XOR of row hashes over the delivered columns. With buckets of a
    range mode, a range scan of the primary key per run of adjacent buckets."""
    return (f"SELECT {_my_bucket(plan, b)} AS b, COUNT(*) AS n, BIT_XOR({my_row_hash(parts)}) "
            f"AS x FROM {_from(plan)}{_where(_my_filter(plan, b, buckets))} "
            "GROUP BY 1 ORDER BY NULL")


def _bq_filter(plan: TablePlan, b: Bucketing, buckets: list[int] | None, dest) -> str:
    conds = []
    dslice = _dest_slice(dest)
    if dslice:
        conds.append(f"({dslice})")
    if buckets is not None:
        conds.append(_bq_scope(plan, b, buckets, "T"))
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def dest_digest_sql(plan: TablePlan, b: Bucketing, parts: list[Part], table_ref: str,
                    buckets: list[int] | None, dest) -> str:
    return (f"SELECT {_bq_bucket(plan, b, 'T')} AS b, COUNT(*) AS n, "
            f"BIT_XOR({bq_row_hash(parts, 'T')}) AS x FROM {table_ref} T"
            f"{_bq_filter(plan, b, buckets, dest)} GROUP BY 1")


def _key_specs(plan: TablePlan):
    return [plan.spec(k) for k in key_columns(plan)]


def _split(parts: list[Part]) -> tuple[list[Part], list[Part]]:
    """(the parts hashed row by row, the JSON parts compared by parsed value in Python)."""
    json_parts = [p for p in parts if is_json(p.spec) and not p.hashed]
    return [p for p in parts if p not in json_parts], json_parts


def source_rows_sql(plan: TablePlan, b: Bucketing, parts: list[Part], buckets: list[int]) -> str:
    """Row level, for differing buckets only: the raw key (to re-read by), the bucket, the
    key's canonical text, the hash of the non-JSON columns and each JSON column's text."""
    from hakobu.plan import col_ref

    hashed, json_parts = _split(parts)
    raw = ", ".join(
        (f"CAST({col_ref(k)} AS CHAR)" if plan.spec(k).info.data_type == "time" else col_ref(k))
        + f" AS `_k{i}`" for i, k in enumerate(plan.primary_key))
    js = "".join(f", {my_text(p.spec)} AS `_j{i}`" for i, p in enumerate(json_parts))
    return (f"SELECT {raw}, {_my_bucket(plan, b)} AS `_b`, {my_key_text(_key_specs(plan))} AS "
            f"`_kt`, {my_row_hash(hashed)} AS `_h`{js} FROM {_from(plan)}"
            f"{_where(_my_filter(plan, b, buckets))}")


def dest_rows_sql(plan: TablePlan, b: Bucketing, parts: list[Part], table_ref: str,
                  buckets: list[int], dest) -> str:
    hashed, json_parts = _split(parts)
    js = "".join(f", {bq_text(p.spec, p.dest_name, 'T')} AS `_j{i}`"
                 for i, p in enumerate(json_parts))
    return (f"SELECT {_bq_bucket(plan, b, 'T')} AS `_b`, {bq_key_text(_key_specs(plan), 'T')} "
            f"AS `_kt`, {bq_row_hash(hashed, 'T')} AS `_h`{js} FROM {table_ref} T"
            f"{_bq_filter(plan, b, buckets, dest)}")


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
    return {int(b): (int(n), int(x or 0) & ((1 << 64) - 1)) for b, n, x in rows}


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
    with _slot(gate, plan):
        src = _digests(_my_rows(source, source_digest_sql(plan, b, parts, buckets), plan))
    table_ref = dest.ref(table)
    dst = _digests((r["b"], r["n"], r["x"]) for r in dest.rows(
        dest_digest_sql(plan, b, parts, table_ref, buckets, dest)))
    keys = set(src) | set(dst)
    cmp.buckets_compared = len(keys) if buckets is None else len(buckets)
    cmp.rows_compared = sum(v[0] for v in src.values())
    cmp.differing = sorted(k for k in keys if src.get(k, (0, 0)) != dst.get(k, (0, 0)))
    if drill and cmp.differing:
        _drill(source, dest, plan, b, parts, table_ref, cmp, gate)
    cmp.seconds = time.monotonic() - t0
    return cmp


def _drill(source, dest, plan, b, parts, table_ref, cmp: ContentComparison, gate) -> None:
    """Settle the candidate buckets row by row: name every row missing, extra, changed or
    duplicated in BigQuery; a bucket whose rows are all equal (its digests differed only in how
    the engines print a JSON value) is no longer differing."""
    mask = (1 << 64) - 1
    n = len(plan.primary_key)
    _, json_parts = _split(parts)
    real: set[int] = set()
    for i in range(0, len(cmp.differing), DRILL_BUCKETS):
        group = cmp.differing[i:i + DRILL_BUCKETS]
        with _slot(gate, plan):
            src_rows = _my_rows(source, source_rows_sql(plan, b, parts, group), plan)
        src = {r[n + 1]: (tuple(r[:n]), int(r[n]), int(r[n + 2]) & mask, r[n + 3:])
               for r in src_rows}
        dst: dict[str, list] = {}
        for r in dest.rows(dest_rows_sql(plan, b, parts, table_ref, group, dest)):
            dst.setdefault(r["_kt"], []).append(
                (int(r["_b"]), int(r["_h"]) & mask,
                 tuple(r[f"_j{j}"] for j in range(len(json_parts)))))
        for kt, (raw, bucket, h, js) in src.items():
            got = dst.get(kt)
            if got is None:
                cmp.missing.append(raw)
            elif len(got) > 1:
                cmp.duplicated.append(kt)
                cmp.changed.append(raw)          # its copies go, the source row is merged
            elif got[0][1] != h or not all(json_equal(x, y) for x, y in zip(js, got[0][2])):
                cmp.changed.append(raw)
            else:
                continue
            real.add(bucket)
        for kt, got in dst.items():
            if kt not in src:
                cmp.extra.append(kt)
                if len(got) > 1:
                    cmp.duplicated.append(kt)
                real.add(got[0][0])
    cmp.differing = sorted(real)


# -- repair -------------------------------------------------------------------------------------

def repair_content(source, dest, plan: TablePlan, sink, cmp: ContentComparison, *, gate=None,
                   run_id: str = "", max_delete_fraction: float = 0.5,
                   dest_rows: int | None = None) -> ContentComparison:
    """Make the drilled rows equal: re-read missing and changed rows by key and merge them
    through the sink; delete the extra ones. Idempotent. Returns the comparison of the same
    buckets afterwards (repaired=True when it is equal)."""
    if cmp.equal or cmp.skipped:
        return cmp
    table_ref = dest.ref(cmp.table)
    if cmp.extra or cmp.duplicated:
        total = dest_rows if dest_rows is not None else _count(dest, table_ref)
        if len(cmp.extra) > max_delete_fraction * max(total, 1):
            raise LoadError(
                f"refusing to delete {len(cmp.extra)} of {total} BigQuery rows found only in "
                "BigQuery by the content comparison", tenant=plan.tenant, table=cmp.table,
                hint="check the tenant's schema and tenant_value; `hakobu backfill` reloads "
                     "the table in full")
        cmp.rows_deleted = _delete_keys(dest, plan, cmp.table, table_ref, cmp.extra)
    if cmp.duplicated:    # every copy goes; a key the source has is merged again below
        cmp.rows_deleted += _delete_keys(dest, plan, cmp.table, table_ref,
                                         [k for k in cmp.duplicated if k not in set(cmp.extra)])
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


def _count(dest, table_ref: str) -> int:
    scope = _dest_slice(dest)
    return int(dest.rows(f"SELECT COUNT(*) AS n FROM {table_ref} T"
                         + (f" WHERE {scope}" if scope else ""))[0]["n"])


def _delete_keys(dest, plan: TablePlan, table: str, table_ref: str, keys: list[str]) -> int:
    """Delete the rows (every copy) whose key text is in `keys`, within the tenant's slice."""
    from google.cloud import bigquery

    deleted = 0
    kt = bq_key_text(_key_specs(plan), "T")
    scope = _dest_slice(dest)
    for i in range(0, len(keys), 10_000):
        where = f"{kt} IN UNNEST(@keys)" + (f" AND ({scope})" if scope else "")
        job = dest.sql(f"DELETE FROM {table_ref} T WHERE {where}",
                       [bigquery.ArrayQueryParameter("keys", "STRING", keys[i:i + 10_000])],
                       table=table)
        deleted += job.num_dml_affected_rows or 0
    return deleted


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



# -- the rotation's state -----------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyNote:
    """Which slices of a table's content were verified on which night (kept in the destination's
    state table beside the watermark). A rotation restarts when verify_every or the bucketing
    changes (the slices would mean other buckets)."""

    every: int
    bucketing: str
    slices: dict                      # slice number (str) → ISO date it was last verified

    @classmethod
    def from_dict(cls, data: dict | None) -> "VerifyNote | None":
        if not data:
            return None
        return cls(int(data.get("every", 0)), str(data.get("bucketing", "")),
                   dict(data.get("slices", {})))

    def to_dict(self) -> dict:
        return {"every": self.every, "bucketing": self.bucketing, "slices": self.slices}

    def verified_tonight(self, every: int, bucketing: str, r: int, night: int) -> bool:
        return (self.every == every and self.bucketing == bucketing
                and self.slices.get(str(r)) == dt.date.fromordinal(night).isoformat())

    @property
    def full_pass(self) -> tuple[str, str] | None:
        """(first, last) night of the latest complete pass: every bucket was compared between
        those dates. None while a rotation is incomplete."""
        if self.every < 1 or len(self.slices) < self.every:
            return None
        dates = sorted(self.slices.values())
        return dates[0], dates[-1]

    def describe(self) -> str:
        fp = self.full_pass
        if fp is None:
            return (f"content rotation: {len(self.slices)} of {self.every} slices verified, no "
                    "full pass yet")
        return f"last full content pass: every bucket compared between {fp[0]} and {fp[1]}"

    def metadata(self) -> dict:
        fp = self.full_pass
        return {"content_verify_every": self.every,
                "content_slices_verified": len(self.slices),
                "content_full_pass_completed": fp[1] if fp else "-",
                "content_full_pass_since": fp[0] if fp else "-"}


def next_note(prev: "VerifyNote | None", every: int, bucketing: str, r: int, night: int,
              whole: bool) -> VerifyNote:
    """Pure: the note after slice r (or the whole table) was verified on `night`."""
    today = dt.date.fromordinal(night).isoformat()
    slices = {} if prev is None or prev.every != every or prev.bucketing != bucketing \
        else dict(prev.slices)
    if whole:
        slices = {str(i): today for i in range(every)}
    else:
        slices[str(r)] = today
    return VerifyNote(every, bucketing, slices)


def slice_number(night: int, offset: int, every: int) -> int:
    return (night + offset) % max(1, every)


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
