"""BigQuery column types and how a target table evolves: pure, no client.

hakobu's own names in a dataset (state table, staging and shadow prefixes, its columns), the
parsed column type (`BqType`), what a change of a column's type means (`type_change`,
`supertype`), and the plan of how a live table must change to take a run's columns
(`plan_evolution`). resources.bigquery_dest runs the plans against BigQuery; the warehouse's
per-column markers are in hakobu.markers.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hakobu.naming import source_note
from hakobu.types import ColumnSpec

STATE_TABLE = "_hakobu_state"
NOTE_SUFFIX = "#verify"          # state row of a table's content-verification rotation
KEYS_SUFFIX = "#keys"            # state row: the key stats that sized its checksum buckets
STAGING_PREFIX = "_hakobu_stg_"
SHADOW_PREFIX = "_hakobu_shadow_"
SYNCED_AT = "_hakobu_synced_at"
SEQ = "_hakobu_seq"
CLUSTERABLE = {"INT64", "STRING", "NUMERIC", "BIGNUMERIC", "DATE", "DATETIME", "TIMESTAMP", "BOOL"}
_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "BIGNUMERIC": "NUMERIC",
            "BIGDECIMAL": "NUMERIC", "DECIMAL": "NUMERIC"}


def base_type(bq_type: str) -> str:
    """INTEGER/INT64, BOOLEAN/BOOL, NUMERIC(p,s)/BIGNUMERIC → one comparable name.

    (The emulator reports BIGNUMERIC as NUMERIC; parameters are not compared.)
    """
    name = bq_type.split("(")[0].strip().upper()
    return _ALIASES.get(name, name)



# -- column types and how a target table evolves (pure) -----------------------------------------

_CANONICAL = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "DECIMAL": "NUMERIC",
              "BIGDECIMAL": "BIGNUMERIC"}
DECIMALS = ("NUMERIC", "BIGNUMERIC")
# (integer digits, scale) a decimal column can hold: the limits of a parameterised type, which
# are also what an unparameterised one holds (NUMERIC is 38 digits with scale 9; BIGNUMERIC
# 76.76 digits with scale 38, of which 38 whole integer digits)
DECIMAL_LIMITS = {"NUMERIC": (29, 9), "BIGNUMERIC": (38, 38)}


@dataclass(frozen=True)
class BqType:
    """A BigQuery column type with its parameters: NUMERIC(12, 4) is not NUMERIC(10, 2)."""

    name: str                      # canonical: INT64, FLOAT64, BOOL, NUMERIC, STRING, JSON, ...
    precision: int | None = None   # None: unparameterised
    scale: int | None = None

    @classmethod
    def parse(cls, text: str) -> "BqType":
        """'NUMERIC(12, 4)', 'BIGNUMERIC(65, 30)', 'NUMERIC(20)', 'INT64', 'INTEGER' ..."""
        m = re.fullmatch(r"\s*([A-Za-z0-9_]+)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*", text)
        if not m:
            raise ValueError(f"not a BigQuery column type: {text!r}")
        p = int(m.group(2)) if m.group(2) else None
        s = int(m.group(3)) if m.group(3) else (0 if p is not None else None)
        return cls(_CANONICAL.get(m.group(1).upper(), m.group(1).upper()), p, s)

    @classmethod
    def of_field(cls, field: Any) -> "BqType":
        """From the table's schema as tables.get reports it (precision/scale for NUMERIC and
        BIGNUMERIC declared with parameters, None otherwise). `field` is a
        google.cloud.bigquery.SchemaField, read by its attributes only (no client import here)."""
        name = field.field_type.upper()
        p = field.precision if name in ("NUMERIC", "BIGNUMERIC", "DECIMAL", "BIGDECIMAL") else None
        s = field.scale if p is not None else None
        return cls(_CANONICAL.get(name, name), None if p is None else int(p),
                   None if p is None else int(s or 0))

    @property
    def decimal(self) -> bool:
        return self.name in DECIMALS

    @property
    def digits(self) -> tuple[int, int]:
        """(integer digits, scale) a decimal of this type holds."""
        if self.precision is None:
            return DECIMAL_LIMITS[self.name]
        return self.precision - (self.scale or 0), self.scale or 0

    def holds(self, other: "BqType") -> bool:
        """Every value of decimal type `other` fits this one exactly."""
        (ai, a_s), (bi, b_s) = self.digits, other.digits
        return ai >= bi and a_s >= b_s

    def __str__(self) -> str:
        if self.precision is None:
            return self.name
        return f"{self.name}({self.precision}, {self.scale})" if self.scale \
            else f"{self.name}({self.precision})"


@dataclass(frozen=True)
class TypeChange:
    action: str                    # "keep" | "widen" | "refuse"
    to: BqType | None = None       # widen: the column's new type
    why: str = ""


KEEP = TypeChange("keep")


def type_change(have: BqType, want: BqType, *, shared: bool = False) -> TypeChange:
    """What happens to a target column of type `have` when the source now gives `want`.

    Never a silent rounding or truncation: values of `want` are either held exactly (keep, or
    widen the column in place), or the table stops (refuse). In place means BigQuery's
    `ALTER COLUMN ... SET DATA TYPE`, which only takes a supertype: a decimal whose integer
    digits and scale are both at least the old ones, NUMERIC → BIGNUMERIC but not back. Other
    changes of type family (INT64 → NUMERIC for a BIGINT UNSIGNED, FLOAT64 → NUMERIC, NUMERIC →
    FLOAT64, DATETIME ↔ TIMESTAMP, BOOL → INT64) are refused even where BigQuery would coerce:
    they change what the rows delivered before mean to the customer's queries; a backfill
    reloads the table with the new type.

    A customer table mirrors one source column: a narrower new type (scale or integer digits
    down, BIGNUMERIC → NUMERIC) is refused too, because MySQL rounded the rows it already holds
    and BigQuery still has them unrounded. An unparameterised column (made by someone else, or
    by a CREATE ... AS SELECT, which does not carry parameters) that holds the new type is kept.
    A shared warehouse table (`shared`) holds every tenant's values: a wider column than this
    tenant needs is kept, and it is widened to a type holding both when neither holds the other.
    """
    if have.name == want.name and not have.decimal:
        return KEEP
    if {have.name, want.name} == {"STRING", "JSON"}:
        # the emulator reports JSON as STRING; a real STRING column that receives PARSE_JSON()
        # values fails loudly at the MERGE instead
        return KEEP
    said = f"BigQuery has {have}, source now gives {want}"
    if not (have.decimal and want.decimal):
        return TypeChange("refuse", why=f"{said}: a change of type BigQuery cannot make in place "
                                        "without changing what the delivered rows mean")
    if have == want:
        return KEEP
    if have.holds(want):
        if shared or have.precision is None:
            return KEEP
        return TypeChange("refuse", why=f"{said}: a narrower type (MySQL rounded the rows it "
                                        "holds; BigQuery still has them as delivered)")
    back_to_numeric = have.name == "BIGNUMERIC" and want.name == "NUMERIC"
    if have.precision is None:
        if have.name == "NUMERIC" and want.name == "BIGNUMERIC":
            return TypeChange("widen", BqType("BIGNUMERIC"))   # holds both exactly
        return TypeChange("refuse", why=f"{said}: wider than the column can be made")
    if shared:
        both = supertype(have, want)
        if both is None:
            return TypeChange("refuse", why=f"{said}: no BigQuery decimal holds both")
        return TypeChange("widen", both)
    if back_to_numeric:
        return TypeChange("refuse", why=f"{said}: BIGNUMERIC cannot become NUMERIC in place")
    if want.holds(have):
        return TypeChange("widen", want)
    return TypeChange("refuse", why=f"{said}: neither type holds the other's values (more "
                                    "integer digits but a smaller scale, or the reverse)")


def supertype(a: BqType, b: BqType) -> BqType | None:
    """The smallest parameterised decimal holding every value of both (None: none exists)."""
    (ai, a_s), (bi, b_s) = a.digits, b.digits
    whole, scale = max(ai, bi), max(a_s, b_s)
    name = "BIGNUMERIC" if ("BIGNUMERIC" in (a.name, b.name) or whole > 29 or scale > 9) \
        else "NUMERIC"
    max_whole, max_scale = DECIMAL_LIMITS[name]
    if whole > max_whole or scale > max_scale:
        return None
    return BqType(name, whole + scale, scale)


@dataclass
class Evolution:
    """What making a target table fit this run's columns did (materialization metadata)."""

    created: bool = False
    added: list[str] = field(default_factory=list)
    removed: dict[str, str] = field(default_factory=dict)          # column -> why
    widened: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (from, to)
    tables_dropped: list[str] = field(default_factory=list)        # leftovers holding them

    def metadata(self) -> dict:
        return {"policy_columns_removed": _listing(self.removed),
                "columns_widened": ", ".join(f"{c} {a} → {b}" for c, (a, b)
                                             in self.widened.items()) or "-",
                **({"policy_tables_dropped": ", ".join(self.tables_dropped)}
                   if self.tables_dropped else {})}


