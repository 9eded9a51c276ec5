"""Compare a tenant's table in the source with its copy in BigQuery, row by row.

Used by the demo and the tests to prove "BigQuery equals the source": both sides are read in full
and normalised (JSON parsed, instants in UTC), then compared by primary key. For large tables the
bucket checksums of hakobu.checksums are the scalable form of the same question.
"""

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal

from hakobu.plan import TablePlan
from resources.bigquery_dest import BigQueryDestination
from resources.mysql_source import MySQLSource, iter_chunks


@dataclass
class Diff:
    source_rows: int
    dest_rows: int
    missing: list = field(default_factory=list)     # keys in source, not in BigQuery
    extra: list = field(default_factory=list)       # keys in BigQuery, not in source
    different: list = field(default_factory=list)   # keys whose values differ
    duplicates: int = 0                             # BigQuery rows sharing a key

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different or self.duplicates)

    def summary(self) -> str:
        if self.equal:
            return f"equal ({self.source_rows} rows)"
        return (f"DIFFERENT: source {self.source_rows} rows, BigQuery {self.dest_rows}; "
                f"missing {len(self.missing)}, extra {len(self.extra)}, "
                f"different {len(self.different)}, duplicated keys {self.duplicates}")


def _norm(v):
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.timezone.utc)
    if isinstance(v, Decimal):
        return v.normalize()
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.dumps(json.loads(v), sort_keys=True)
        except ValueError:
            return v
    return v


def source_rows(source: MySQLSource, plan: TablePlan) -> dict[tuple, tuple]:
    out = {}
    names = [s.name for s in plan.specs]
    for batch, _ in iter_chunks(source, plan, "full", None, None):
        cols = [batch.column(n).to_pylist() for n in names]
        for i in range(batch.num_rows):
            row = tuple(_norm(c[i]) for c in cols)
            out[tuple(row[names.index(k)] for k in plan.primary_key)] = row
    return out


def dest_rows(dest: BigQueryDestination, plan: TablePlan) -> tuple[dict[tuple, tuple], int, int]:
    names = [s.bq_name for s in plan.specs]          # the columns under their BigQuery names
    sel = ", ".join(f"TO_JSON_STRING(`{n}`) AS `{n}`" if s.bq_type == "JSON" else f"`{n}`"
                    for n, s in zip(names, plan.specs))
    rows = dest.rows(f"SELECT {sel} FROM {dest.ref(plan.bq_table)}")
    out, dupes = {}, 0
    for r in rows:
        row = tuple(_norm(r[n]) for n in names)
        key = tuple(row[names.index(plan.bq(k))] for k in plan.primary_key)
        dupes += key in out
        out[key] = row
    return out, dupes, len(rows)


def diff_table(source: MySQLSource, dest: BigQueryDestination, plan: TablePlan) -> Diff:
    src = source_rows(source, plan)
    dst, dupes, n = dest_rows(dest, plan)
    d = Diff(len(src), n, duplicates=dupes)
    for k, row in src.items():
        if k not in dst:
            d.missing.append(k)
        elif dst[k] != row:
            d.different.append(k)
    d.extra = [k for k in dst if k not in src]
    return d
