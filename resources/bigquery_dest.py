"""The BigQuery destination: datasets, tables, staged loads merged on the primary key, watermarks.

Loads are idempotent: Arrow batches are written to a Parquet file, loaded into a fresh staging
table (created by DDL, so parameterised NUMERIC/BIGNUMERIC and JSON-as-STRING hold exactly), and
MERGEd into the target on the primary key — a rerun of the same rows updates them, never doubles
them. The watermark lives in `_hakobu_state` inside the tenant's own dataset, so runs of different
tenants never touch the same state, and it moves only after the MERGE that covers it succeeded,
by compare-and-set on a version number.

Nothing here imports the source: it receives Arrow data and column specs.
"""

import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from hakobu.errors import (DestinationUnavailable, HakobuError, LoadError, SchemaError,
                           TypeChangeError, environment_failure, is_transient)
from hakobu.naming import source_note
from hakobu.sqlquote import bq_string, quote_bq
from hakobu.types import ColumnSpec
from resources.bigquery_client import BigQuerySettings, make_client

STATE_TABLE = "_hakobu_state"
NOTE_SUFFIX = "#verify"          # state row of a table's content-verification rotation
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
    def of_field(cls, field: "bigquery.SchemaField") -> "BqType":
        """From the table's schema as tables.get reports it (precision/scale for NUMERIC and
        BIGNUMERIC declared with parameters, None otherwise)."""
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