def _listing(reasons: dict[str, str]) -> str:
    return ", ".join(f"{c} ({why})" for c, why in reasons.items()) or "-"


@dataclass
class SharedEvolution(Evolution):
    rehashed: dict[str, str] = field(default_factory=dict)    # column -> hashed | unhashed
    cleared: dict[str, str] = field(default_factory=dict)     # column -> why (this tenant)
    adopted: dict[str, str] = field(default_factory=dict)     # unmarked column -> its form
    excluded: list[str] = field(default_factory=list)         # in the table, not this tenant's
    gens: dict[str, str] = field(default_factory=dict)        # delivered column -> generation

    @property
    def changed(self) -> list[str]:
        """Columns (re)created by this run: this tenant's slice has no values in them."""
        return list(dict.fromkeys([*self.added, *self.rehashed])) if not self.created else []

    def metadata(self) -> dict:
        return {**super().metadata(),
                "policy_columns_rehashed": _listing(self.rehashed),
                "policy_columns_cleared": _listing(self.cleared)}


@dataclass(frozen=True)
class EvolutionPlan:
    add: list[tuple[str, str]]                # (column, DDL type)
    drop: dict[str, str]                      # column -> why
    widen: dict[str, tuple[BqType, BqType]]   # column -> (have, to)
    refused: list[str]                        # "column: why"


