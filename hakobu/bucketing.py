"""How a table's primary keys are cut into buckets for one comparison (pure).

The key checksums (hakobu.checksums) and the content digests (hakobu.verify) compare the source
and BigQuery bucket by bucket; both sides must put every key in the same bucket, so the
bucketing is decided once per comparison (hakobu.checksums.size_bucketing) and handed to both
adapters, which render it in their SQL (resources.mysql_checks, resources.bigquery_checks) — or,
in the fast tests, in Python (tests/fakes/checks.py). The modes and why they are what they are:
the docstring of hakobu/checksums.py.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from hakobu.canonical import key_comparable
from hakobu.plan import TablePlan
from hakobu.types import INT_TYPES, ColumnSpec

DEFAULT_BUCKET_ROWS = 4000
TWO_63 = 1 << 63
TWO_64 = 1 << 64
MASK64 = TWO_64 - 1

Mode = Literal["int", "prefix", "hash", "count"]


@dataclass(frozen=True)
class Bucketing:
    """How keys are put in buckets, identical for both sides of one comparison."""

    mode: Mode
    column: str | None = None       # range column ("int", "prefix"), by its MySQL name
    shift: int = 0                  # bucket = FLOOR(column / 2**shift)
    modulus: int = 1                # "hash": bucket = MOD(h, modulus)
    unsigned: bool = False          # BIGINT UNSIGNED range column (NUMERIC(20, 0) in BigQuery)

    @property
    def ranged(self) -> bool:
        """Buckets are ranges of the range column (read as primary-key range scans)."""
        return self.mode in ("int", "prefix")

    def bounds(self, bucket: int) -> tuple[int, int] | None:
        """Inclusive key range of a bucket (range modes)."""
        if not self.ranged:
            return None
        lo = bucket << self.shift
        return lo, lo + (1 << self.shift) - 1

    def describe(self) -> str:
        if self.ranged:
            return (f"{self.mode}: FLOOR({self.column} / 2^{self.shift}) "
                    f"({1 << self.shift} keys wide)")
        if self.mode == "hash":
            return f"hash: MOD(md5_60(key), {self.modulus})"
        return "count only (no primary key, or a FLOAT key)"


def key_columns(plan: TablePlan) -> tuple[str, ...]:
    """The primary key without the tenant column (constant within one tenant's rows)."""
    if plan.tenant_column is None:
        return plan.primary_key
    rest = tuple(c for c in plan.primary_key if c.lower() != plan.tenant_column.lower())
    return rest or plan.primary_key


def key_specs(plan: TablePlan) -> list[ColumnSpec]:
    return [plan.spec(k) for k in key_columns(plan)]


def _is_int(spec: ColumnSpec) -> bool:
    return spec.info.data_type in INT_TYPES


def _is_unsigned_bigint(spec: ColumnSpec) -> bool:
    return spec.info.data_type == "bigint" and spec.info.unsigned


def choose_bucketing(plan: TablePlan, rows: int, lo: Any = None, hi: Any = None,
                     distinct: int | None = None, bucket_rows: int = DEFAULT_BUCKET_ROWS
                     ) -> Bucketing:
    """Pure: the bucketing for a table of `rows` keys whose range column spans lo..hi."""
    if plan.full_replace or not plan.primary_key:
        return Bucketing("count")
    keys = key_columns(plan)
    if not all(key_comparable(plan.spec(k)) for k in keys):
        return Bucketing("count")    # e.g. a FLOAT key: no text both engines agree on
    first = plan.spec(keys[0])
    bucket_rows = max(1, int(bucket_rows))
    if _is_int(first):
        mode: Mode = "int" if len(keys) == 1 else "prefix"
        wanted = max(1, math.ceil(rows / bucket_rows))
        if mode == "prefix" and distinct is not None and distinct < wanted:
            mode = "hash"   # too few values of the leading column to cut the table finely
        if mode != "hash":
            unsigned = _is_unsigned_bigint(first)
            shift = 0
            if rows and lo is not None and hi is not None:
                span = int(hi) - int(lo) + 1
                shift = max(0, round(math.log2(max(1.0, span * bucket_rows / rows))))
            shift = min(shift, 63 if unsigned else 62)
            if unsigned:
                shift = max(shift, 1)   # bucket ids of unsigned keys must fit INT64
            return Bucketing(mode, column=first.name, shift=shift, unsigned=unsigned)
    return Bucketing("hash", modulus=max(1, math.ceil(rows / bucket_rows)))


def ranges(b: Bucketing, buckets: Iterable[int]) -> list[tuple[int, int]]:
    """Adjacent buckets merged into inclusive key ranges (range modes)."""
    out: list[list[int]] = []
    for x in sorted(buckets):
        lo, hi = b.bounds(x)
        if out and out[-1][1] + 1 == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]