@dataclass(frozen=True)
class Watermark:
    key: tuple | None           # (cursor, *pk) of the last row delivered, source terms
    version: int
    rows_total: int = 0
    # the warehouse: the generation of each column this tenant's slice was filled into
    # (hakobu.sinks.WarehouseSink); None for the customer's and for watermarks written before
    columns: dict[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps({"key": None if self.key is None else [_enc(v) for v in self.key],
                           "rows_total": self.rows_total,
                           **({"columns": self.columns} if self.columns is not None else {})})

    @classmethod
    def from_json(cls, text: str, version: int) -> "Watermark":
        data = json.loads(text)
        key = data.get("key")
        return cls(None if key is None else tuple(_dec(v) for v in key), version,
                   int(data.get("rows_total", 0)), data.get("columns"))

    def display(self) -> str:
        return "-" if self.key is None else str(self.key[0] if len(self.key) else "")


def _enc(v):
    import base64
    from decimal import Decimal

    if isinstance(v, dt.datetime):
        return {"t": "datetime", "v": v.isoformat()}
    if isinstance(v, dt.date):
        return {"t": "date", "v": v.isoformat()}
    if isinstance(v, Decimal):
        return {"t": "decimal", "v": str(v)}
    if isinstance(v, (bytes, bytearray)):
        return {"t": "bytes", "v": base64.b64encode(bytes(v)).decode()}
    return v


def _dec(v):
    import base64
    from decimal import Decimal

    if isinstance(v, dict):
        t, s = v["t"], v["v"]
        return {"datetime": dt.datetime.fromisoformat, "date": dt.date.fromisoformat,
                "decimal": Decimal, "bytes": base64.b64decode}[t](s)
    return v


@dataclass
class MergeStats:
    rows_staged: int = 0
    bytes_staged: int = 0
    dml_rows: int = 0


class BigQueryDestination:
    """One BigQuery dataset (a customer's, or the internal warehouse)."""

    def __init__(self, settings: BigQuerySettings, project: str, dataset: str, location: str,
                 work_dir: Path, client: bigquery.Client | None = None):
        self.settings = settings
        self.project, self.dataset, self.location = project, dataset, location
        self.client = client or make_client(settings, project)
        self.work_dir = Path(work_dir)
        self.retry = settings.retry()
        self._prefetched: dict[str, "Watermark | None"] = {}   # prefetch_watermarks()
        self._notes: dict[str, "dict | None"] = {}              # (and the verify notes)

    # -- plumbing -------------------------------------------------------------------------

    def ref(self, table: str) -> str:
        return quote_bq(self.project, self.dataset, table)

    def table_id(self, table: str) -> str:
        """project.dataset.table for the API calls (a name ref() would quote the same way)."""
        quote_bq(self.project, self.dataset, table)      # the same validation
        return f"{self.project}.{self.dataset}.{table}"

    def drop_table(self, table: str) -> None:
        """Delete a table by the API (not a query job)."""
        with self._errors("deleting a table", table):
            self.client.delete_table(self.table_id(table), not_found_ok=True, retry=self.retry)

    def create_shadow(self, shadow: str, specs: list[ColumnSpec], primary_key: list[str], *,
                      extra=(), tenant: str | None = None) -> None:
        """An empty table with the source's current schema, made as a customer table is
        (whatever this destination's own ensure_table adds): a backfill's shadow."""
        BigQueryDestination.ensure_table(self, shadow, specs, primary_key, extra=extra,
                                         tenant=tenant)

    def swap_in(self, table: str, shadow: str, cluster: list[str],
                descriptions: dict[str, str]) -> None:
        """`table` becomes a copy of `shadow` in one statement (readers see old or new, never
        half); the column descriptions, lost by the CTAS, are set again."""
        self.sql(f"CREATE OR REPLACE TABLE {self.ref(table)}"
                 + (f" CLUSTER BY {', '.join(quote_bq(c) for c in cluster)}" if cluster else "")
                 + f" AS SELECT * FROM {self.ref(shadow)}", table=table)
        self.describe_columns(table, descriptions)

    @contextlib.contextmanager
    def _errors(self, what: str, table: str | None = None):
        try:
            yield
        except HakobuError:
            raise
        except Exception as exc:
            known = environment_failure(exc)      # no credentials, emulator away: what to do
            if known is not None:
                known.table = known.table or table
                raise known from exc
            cls = DestinationUnavailable if is_transient(exc) else LoadError
            raise cls(f"BigQuery {what} in {self.project}.{self.dataset} failed: "
                      f"{type(exc).__name__}: {_short(exc)}", table=table) from exc

    def sql(self, query: str, params: Iterable = (), table: str | None = None) -> bigquery.QueryJob:
        with self._errors("query", table):
            job = self.client.query(
                query, job_config=bigquery.QueryJobConfig(query_parameters=list(params)),
                location=self.location, retry=self.retry, job_retry=None)
            job.result(retry=self.retry)
            return job

    def rows(self, query: str, params: Iterable = ()) -> list[dict]:
        return [dict(r) for r in self.sql(query, params).result()]

    # -- datasets and tables --------------------------------------------------------------

    def ensure_dataset(self, labels: dict | None = None) -> bool:
        """Create the dataset if missing; True when it was created now. A dataset that exists
        in another location than the tenant file says is refused before anything is written
        (every query and load job runs in the configured location, where BigQuery would not
        find it): this tenant stops, with the fix; the others are not concerned."""
        with self._errors("creating dataset"):
            try:
                self._check_location(self.client.get_dataset(f"{self.project}.{self.dataset}",
                                                             retry=self.retry))
                return False
            except gexc.NotFound:
                ds = bigquery.Dataset(f"{self.project}.{self.dataset}")
                ds.location = self.location
                ds.labels = labels or {}
                self.client.create_dataset(ds, exists_ok=True, retry=self.retry)
                return True

    def check_dataset(self, retry_deadline_s: float = 20.0) -> bool:
        """Before a run (the CLI's preflight): the dataset, if it exists, is where the tenant
        file says; BigQuery answers. True when the dataset exists."""
        from google.api_core.retry import Retry

        retry = Retry(predicate=is_transient, initial=0.5, maximum=4.0,
                      timeout=retry_deadline_s)
        with self._errors("reading the dataset"):
            try:
                ds = self.client.get_dataset(f"{self.project}.{self.dataset}", retry=retry,
                                             timeout=10)
            except gexc.NotFound:
                return False
        self._check_location(ds)
        return True

    def _check_location(self, ds) -> None:
        """Jobs run in the tenant file's location: a dataset elsewhere would fail every one of
        them ("not found in location ..."). Say it once, with the fix."""
        there = (ds.location or "").lower()
        if there and there != self.location.lower():
            raise LoadError(f"dataset {self.project}.{self.dataset} is in location "
                            f"{ds.location}, but the tenant file says {self.location}",
                            hint=f"set destination.location: {ds.location} in the tenant file, "
                                 "or move the dataset (BigQuery cannot change a dataset's "
                                 "location: copy it to a new dataset in that location)")

    def columns(self, table: str) -> dict[str, LiveColumn] | None:
        """The table's columns as BigQuery has them now (lower-case name → column, with
        NUMERIC/BIGNUMERIC parameters and descriptions); None if the table does not exist.
        One tables.get call, no query job."""
        with self._errors("reading table", table):
            try:
                t = self.client.get_table(self.table_id(table), retry=self.retry)
            except gexc.NotFound:
                return None
        return {f.name.lower(): LiveColumn(f.name, BqType.of_field(f), f.description)
                for f in t.schema}

    def table_schema(self, table: str) -> dict[str, str] | None:
        cols = self.columns(table)
        return None if cols is None else {k: str(c.type) for k, c in cols.items()}

    def ensure_table(self, table: str, specs: list[ColumnSpec], primary_key: list[str],
                     extra: list[tuple[str, str]] = (), cluster_first: list[str] = (),
                     remove: Callable[[str, str], str | None] | None = None,
                     tenant: str | None = None) -> Evolution:
        """Create the target table, or evolve it to take this run's columns (plan_evolution):
        new columns are added (NULL for rows delivered before: the caller re-reads the table),
        columns a policy now withholds (`remove` gives the reason) are dropped with the values
        delivered before, other columns no longer delivered stay, a decimal whose precision or
        scale grew is widened in place, and any other type change stops this table with a
        TypeChangeError before anything is altered. A column whose BigQuery name is not its
        MySQL name (hakobu.naming) is created with the MySQL name as its description."""
        columns = [(s.bq_name, s.bq_type) for s in specs] + list(extra) + [(SYNCED_AT, "TIMESTAMP")]
        live = self.columns(table)
        if live is None:
            self._create(table, columns, [*cluster_first, *primary_key],
                         descriptions=source_notes(specs))
            return Evolution(created=True)
        plan = plan_evolution(live, columns, remove)
        self.refuse(plan, table, tenant)
        return self._apply(table, plan, descriptions=source_notes(specs))

    def describe_columns(self, table: str, descriptions: dict[str, str]) -> None:
        """Set column descriptions again after a `CREATE OR REPLACE ... AS SELECT` (a backfill's
        swap, a keyless table's replace), which does not carry them over."""
        for name, text in descriptions.items():
            self.sql(f"ALTER TABLE {self.ref(table)} ALTER COLUMN `{name}` SET OPTIONS("
                     f"description={bq_string(text)})", table=table)

    def refuse(self, plan: EvolutionPlan, table: str, tenant: str | None) -> None:
        """Stop the table, before anything is altered, when a type change cannot be taken."""
        if plan.refused:
            raise TypeChangeError(
                "incompatible column type change: " + "; ".join(plan.refused),
                tenant=tenant, table=table,
                hint="reload the table with its new types: `hakobu backfill "
                     f"{tenant or 'TENANT'} --tables {table}` (the old data stays until the new "
                     "table is complete)")

    def _create(self, table: str, columns: list[tuple[str, str]], cluster: list[str], *,
                partition: str = "", descriptions: dict[str, str] | None = None) -> None:
        types = dict(columns)
        clustering = list(dict.fromkeys(c for c in cluster
                                        if base_type(types[c]) in CLUSTERABLE))[:4]
        self.sql(f"CREATE TABLE IF NOT EXISTS {self.ref(table)} ("
                 + ", ".join(f"`{n}` {t}{_described((descriptions or {}).get(n))}"
                             for n, t in columns) + ")" + partition
                 + (f" CLUSTER BY {', '.join(f'`{c}`' for c in clustering)}"
                    if clustering else ""), table=table)

    def _apply(self, table: str, plan: EvolutionPlan,
               descriptions: dict[str, str] | None = None) -> Evolution:
        """Run an evolution plan, one ALTER per column (the emulator takes one action per
        statement; real BigQuery's DDL costs nothing and policy changes are rare)."""
        evo = Evolution()
        for name, why in plan.drop.items():
            self.sql(f"ALTER TABLE {self.ref(table)} DROP COLUMN IF EXISTS `{name}`", table=table)
            evo.removed[name] = why
        for name, (have, to) in plan.widen.items():
            self.sql(f"ALTER TABLE {self.ref(table)} ALTER COLUMN `{name}` SET DATA TYPE {to}",
                     table=table)
            evo.widened[name] = (str(have), str(to))
        for name, ddl in plan.add:
            self.sql(f"ALTER TABLE {self.ref(table)} ADD COLUMN IF NOT EXISTS `{name}` {ddl}"
                     f"{_described((descriptions or {}).get(name))}", table=table)
            evo.added.append(name)
        return evo

    def drop_leftovers(self, names: list[str], columns: set[str]) -> list[str]:
        """Drop the tables among `names` (staging or shadow leftovers) that hold any of
        `columns` (lower case): they keep values a policy now withholds."""
        dropped = []
        for name in names:
            cols = self.columns(name)
            if cols is not None and columns & set(cols):
                self.drop_table(name)
                dropped.append(name)
        return dropped

    def list_tables(self, prefixes: tuple[str, ...]) -> list[str]:
        with self._errors("listing tables"):
            try:
                tables = list(self.client.list_tables(f"{self.project}.{self.dataset}",
                                                      retry=self.retry))
            except gexc.NotFound:
                return []
        return [t.table_id for t in tables if t.table_id.startswith(prefixes)]

    # -- staging and merge ----------------------------------------------------------------

    @contextlib.contextmanager
    def staging_file(self, table: str, schema: pa.Schema) -> Iterator["StagingFile"]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / f"{self.dataset}.{table}.{uuid.uuid4().hex[:8]}.parquet"
        sf = StagingFile(path, schema)
        try:
            yield sf
        finally:
            sf.close()
            path.unlink(missing_ok=True)

    def merge(self, table: str, files: list[Path], specs: list[ColumnSpec],
              primary_key: list[str], *, extra: list[tuple[str, str]] = (),
              delete_scope: str | None = None, run_id: str = "") -> MergeStats:
        """Load staging files into a fresh staging table and MERGE it into `table` on the key.

        Rows with the same key inside the staging data (read twice because they changed during
        the run) collapse to the last one read. With delete_scope (an SQL condition on T, or
        "TRUE"), target rows in that scope that are missing from the staging data are deleted:
        used when the staging data is the complete set for that scope.
        """
        stats = MergeStats()
        stg = self._load_staging(table, files, specs, run_id, stats, extra)
        try:
            job = self.sql(self._merge_sql(table, stg, specs, primary_key, extra, delete_scope),
                           table=table)
            stats.dml_rows = job.num_dml_affected_rows or 0
        finally:
            with contextlib.suppress(HakobuError):
                self.drop_table(stg)
        return stats

    def replace(self, table: str, files: list[Path], specs: list[ColumnSpec],
                run_id: str = "") -> MergeStats:
        """Swap in the complete new content of `table` in one statement (CREATE OR REPLACE ...
        AS SELECT): readers see the old table or the new one, never a partial load."""
        stats = MergeStats()
        stg = self._load_staging(table, files, specs, run_id, stats)
        try:
            json_cols = {s.bq_name for s in specs if s.bq_type == "JSON"}
            cols = ", ".join(
                (f"PARSE_JSON(`{s.bq_name}`) AS `{s.bq_name}`" if s.bq_name in json_cols
                 else f"`{s.bq_name}`")
                for s in specs)
            self.sql(f"CREATE OR REPLACE TABLE {self.ref(table)} AS SELECT {cols}, "
                     f"CURRENT_TIMESTAMP() AS `{SYNCED_AT}` FROM {self.ref(stg)}", table=table)
            stats.dml_rows = stats.rows_staged
        finally:
            with contextlib.suppress(HakobuError):
                self.drop_table(stg)
        return stats

    def _load_staging(self, table: str, files: list[Path], specs: list[ColumnSpec],
                      run_id: str, stats: MergeStats, extra: list[tuple[str, str]] = ()) -> str:
        """A fresh staging table with the files loaded: one DDL statement creates it (or
        replaces a leftover of the same name) with the exact staging types — parameterised
        NUMERIC/BIGNUMERIC, JSON staged as STRING — and an expiry of 2 days in case a crash
        leaves it behind; then one load job per file. The caller deletes it by the API."""
        stg = f"{STAGING_PREFIX}{table}_{run_id or uuid.uuid4().hex[:8]}"
        cols = [(s.bq_name, s.staging_bq_type) for s in specs] + list(extra) + [(SEQ, "INT64")]
        self.sql(f"CREATE OR REPLACE TABLE {self.ref(stg)} ("
                 + ", ".join(f"`{n}` {t}" for n, t in cols)
                 + ") OPTIONS(expiration_timestamp=TIMESTAMP_ADD(CURRENT_TIMESTAMP(), "
                   "INTERVAL 2 DAY))", table=table)
        for f in files:
            with self._errors("load job", table):
                stats.rows_staged += self.load_parquet(f, stg)
            stats.bytes_staged += f.stat().st_size
        return stg

    def load_parquet(self, path: Path, table: str) -> int:
        """Append a Parquet file to an existing table (a resumable upload: the emulator rejects
        multipart ones); returns the rows loaded."""
        with open(path, "rb") as fh:
            job = self.client.load_table_from_file(
                fh, self.table_id(table),
                job_config=bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET,
                    write_disposition=bigquery.WriteDisposition.WRITE_APPEND),
                location=self.location)
            job.result(retry=self.retry)
        return job.output_rows or 0

    def _merge_sql(self, table: str, stg: str, specs: list[ColumnSpec], pk: list[str],
                   extra: list[tuple[str, str]], delete_scope: str | None) -> str:
        names = [s.bq_name for s in specs] + [n for n, _ in extra]
        json_cols = {s.bq_name for s in specs if s.bq_type == "JSON"}

        def val(n: str) -> str:
            return f"PARSE_JSON(S.`{n}`)" if n in json_cols else f"S.`{n}`"

        src_cols = ", ".join(f"`{n}`" for n in names)
        part = ", ".join(f"`{k}`" for k in pk)
        using = (f"(SELECT {src_cols} FROM (SELECT {src_cols}, ROW_NUMBER() OVER "
                 f"(PARTITION BY {part} ORDER BY `{SEQ}` DESC) AS _hakobu_rn "
                 f"FROM {self.ref(stg)}) WHERE _hakobu_rn = 1)")
        on = " AND ".join(f"T.`{k}` = S.`{k}`" for k in pk)
        sets = ", ".join([f"`{n}` = {val(n)}" for n in names if n not in pk]
                         + [f"`{SYNCED_AT}` = CURRENT_TIMESTAMP()"])
        ins_cols = ", ".join([f"`{n}`" for n in names] + [f"`{SYNCED_AT}`"])
        ins_vals = ", ".join([val(n) for n in names] + ["CURRENT_TIMESTAMP()"])
        sql = (f"MERGE {self.ref(table)} T USING {using} S ON {on} "
               f"WHEN MATCHED THEN UPDATE SET {sets} "
               f"WHEN NOT MATCHED THEN INSERT ({ins_cols}) VALUES ({ins_vals})")
        if delete_scope:
            sql += f" WHEN NOT MATCHED BY SOURCE AND ({delete_scope}) THEN DELETE"
        return sql

    def drop_stale_staging(self) -> list[str]:
        """Staging tables left by a crashed run of this tenant (runs of one tenant never overlap);
        this also removes leftovers holding columns a policy withholds since."""
        stale = self.list_tables((STAGING_PREFIX,))
        for name in stale:
            self.drop_table(name)
        return stale

    # -- watermarks -----------------------------------------------------------------------

    def ensure_state_table(self) -> None:
        """The watermark table, created by the API if missing (no query job)."""
        schema = [bigquery.SchemaField(n, t) for n, t in (
            ("table_name", "STRING"), ("watermark", "STRING"), ("version", "INTEGER"),
            ("updated_at", "TIMESTAMP"), ("run_id", "STRING"))]
        with self._errors("creating the state table"):
            self.client.create_table(bigquery.Table(self.table_id(STATE_TABLE), schema=schema),
                                     exists_ok=True, retry=self.retry)

    def prefetch_watermarks(self, tables: list[str]) -> None:
        """Read the watermarks of all `tables` in one query: each table's first read_watermark
        in this run takes its value from here (later ones, e.g. a retry, read again)."""
        names = list(tables) + [t + NOTE_SUFFIX for t in tables]
        rows = self.rows(f"SELECT table_name, watermark, version FROM {self.ref(STATE_TABLE)} "
                         "WHERE table_name IN UNNEST(@ts)",
                         [bigquery.ArrayQueryParameter("ts", "STRING", names)])
        found = {r["table_name"]: r for r in rows}
        self._prefetched = {t: Watermark.from_json(found[t]["watermark"],
                                                   int(found[t]["version"]))
                            if t in found else None for t in tables}
        self._notes = {t: json.loads(found[t + NOTE_SUFFIX]["watermark"])
                       if t + NOTE_SUFFIX in found else None for t in tables}

    def read_note(self, table: str) -> dict | None:
        """The content-verification note of a table (hakobu.verify.VerifyNote), if any."""
        if table in self._notes:
            return self._notes.pop(table)
        rows = self.rows(f"SELECT watermark FROM {self.ref(STATE_TABLE)} WHERE table_name = @t",
                         [bigquery.ScalarQueryParameter("t", "STRING", table + NOTE_SUFFIX)])
        return json.loads(rows[0]["watermark"]) if rows else None

    def write_note(self, table: str, note: dict, run_id: str) -> None:
        """Upsert the note (one MERGE): it only ever moves forward with the nights, and two runs
        of one tenant never overlap, so it needs no compare-and-set."""
        p = [bigquery.ScalarQueryParameter("t", "STRING", table + NOTE_SUFFIX),
             bigquery.ScalarQueryParameter("w", "STRING", json.dumps(note, sort_keys=True)),
             bigquery.ScalarQueryParameter("r", "STRING", run_id)]
        self.sql(f"MERGE {self.ref(STATE_TABLE)} T USING (SELECT @t AS table_name) S "
                 "ON T.table_name = S.table_name "
                 "WHEN MATCHED THEN UPDATE SET watermark = @w, updated_at = CURRENT_TIMESTAMP(), "
                 "run_id = @r WHEN NOT MATCHED THEN INSERT (table_name, watermark, version, "
                 "updated_at, run_id) VALUES (@t, @w, 0, CURRENT_TIMESTAMP(), @r)", p, table=table)

    def read_watermark(self, table: str) -> Watermark | None:
        if table in self._prefetched:
            return self._prefetched.pop(table)
        rows = self.rows(f"SELECT watermark, version FROM {self.ref(STATE_TABLE)} "
                         "WHERE table_name = @t", [bigquery.ScalarQueryParameter("t", "STRING",
                                                                                 table)])
        if not rows:
            return None
        return Watermark.from_json(rows[0]["watermark"], int(rows[0]["version"]))

    def write_watermark(self, table: str, wm: Watermark, previous: Watermark | None,
                        run_id: str) -> Watermark:
        """Compare-and-set: succeeds only if nobody moved the watermark since `previous`."""
        p = [bigquery.ScalarQueryParameter("t", "STRING", table),
             bigquery.ScalarQueryParameter("w", "STRING", wm.to_json()),
             bigquery.ScalarQueryParameter("r", "STRING", run_id)]
        if previous is None:
            job = self.sql(f"INSERT INTO {self.ref(STATE_TABLE)} (table_name, watermark, version, "
                           "updated_at, run_id) SELECT @t, @w, 1, CURRENT_TIMESTAMP(), @r "
                           f"FROM (SELECT 1) WHERE NOT EXISTS (SELECT 1 FROM "
                           f"{self.ref(STATE_TABLE)} WHERE table_name = @t)", p, table=table)
            version = 1
        else:
            p.append(bigquery.ScalarQueryParameter("v", "INT64", previous.version))
            job = self.sql(f"UPDATE {self.ref(STATE_TABLE)} SET watermark = @w, "
                           "version = version + 1, updated_at = CURRENT_TIMESTAMP(), run_id = @r "
                           "WHERE table_name = @t AND version = @v", p, table=table)
            version = previous.version + 1
        if (job.num_dml_affected_rows or 0) != 1:
            raise LoadError("the watermark was moved by another run meanwhile",
                            table=table, hint="only one run per tenant may load at a time; "
                                              "rerun — the data already merged is kept")
        return Watermark(wm.key, version, wm.rows_total, wm.columns)

    def clear_watermark(self, table: str) -> None:
        self.sql(f"DELETE FROM {self.ref(STATE_TABLE)} WHERE table_name = @t",
                 [bigquery.ScalarQueryParameter("t", "STRING", table)], table=table)
        self._prefetched[table] = None      # this run's read_watermark sees it gone

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT COUNT(*) AS n FROM {self.ref(table)}")[0]["n"])


class StagingFile:
    """A Parquet file that batches are appended to; records the extraction order per row."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema.append(pa.field(SEQ, pa.int64()))
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, batch: pa.Table) -> None:
        seq = pa.array(range(self.rows, self.rows + batch.num_rows), type=pa.int64())
        table = batch.append_column(SEQ, seq)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="snappy")
        self._writer.write_table(table)
        self.rows += batch.num_rows

    def close(self) -> Path | None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.path if self.rows else None


def _described(text: str | None) -> str:
    """A column's OPTIONS(description=...) in DDL (the text may hold a MySQL name: anything
    but NUL, quoted as a BigQuery string literal)."""
    if not text:
        return ""
    return f" OPTIONS(description={bq_string(text)})"


def source_notes(specs: Iterable[ColumnSpec]) -> dict[str, str]:
    """BigQuery column → description recording its MySQL name, for the columns renamed."""
    return {s.bq_name: source_note(s.name) for s in specs if s.renamed}


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "…"