def plan_evolution(live: dict[str, "LiveColumn"], columns: list[tuple[str, str]],
                   remove: "Callable[[str, str], str | None] | None" = None, *,
                   shared: bool = False) -> EvolutionPlan:
    """Pure: how the live table (lower-case name → column) must change to take `columns`.

    Columns the run delivers but the table lacks are added. A live column the run no longer
    delivers is dropped when `remove(name)` gives a reason (a column policy: excluded,
    credential-like, dropped from the warehouse) and otherwise kept — a column dropped in MySQL
    stays, with the history it holds. hakobu's own `_hakobu_*` columns are never touched.
    """
    delivered = {n.lower() for n, _ in columns}
    add, widen, refused = [], {}, []
    for name, ddl in columns:
        col = live.get(name.lower())
        if col is None:
            add.append((name, ddl))
            continue
        change = type_change(col.type, BqType.parse(ddl), shared=shared)
        if change.action == "widen":
            widen[col.name] = (col.type, change.to)
        elif change.action == "refuse":
            refused.append(f"{name}: {change.why}")
    drop = {}
    for low, col in live.items():
        if low in delivered or low.startswith("_hakobu") or remove is None:
            continue
        why = remove(col.name, col.type.name)
        if why:
            drop[col.name] = why
    return EvolutionPlan(add, drop, widen, refused)


@dataclass(frozen=True)
class LiveColumn:
    name: str
    type: BqType
    description: str | None = None




def source_notes(specs: Iterable[ColumnSpec]) -> dict[str, str]:
    """BigQuery column → description recording its MySQL name, for the columns renamed."""
    return {s.bq_name: source_note(s.name) for s in specs if s.renamed}


def clustering(columns: list[tuple[str, str]], cluster: list[str]) -> list[str]:
    """The clustering columns of a new table: the wanted ones BigQuery can cluster on, the
    first four (its limit), in order."""
    types = dict(columns)
    return list(dict.fromkeys(c for c in cluster if base_type(types[c]) in CLUSTERABLE))[:4]
