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
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery

from hakobu.bqschema import (SEQ, STAGING_PREFIX, SYNCED_AT, BqType,
                             Evolution, EvolutionPlan, LiveColumn, clustering, plan_evolution, source_notes)
from hakobu.errors import (DestinationUnavailable, HakobuError, LoadError, TypeChangeError,
                           environment_failure, is_transient)
from hakobu.sqlquote import bq_string, quote_bq
from hakobu.state import MergeStats, Watermark
from hakobu.types import ColumnSpec
from resources.bigquery_checks import BigQueryChecks
from resources.bigquery_client import BigQuerySettings, make_client
from resources.bigquery_state import StateTable
from resources.staging import staging_file

class BigQueryDestination(StateTable, BigQueryChecks):
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

    def table_rows(self, table: str) -> int | None:
        """The table's row count as BigQuery keeps it (tables.get: no query job); None if the
        table does not exist."""
        with self._errors("reading table", table):
            try:
                t = self.client.get_table(self.table_id(table), retry=self.retry)
            except gexc.NotFound:
                return None
        return int(t.num_rows or 0)

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
        keys = clustering(columns, cluster)
        self.sql(f"CREATE TABLE IF NOT EXISTS {self.ref(table)} ("
                 + ", ".join(f"`{n}` {t}{_described((descriptions or {}).get(n))}"
                             for n, t in columns) + ")" + partition
                 + (f" CLUSTER BY {', '.join(f'`{c}`' for c in keys)}"
                    if keys else ""), table=table)

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

    def staging_file(self, table: str, schema: pa.Schema):
        return staging_file(self.work_dir, f"{self.dataset}.{table}", schema)

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

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT COUNT(*) AS n FROM {self.ref(table)}")[0]["n"])


def _described(text: str | None) -> str:
    """A column's OPTIONS(description=...) in DDL (the text may hold a MySQL name: anything
    but NUL, quoted as a BigQuery string literal)."""
    if not text:
        return ""
    return f" OPTIONS(description={bq_string(text)})"


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "…"
