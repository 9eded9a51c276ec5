"""The destination side of the key checksums and content digests, in BigQuery SQL
(hakobu.ports.DestinationChecks). BigQueryDestination inherits it (and so the warehouse's).

Every query names the table by alias T. A destination shared by tenants (the warehouse's,
resources.warehouse_dest) has a `scope`: a condition on T selecting this tenant's rows; every
query, the DELETEs included, stays inside it. How the engines are made to agree:

- bucket = FLOOR(key / 2^k) by shifts (BigQuery's SUM(INT64) overflows, the emulator's NUMERIC
  division goes through floats and its `>>` sign-extends where BigQuery's does not); a BIGINT
  UNSIGNED key (NUMERIC(20, 0) here) is shifted in two halves around 2^63;
- the key SUM is taken as BIGNUMERIC (exact), the XOR as INT64 (the core compares it modulo
  2^64: MariaDB's BIT_XOR is unsigned);
- GROUP BY 1, never a constant: the emulator mis-groups a constant.
"""

import contextlib
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud import bigquery

from hakobu.bucketing import TWO_63, TWO_64, Bucketing, key_specs, ranges
from hakobu.canonical import Part, split_parts
from hakobu.errors import HakobuError, LoadError
from hakobu.plan import TablePlan
from hakobu.ports import ContentRow, KeyStats
from resources.canonical_bigquery import bq_col, bq_key_hash, bq_key_text, bq_row_hash, bq_text

STAGING = "_hakobu_stg_cks_"     # prefix of the key staging tables (under _hakobu_stg_)
DELETE_KEYS_PER_QUERY = 10_000
MASK64 = TWO_64 - 1


# -- SQL text -----------------------------------------------------------------------------------

def _num(value: int) -> str:
    return str(int(value)) if -TWO_63 <= value < TWO_63 else f"BIGNUMERIC '{int(value)}'"


def _range_col(plan: TablePlan, b: Bucketing, alias: str = "") -> str:
    """The range column in BigQuery (b.column is its MySQL name)."""
    return bq_col(plan.bq(b.column), alias)


def dest_bucket(plan: TablePlan, b: Bucketing, alias: str = "") -> str:
    if b.mode == "hash":
        return f"MOD({bq_key_hash(key_specs(plan), alias)}, {int(b.modulus)})"
    if b.mode == "count":
        return "0"
    c, k = _range_col(plan, b, alias), int(b.shift)
    if b.unsigned:   # NUMERIC(20, 0): shift the two halves around 2^63 separately (k >= 1)
        return (f"IF({c} >= BIGNUMERIC '{TWO_63}', (CAST({c} - BIGNUMERIC '{TWO_63}' AS INT64)"
                f" >> {k}) + {TWO_63 >> k}, CAST({c} AS INT64) >> {k})")
    return f"IF({c} < 0, -1 - ((-1 - {c}) >> {k}), {c} >> {k})"


def _signed64(plan: TablePlan, b: Bucketing, alias: str = "") -> str:
    c = _range_col(plan, b, alias)
    if b.unsigned:
        return f"CAST(IF({c} >= BIGNUMERIC '{TWO_63}', {c} - BIGNUMERIC '{TWO_64}', {c}) AS INT64)"
    return c


def dest_scope(plan: TablePlan, b: Bucketing, buckets: list[int], alias: str) -> str:
    """The condition selecting the rows of the given buckets."""
    if b.ranged:
        c = _range_col(plan, b, alias)
        return "(" + " OR ".join(f"{c} BETWEEN {_num(lo)} AND {_num(hi)}"
                                 for lo, hi in ranges(b, buckets)) + ")"
    return f"{dest_bucket(plan, b, alias)} IN ({', '.join(str(int(x)) for x in buckets)})"


def _where(conds: list[str | None]) -> str:
    conds = [f"({c})" for c in conds if c]
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def dest_stats_sql(table_ref: str, column: str | None, distinct: bool = False,
                   dest_slice: str | None = None) -> str:
    cols = ["COUNT(*) AS n"]
    if column is not None:
        c = bq_col(column, "T")
        cols += [f"MIN({c}) AS lo", f"MAX({c}) AS hi"]
        if distinct:
            cols.append(f"COUNT(DISTINCT {c}) AS d")
    return f"SELECT {', '.join(cols)} FROM {table_ref} T{_where([dest_slice])}"


