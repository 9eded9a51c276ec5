"""The internal warehouse dataset, as one tenant's run sees it.

Every tenant's rows of a source table land in one warehouse table, so runs of different tenants
write to the same tables at the same time. This destination only ever touches its own tenant's
slice, and keeps its state where no other tenant writes:

- tables are integer-range partitioned on `_hakobu_tenant_bucket` (a stable hash of the tenant
  id) and clustered on `tenant_id`, then the primary key: a tenant's MERGE names its partition
  and tenant as constants in ON, so BigQuery prunes to that partition and concurrent MERGEs of
  different tenants touch different partitions (BigQuery serialises, and may fail, concurrent
  mutating DML on one partition); per-tenant queries read one partition;
- every delete scope is ANDed with the tenant's predicate: a full-read table's "delete rows that
  vanished" can never reach another tenant's rows;
- the watermark lives in `_hakobu_state_<tenant>`, one small table per tenant in the warehouse
  dataset, moved by compare-and-set: two tenants never update the same state table;
- staging tables carry the tenant in their name; stale ones expire by themselves (2 days), since
  listing and dropping "stale" tables here could hit another tenant's run in flight.
"""

import logging
import re
import time

from hakobu.errors import LoadError, SchemaError
from resources.bigquery_dest import (CLUSTERABLE, SYNCED_AT, BigQueryDestination, MergeStats,
                                     STATE_TABLE, base_type)

_TENANT = re.compile(r"[a-z][a-z0-9_]{0,62}")
# BigQuery's answer when concurrent DML on one partition conflicts (after its own retries)
_CONFLICT = ("could not serialize access", "concurrent update")
CONFLICT_ATTEMPTS = 4
log = logging.getLogger("hakobu.warehouse")


