"""The source side of the key checksums and content digests, in MariaDB SQL (hakobu.ports
.SourceChecks). MySQLSource inherits it.

What is compared, and why the expressions are what they are, is the core's (hakobu/checksums.py,
hakobu/verify.py, hakobu/canonical.py); here each is rendered for MariaDB:

- every query reads the plan's tenant's rows only (hakobu.plan.tenant_predicate);
- the key checksums read key columns only (plus the tenant column), which every InnoDB secondary
  index contains, so MariaDB answers from the smallest secondary index (`Using index`,
  tests/integration/test_checksums.py checks EXPLAIN); ORDER BY NULL: no sort of the grouped
  result; GROUP BY 1, not the alias: MariaDB resolves a GROUP BY name to a column first;
- range buckets are read as ranges of the range column (a clustered-index range scan), hash
  buckets by one covering-index pass that returns only the wanted buckets' keys;
- aggregates go through a raw DB-API cursor: no bind-parameter parsing of SQL whose literals
  contain ':' and '%'. Errors are the source's own (MySQLSource._errors).
"""

import contextlib
import dataclasses

import pyarrow as pa

from hakobu.bucketing import Bucketing, key_specs, ranges
from hakobu.canonical import Part, split_parts
from hakobu.errors import SchemaError
from hakobu.keys import to_source_value
from hakobu.plan import SRC, TablePlan, col_ref, keyset_after, tenant_predicate
from hakobu.ports import ContentRow, KeyRead, KeyStats
from hakobu.sqlquote import mysql_literal, quote_ident
from hakobu.types import zero_flag_select
from resources.canonical_mysql import my_key_hash, my_key_text, my_row_hash, my_text

KEYS_PER_QUERY = 1000            # keys per `IN` list when re-reading rows by key
MASK64 = (1 << 64) - 1


# -- SQL text -----------------------------------------------------------------------------------

def source_from(plan: TablePlan, index: str | None = None) -> str:
    hint = f" FORCE INDEX ({quote_ident(index)})" if index else ""
    return f"{quote_ident(plan.schema)}.{quote_ident(plan.table)} AS {SRC}{hint}"


def _tenant_where(plan: TablePlan) -> list[str]:
    return [] if plan.tenant_column is None else [tenant_predicate(plan)]