def dest_aggregate_sql(plan: TablePlan, b: Bucketing, table_ref: str,
                       dest_slice: str | None = None) -> str:
    """(bucket, rows, sum, xor) over the table (the tenant's slice of a shared one)."""
    if b.mode == "int":
        agg = (f"SUM(CAST({_range_col(plan, b, 'T')} AS BIGNUMERIC)) AS s, "
               f"BIT_XOR({_signed64(plan, b, 'T')}) AS x")
    elif b.mode == "count":
        agg = "0 AS s, 0 AS x"
    else:
        agg = f"0 AS s, BIT_XOR({bq_key_hash(key_specs(plan), 'T')}) AS x"
    group = "" if b.mode == "count" else " GROUP BY 1"
    return (f"SELECT {dest_bucket(plan, b, 'T')} AS b, COUNT(*) AS n, {agg} FROM {table_ref} T"
            f"{_where([dest_slice])}{group}")


def _filter(plan: TablePlan, b: Bucketing, buckets: list[int] | None, dest_slice) -> str:
    return _where([dest_slice, None if buckets is None else dest_scope(plan, b, buckets, "T")])


def dest_digest_sql(plan: TablePlan, b: Bucketing, parts: list[Part], table_ref: str,
                    buckets: list[int] | None, dest_slice: str | None = None) -> str:
    return (f"SELECT {dest_bucket(plan, b, 'T')} AS b, COUNT(*) AS n, "
            f"BIT_XOR({bq_row_hash(parts, 'T')}) AS x FROM {table_ref} T"
            f"{_filter(plan, b, buckets, dest_slice)} GROUP BY 1")


def dest_rows_sql(plan: TablePlan, b: Bucketing, parts: list[Part], table_ref: str,
                  buckets: list[int], dest_slice: str | None = None) -> str:
    hashed, json_parts = split_parts(parts)
    js = "".join(f", {bq_text(p.spec, p.dest_name, 'T')} AS `_j{i}`"
                 for i, p in enumerate(json_parts))
    return (f"SELECT {dest_bucket(plan, b, 'T')} AS `_b`, {bq_key_text(key_specs(plan), 'T')} "
            f"AS `_kt`, {bq_row_hash(hashed, 'T')} AS `_h`{js} FROM {table_ref} T"
            f"{_filter(plan, b, buckets, dest_slice)}")


# -- the port -----------------------------------------------------------------------------------