def _on_conflict_retry(fn, what: str):
    """Run a DML statement again when BigQuery reports a serialization conflict: every DML here
    is idempotent (a MERGE from a fresh staging table, or a scoped replace), so it is safe."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return fn()
        except LoadError as exc:
            if attempt == CONFLICT_ATTEMPTS or not any(m in str(exc).lower() for m in _CONFLICT):
                raise
            delay = 2.0 * 2 ** (attempt - 1)
            log.warning("%s: concurrent DML conflict (attempt %d), retrying in %.0fs", what,
                        attempt, delay)
            time.sleep(delay)


class WarehouseDestination(BigQueryDestination):

    def __init__(self, settings, project, dataset, location, work_dir, *, tenant: str,
                 bucket: int, buckets: int, client=None):
        if not _TENANT.fullmatch(tenant):
            raise ValueError(f"invalid tenant id {tenant!r}")
        super().__init__(settings, project, dataset, location, work_dir, client=client)
        self.tenant, self.bucket, self.buckets = tenant, int(bucket), int(buckets)
        self.state_table = f"{STATE_TABLE}_{tenant}"

    def ref(self, table: str) -> str:
        # the base class's watermark methods name STATE_TABLE: here that is the tenant's own
        return super().ref(self.state_table if table == STATE_TABLE else table)

    def table_id(self, table: str) -> str:
        return super().table_id(self.state_table if table == STATE_TABLE else table)

    @property
    def scope(self) -> str:
        """This tenant's slice of a warehouse table (tenant ids match [a-z][a-z0-9_]*, checked
        above, so the literal cannot break out)."""
        return f"T.`tenant_id` = '{self.tenant}' AND T.`_hakobu_tenant_bucket` = {self.bucket}"

    def ensure_table(self, table, specs, primary_key, extra=(), cluster_first=()) -> list[str]:
        """Create the shared table partitioned by tenant bucket (if no tenant did yet), then
        evolve it like any target (new columns added; an incompatible change is a SchemaError)."""
        if self.table_schema(table) is None:
            columns = ([(s.name, s.bq_type) for s in specs] + list(extra)
                       + [(SYNCED_AT, "TIMESTAMP")])
            types = dict(columns)
            clustering = [c for c in ["tenant_id", *primary_key]
                          if base_type(types[c]) in CLUSTERABLE]
            clustering = list(dict.fromkeys(clustering))[:4]
            self.sql(f"CREATE TABLE IF NOT EXISTS {self.ref(table)} ("
                     + ", ".join(f"`{n}` {t}" for n, t in columns) + ")"
                     + f" PARTITION BY RANGE_BUCKET(`_hakobu_tenant_bucket`, "
                       f"GENERATE_ARRAY(0, {self.buckets}, 1))"
                     + f" CLUSTER BY {', '.join(f'`{c}`' for c in clustering)}", table=table)
        try:
            return super().ensure_table(table, specs, primary_key, extra, cluster_first)
        except SchemaError as exc:
            raise SchemaError(exc.message, tenant=self.tenant, table=table,
                              hint=f"the warehouse table {self.dataset}.{table} holds every "
                                   "tenant's rows, so a backfill of one tenant cannot change its "
                                   "type: migrate that column in BigQuery (or drop the table and "
                                   "backfill every tenant); the customer's delivery is not "
                                   "affected") from exc

    def merge(self, table, files, specs, primary_key, *, extra=(), delete_scope=None,
              run_id="") -> MergeStats:
        scope = None if delete_scope is None else f"{self.scope} AND ({delete_scope})"
        return _on_conflict_retry(
            lambda: super(WarehouseDestination, self).merge(
                table, files, specs, primary_key, extra=extra, delete_scope=scope,
                run_id=f"{self.tenant}_{run_id}"), f"{self.tenant}/{table} merge")

    def _merge_sql(self, table, stg, specs, pk, extra, delete_scope) -> str:
        sql = super()._merge_sql(table, stg, specs, pk, extra, delete_scope)
        head, sep, tail = sql.partition(" S ON ")
        if not sep or " S ON " in tail:
            raise AssertionError("unexpected MERGE shape")  # the base class changed: fix here
        return f"{head} S ON {self.scope} AND {tail}"

    def replace_slice(self, table, files, specs, extra, run_id="") -> MergeStats:
        """Tables without a primary key: this tenant's rows become exactly the staged rows, in
        one statement (MERGE ... ON FALSE inserts every staged row and deletes every old row of
        the slice), so readers never see the slice half replaced."""
        stats = MergeStats()
        stg = self._load_staging(table, files, specs, f"{self.tenant}_{run_id}", stats, extra)
        try:
            json_cols = {s.name for s in specs if s.bq_type == "JSON"}
            names = [s.name for s in specs] + [n for n, _ in extra]
            vals = ", ".join([f"PARSE_JSON(S.`{n}`)" if n in json_cols else f"S.`{n}`"
                              for n in names] + ["CURRENT_TIMESTAMP()"])
            cols = ", ".join([f"`{n}`" for n in names] + [f"`{SYNCED_AT}`"])
            sql = (f"MERGE {self.ref(table)} T USING {self.ref(stg)} S ON FALSE "
                   f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals}) "
                   f"WHEN NOT MATCHED BY SOURCE AND {self.scope} THEN DELETE")
            job = _on_conflict_retry(lambda: self.sql(sql, table=table),
                                     f"{self.tenant}/{table} replace")
            stats.dml_rows = job.num_dml_affected_rows or 0
        finally:
            self.drop_table(stg)
        return stats

    def swap_slice(self, table: str, shadow: str, columns: list[str], primary_key: list[str]
                   ) -> int:
        """Backfill: this tenant's slice becomes exactly the shadow table's rows, in one MERGE
        (update, insert, and delete what the shadow lacks — scoped to the tenant)."""
        on = " AND ".join(f"T.`{k}` = S.`{k}`" for k in primary_key)
        names = [*columns, SYNCED_AT]
        sets = ", ".join(f"`{n}` = S.`{n}`" for n in names if n not in primary_key)
        cols = ", ".join(f"`{n}`" for n in names)
        vals = ", ".join(f"S.`{n}`" for n in names)
        sql = (f"MERGE {self.ref(table)} T USING {self.ref(shadow)} S "
               f"ON {self.scope} AND {on} "
               f"WHEN MATCHED THEN UPDATE SET {sets} "
               f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals}) "
               f"WHEN NOT MATCHED BY SOURCE AND {self.scope} THEN DELETE")
        job = _on_conflict_retry(lambda: self.sql(sql, table=table),
                                 f"{self.tenant}/{table} swap")
        return job.num_dml_affected_rows or 0

    def count_slice(self, table: str) -> int:
        return int(self.rows(f"SELECT COUNT(*) AS n FROM {self.ref(table)} T "
                             f"WHERE {self.scope}")[0]["n"])

    def drop_stale_staging(self) -> list[str]:
        return []   # never list-and-drop in a shared dataset; staging tables expire on their own