def _where(conds: list[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _bucket(plan: TablePlan, b: Bucketing) -> str:
    """FLOOR(key / 2^k) by shifts of non-negative values only (MariaDB's `/` rounds to 4
    decimals), or MOD(key hash, n)."""
    if b.mode == "hash":
        return f"({my_key_hash(key_specs(plan))} MOD {int(b.modulus)})"
    if b.mode == "count":
        return "0"
    c, k = col_ref(b.column), int(b.shift)
    if not plan.spec(b.column).info.unsigned:
        return f"IF({c} < 0, -1 - CAST((-1 - {c}) >> {k} AS SIGNED), CAST({c} >> {k} AS SIGNED))"
    return f"CAST({c} >> {k} AS SIGNED)"


def _in_ranges(b: Bucketing, key_ranges: list[tuple[int, int]]) -> str:
    c = col_ref(b.column)
    return "(" + " OR ".join(f"{c} BETWEEN {int(lo)} AND {int(hi)}" for lo, hi in key_ranges) + ")"


def _filter(plan: TablePlan, b: Bucketing, buckets: list[int] | None) -> list[str]:
    conds = _tenant_where(plan)
    if buckets is None:
        return conds
    if b.ranged:
        return conds + [_in_ranges(b, ranges(b, buckets))]
    return conds + [f"{_bucket(plan, b)} IN ({', '.join(str(int(x)) for x in buckets)})"]


def source_stats_sql(plan: TablePlan, column: str | None, distinct: bool = False) -> str:
    cols = ["COUNT(*) AS n"]
    if column is not None:
        c = col_ref(column)
        cols += [f"MIN({c}) AS lo", f"MAX({c}) AS hi"]
        if distinct:
            cols.append(f"COUNT(DISTINCT {c}) AS d")
    return f"SELECT {', '.join(cols)} FROM {source_from(plan)}{_where(_tenant_where(plan))}"


def source_aggregate_sql(plan: TablePlan, b: Bucketing) -> str:
    """(bucket, rows, sum, xor) over the tenant's keys: key columns only, index-covered."""
    if b.mode == "int":
        c = col_ref(b.column)
        agg = f"SUM({c}) AS s, BIT_XOR({c}) AS x"
    elif b.mode == "count":
        agg = "0 AS s, 0 AS x"
    else:
        agg = f"0 AS s, BIT_XOR({my_key_hash(key_specs(plan))}) AS x"
    group = "" if b.mode == "count" else " GROUP BY 1 ORDER BY NULL"
    return (f"SELECT {_bucket(plan, b)} AS b, COUNT(*) AS n, {agg} FROM {source_from(plan)}"
            f"{_where(_tenant_where(plan))}{group}")


def source_digest_sql(plan: TablePlan, b: Bucketing, parts: list[Part],
                      buckets: list[int] | None) -> str:
    """Per bucket: rows and BIT_XOR of row hashes over the delivered columns."""
    return (f"SELECT {_bucket(plan, b)} AS b, COUNT(*) AS n, BIT_XOR({my_row_hash(parts)}) "
            f"AS x FROM {source_from(plan)}{_where(_filter(plan, b, buckets))} "
            "GROUP BY 1 ORDER BY NULL")


def source_rows_sql(plan: TablePlan, b: Bucketing, parts: list[Part], buckets: list[int]) -> str:
    """Row level: the raw key (to re-read by), the bucket, the key's canonical text, the hash
    of the non-JSON columns and each JSON column's text."""
    hashed, json_parts = split_parts(parts)
    raw = ", ".join(
        (f"CAST({col_ref(k)} AS CHAR)" if plan.spec(k).info.data_type == "time" else col_ref(k))
        + f" AS `_k{i}`" for i, k in enumerate(plan.primary_key))
    js = "".join(f", {my_text(p.spec)} AS `_j{i}`" for i, p in enumerate(json_parts))
    return (f"SELECT {raw}, {_bucket(plan, b)} AS `_b`, {my_key_text(key_specs(plan))} AS "
            f"`_kt`, {my_row_hash(hashed)} AS `_h`{js} FROM {source_from(plan)}"
            f"{_where(_filter(plan, b, buckets))}")


def source_keys_sql(plan: TablePlan, b: Bucketing, key_range: tuple[int, int],
                    after: tuple | None, index: str | None, limit: int) -> str:
    """The next keyset chunk of the tenant's keys in one range of the range column: a range
    scan of `index` (PRIMARY, or one starting with (tenant column, range column))."""
    select = ", ".join(plan.spec(k).select_sql for k in plan.primary_key)
    where = _tenant_where(plan) + [_in_ranges(b, [key_range])]
    if after is not None:
        where.append(f"({keyset_after(plan.primary_key, after)})")
    order = ", ".join(col_ref(k) + " ASC" for k in plan.primary_key)
    return (f"SELECT {select} FROM {source_from(plan, index)}{_where(where)} "
            f"ORDER BY {order} LIMIT {int(limit)}")


def hash_keys_sql(plan: TablePlan, b: Bucketing, buckets: list[int]) -> str:
    """One covering-index pass over the tenant's keys, returning only these buckets' keys."""
    select = ", ".join(plan.spec(k).select_sql for k in plan.primary_key)
    return f"SELECT {select} FROM {source_from(plan)}{_where(_filter(plan, b, buckets))}"


def _key_list(plan: TablePlan, keys: list[tuple]) -> str:
    """`pk IN (...)`, or an OR of key equalities for composite keys (range-optimised)."""
    pk = plan.primary_key
    if len(pk) == 1:
        return f"{col_ref(pk[0])} IN ({', '.join(mysql_literal(k[0]) for k in keys)})"
    return "(" + " OR ".join(
        "(" + " AND ".join(f"{col_ref(c)} = {mysql_literal(v)}" for c, v in zip(pk, k)) + ")"
        for k in keys) + ")"


def by_keys_sql(plan: TablePlan, keys: list[tuple]) -> str:
    """The rows with these keys, as the sync reads them (its SELECT expressions, zero flags)."""
    selects = [s.select_sql for s in plan.specs]
    selects += [zero_flag_select(s, i) for i, s in plan.zero_flag_columns]
    where = _tenant_where(plan) + [_key_list(plan, keys)]
    return f"SELECT {', '.join(selects)} FROM {source_from(plan)}{_where(where)}"


def key_plan(plan: TablePlan) -> TablePlan:
    """The plan narrowed to the primary-key columns (their SELECT expressions and types)."""
    specs = tuple(plan.spec(k) for k in plan.primary_key)
    return dataclasses.replace(plan, specs=specs, zero_dates="to_null")


def range_index(source, plan: TablePlan, b: Bucketing) -> str | None:
    """An index to range-scan keys of a bucket: one starting with (tenant column,) range column
    (the tenant's keys only), else one starting with the range column (usually PRIMARY)."""
    refl = source.reflect(plan.schema, plan.table)
    if refl is None:
        raise SchemaError(f"table {plan.schema}.{plan.table} does not exist",
                          tenant=plan.tenant, table=plan.table)
    wants = ([[plan.tenant_column.lower(), b.column.lower()]] if plan.tenant_column else [])
    wants.append([b.column.lower()])
    for want in wants:
        for name in sorted(refl.indexes, key=lambda n: (n != "PRIMARY", n)):
            cols = [c.lower() for c in refl.indexes[name]]
            if cols[:len(want)] == want:
                return name
    return None


def _slot(gate, plan: TablePlan):
    return gate.slot(plan.tenant, plan.table) if gate is not None else contextlib.nullcontext()


# -- the port -----------------------------------------------------------------------------------

class MySQLChecks:
    """hakobu.ports.SourceChecks for MySQLSource (uses its engine, read_chunk, reflect and
    _errors)."""

    def checks_query(self, sql: str, plan: TablePlan) -> list[tuple]:
        """Run one aggregate through a raw DB-API cursor (no bind-parameter parsing)."""
        with self._errors("checksum query", tenant=plan.tenant, table=plan.table):
            conn = self.engine.raw_connection()
            try:
                cur = conn.cursor()
                cur.execute(sql)
                rows = [tuple(r) for r in cur.fetchall()]
                cur.close()
            finally:
                conn.close()
        return rows

    def key_stats(self, plan: TablePlan, column: str | None, distinct: bool = False) -> KeyStats:
        n, *rest = self.checks_query(source_stats_sql(plan, column, distinct), plan)[0]
        lo, hi, d = (rest + [None, None, None])[:3]
        return KeyStats(int(n), lo, hi, None if d is None else int(d))

    def key_checksums(self, plan: TablePlan, bucketing: Bucketing) -> list[tuple]:
        return [(int(b), int(n), int(s or 0), int(x or 0)) for b, n, s, x in
                self.checks_query(source_aggregate_sql(plan, bucketing), plan)]

    def content_digests(self, plan: TablePlan, bucketing: Bucketing, parts: list[Part],
                        buckets: list[int] | None) -> list[tuple]:
        sql = source_digest_sql(plan, bucketing, parts, buckets)
        return [(int(b), int(n), int(x or 0)) for b, n, x in self.checks_query(sql, plan)]

    def content_rows(self, plan: TablePlan, bucketing: Bucketing, parts: list[Part],
                     buckets: list[int]) -> list[ContentRow]:
        n = len(plan.primary_key)
        sql = source_rows_sql(plan, bucketing, parts, buckets)
        return [ContentRow(int(r[n]), r[n + 1], int(r[n + 2]) & MASK64, tuple(r[n + 3:]),
                           tuple(r[:n])) for r in self.checks_query(sql, plan)]

    def keys_in_buckets(self, plan: TablePlan, bucketing: Bucketing, buckets: list[int],
                        gate=None) -> KeyRead:
        kplan = key_plan(plan)
        if bucketing.mode == "hash":
            with _slot(gate, plan):
                keys = self.read_chunk(kplan, hash_keys_sql(plan, bucketing, buckets))
            return KeyRead(keys, queries=1, index_passes=1)
        index = range_index(self, plan, bucketing)
        limit = max(1, int(plan.chunk_rows))
        batches, queries = [], 0
        for lo, hi in ranges(bucketing, buckets):
            after = None
            while True:
                sql = source_keys_sql(plan, bucketing, (lo, hi), after, index, limit)
                with _slot(gate, plan):
                    batch = self.read_chunk(kplan, sql)
                queries += 1
                if batch.num_rows:
                    batches.append(batch)
                if batch.num_rows < limit:
                    break
                last = batch.num_rows - 1
                after = tuple(to_source_value(plan.spec(k), batch.column(k)[last].as_py())
                              for k in plan.primary_key)
        keys = (pa.concat_tables(batches) if batches else
                pa.schema([pa.field(s.name, s.arrow_type) for s in kplan.specs]).empty_table())
        return KeyRead(keys, queries=queries)

    def rows_by_keys(self, plan: TablePlan, keys: list[tuple], gate=None) -> pa.Table:
        """The rows with these primary keys (tenant column included), KEYS_PER_QUERY keys a
        query, each under the read gate."""
        batches = []
        for i in range(0, len(keys), KEYS_PER_QUERY):
            with _slot(gate, plan):
                part = keys[i:i + KEYS_PER_QUERY]
                batches.append(self.read_chunk(plan, by_keys_sql(plan, part)))
        if not batches:
            return pa.schema([pa.field(s.name, s.arrow_type) for s in plan.specs]).empty_table()
        return pa.concat_tables(batches)