class BigQueryChecks:
    """hakobu.ports.DestinationChecks for BigQueryDestination (uses its ref, rows, sql,
    load_parquet, work_dir and, on the warehouse's, scope)."""

    @property
    def check_slice(self) -> str | None:
        """The tenant's slice of a shared destination (`scope`, on alias T); None: the table."""
        scope = getattr(self, "scope", None)
        return scope if isinstance(scope, str) and scope else None

    def key_stats(self, table: str, plan: TablePlan, column: str | None,
                  distinct: bool = False) -> KeyStats:
        sql = dest_stats_sql(self.ref(table), column and plan.bq(column), distinct,
                             self.check_slice)
        row = self.rows(sql)[0]
        d = row.get("d")
        return KeyStats(int(row["n"]), row.get("lo"), row.get("hi"), None if d is None else int(d))

    def key_checksums(self, table: str, plan: TablePlan, bucketing: Bucketing) -> list[tuple]:
        sql = dest_aggregate_sql(plan, bucketing, self.ref(table), self.check_slice)
        return [(int(r["b"]), int(r["n"]), int(r["s"] or 0), int(r["x"] or 0))
                for r in self.rows(sql)]

    def content_digests(self, table: str, plan: TablePlan, bucketing: Bucketing,
                        parts: list[Part], buckets: list[int] | None) -> list[tuple]:
        sql = dest_digest_sql(plan, bucketing, parts, self.ref(table), buckets, self.check_slice)
        return [(int(r["b"]), int(r["n"]), int(r["x"] or 0)) for r in self.rows(sql)]

    def content_rows(self, table: str, plan: TablePlan, bucketing: Bucketing,
                     parts: list[Part], buckets: list[int]) -> list[ContentRow]:
        n_json = len(split_parts(parts)[1])
        sql = dest_rows_sql(plan, bucketing, parts, self.ref(table), buckets, self.check_slice)
        return [ContentRow(int(r["_b"]), r["_kt"], int(r["_h"]) & MASK64,
                           tuple(r[f"_j{j}"] for j in range(n_json))) for r in self.rows(sql)]

    def delete_keys(self, table: str, plan: TablePlan, key_texts: list[str]) -> int:
        deleted = 0
        kt = bq_key_text(key_specs(plan), "T")
        for i in range(0, len(key_texts), DELETE_KEYS_PER_QUERY):
            part = key_texts[i:i + DELETE_KEYS_PER_QUERY]
            job = self.sql(f"DELETE FROM {self.ref(table)} T"
                           f"{_where([f'{kt} IN UNNEST(@keys)', self.check_slice])}",
                           [bigquery.ArrayQueryParameter("keys", "STRING", part)], table=table)
            deleted += job.num_dml_affected_rows or 0
        return deleted

    @contextlib.contextmanager
    def staged_keys(self, table: str, plan: TablePlan, bucketing: Bucketing,
                    buckets: list[int], keys: pa.Table, tag: str) -> Iterator["_Staged"]:
        # the key without the tenant column: constant in the compared slice, and of another
        # type in the warehouse (tenant_id STRING there, the source's discriminator here)
        specs = key_specs(plan)
        # the tenant in the name: in a shared dataset another tenant's repair may run meanwhile
        name = f"{STAGING}{plan.tenant}_{table}_{tag}"[:1024]
        stg = self.ref(name)
        cols = ", ".join(f"{bq_col(s.bq_name)} {s.staging_bq_type}" for s in specs)
        self.sql(f"DROP TABLE IF EXISTS {stg}", table=table)
        self.sql(f"CREATE TABLE {stg} ({cols}) OPTIONS(expiration_timestamp=TIMESTAMP_ADD("
                 "CURRENT_TIMESTAMP(), INTERVAL 2 DAY))", table=table)
        try:
            if keys.num_rows:
                self._load_keys(plan, name, keys)
            yield _Staged(self, table, stg, [s.bq_name for s in specs],
                          _where([self.check_slice, dest_scope(plan, bucketing, buckets, "T")]))
        finally:
            with contextlib.suppress(HakobuError):
                self.sql(f"DROP TABLE IF EXISTS {stg}", table=table)

    def _load_keys(self, plan: TablePlan, name: str, keys: pa.Table) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / f"{self.dataset}.{name}.{uuid.uuid4().hex[:8]}.parquet"
        try:
            pq.write_table(keys, path, compression="snappy")
            try:
                self.load_parquet(path, name)
            except HakobuError:
                raise
            except Exception as exc:
                raise LoadError(f"loading keys into {name} failed: {type(exc).__name__}: "
                                f"{str(exc)[:300]}", tenant=plan.tenant, table=plan.table) from exc
        finally:
            path.unlink(missing_ok=True)


class _Staged:
    """hakobu.ports.StagedKeys: the destination's rows of some buckets against staged keys."""

    def __init__(self, dest, table: str, stg: str, columns: list[str], scope: str):
        self.dest, self.table, self.stg, self.scope = dest, table, stg, scope
        self.match = " AND ".join(f"{bq_col(k, 'S')} = {bq_col(k, 'T')}" for k in columns)
        self.select = ", ".join(bq_col(k, "S") for k in columns)
        self.gone = f"{scope} AND NOT EXISTS (SELECT 1 FROM {stg} S WHERE {self.match})"

    def count_gone(self) -> int:
        ref = self.dest.ref(self.table)
        return int(self.dest.rows(f"SELECT COUNT(*) AS n FROM {ref} T{self.gone}")[0]["n"])

    def delete_gone(self) -> int:
        job = self.dest.sql(f"DELETE FROM {self.dest.ref(self.table)} T{self.gone}",
                            table=self.table)
        return job.num_dml_affected_rows or 0

    def missing(self) -> list[dict]:
        ref = self.dest.ref(self.table)
        return self.dest.rows(f"SELECT {self.select} FROM {self.stg} S WHERE NOT EXISTS "
                              f"(SELECT 1 FROM {ref} T{self.scope} AND {self.match})")
