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

import contextlib
import logging
import re
import time

from hakobu.bqschema import (SHADOW_PREFIX, STAGING_PREFIX, STATE_TABLE, SYNCED_AT,
                             SharedEvolution, plan_evolution, source_notes)
from hakobu.errors import LoadError, TypeChangeError
from hakobu.markers import (LEGACY_GEN, column_forms, marker, new_gen,
                            parse_marker)
from hakobu.naming import with_note
from hakobu.sqlquote import bq_string
from hakobu.state import MergeStats
from resources import warehouse_pending as pending
from resources.bigquery_dest import BigQueryDestination

# re-exported for the importers not yet moved to hakobu.markers / hakobu.bqschema (issue #13)
_TENANT = re.compile(r"[a-z][a-z0-9_]{0,62}")
BUCKET = "_hakobu_tenant_bucket"
# BigQuery's answer when concurrent DML on one partition conflicts (after its own retries)
_CONFLICT = ("could not serialize access", "concurrent update",
             "too many dml statements outstanding")   # the per-table DML queue is full: later
CONFLICT_ATTEMPTS = 4
# (project, dataset, table, column) adopted as hashed whose marker this server would not set
# (the emulator parses no ALTER COLUMN ... SET OPTIONS): not scanned and altered again on every
# run of this process (bench/night.py counted 16 such jobs per tenant run)
_UNMARKABLE: set[tuple] = set()
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
        # a delivery's merges and replaces become pending slices (resources/warehouse_pending):
        # set by the engine for a tenant run; repairs, backfills and the merge step write directly
        self.deferred = False

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

    def ensure_table(self, table, specs, primary_key, extra=(), cluster_first=(), remove=None,
                     tenant=None, *, forms: dict[str, str] | None = None,
                     slice_remove=None, keep_tables: tuple[str, ...] = ()) -> "SharedEvolution":
        """Create the shared table partitioned by tenant bucket (if no tenant did yet), or evolve
        it for this tenant's columns. Every column hakobu creates here carries a marker in its
        description — its form (clear or HMAC) and a generation that changes whenever the column
        is created again — which is what tells every tenant, without shared state, whether its
        slice was filled into the column as it is now (WarehouseSink, `needs_refill`).

        - `remove(name)`: a column no tenant may deliver any more (drop_columns, credential-
          like) is dropped, with every tenant's values;
        - `forms` (column → "clear" | "hmac"): a column whose marker says the other form (newly
          hashed, or no longer hashed) is dropped for every tenant and added again, empty, in
          the new form; each tenant's slice is refilled by its own next run. A column without
          a marker (made by an older hakobu) is taken as clear, generation LEGACY_GEN; one to
          hash is checked once for values that are not 64 hex characters, then marked as
          hashed (or, with clear values in it, dropped and re-added like any newly hashed one);
        - `slice_remove(name)`: a column this tenant no longer delivers (its tenant file
          excludes it) loses this tenant's values only (one UPDATE on its partition);
        - decimals are widened to hold every tenant's values; other type changes stop the table.

        When columns go for every tenant, this table's staging and shadow tables holding them
        go too (any tenant's: a run or backfill of another tenant in flight then fails its
        warehouse part and catches up next time — preferred to letting it merge values the
        policy withholds), except `keep_tables` (the shadow a backfill is swapping in).

        A column whose BigQuery name is not its MySQL name (hakobu.naming) has the MySQL name
        in its description too, after the marker (`...; MySQL column: my col`).
        """
        forms = forms or {}
        notes = source_notes(specs)
        columns = ([(s.bq_name, s.bq_type) for s in specs] + list(extra)
                   + [(SYNCED_AT, "TIMESTAMP")])
        live = self.columns(table)
        evo = SharedEvolution()
        if live is None:
            self._create(table, columns, ["tenant_id", *primary_key],
                         partition=f" PARTITION BY RANGE_BUCKET(`{BUCKET}`, "
                                   f"GENERATE_ARRAY(0, {self.buckets}, 1))",
                         descriptions={n: with_note(marker(forms.get(n, "clear"), new_gen()),
                                                    notes.get(n)) for n in forms})
            evo.created = True
        else:
            kept, dropped = self._evolve(table, live, columns, forms, notes, remove, tenant, evo)
            if slice_remove is not None:
                delivered = {n.lower() for n, _ in columns}
                gone = {c.name: why for k, c in kept.items()
                        if k not in delivered and not k.startswith("_hakobu")
                        and c.name not in dropped and (why := slice_remove(c.name))}
                evo.excluded = list(gone)
                evo.cleared = self._clear_slice(table, gone)
            affected = {c.lower() for c in [*evo.removed, *evo.rehashed]}
            if affected:
                evo.tables_dropped += pending.drop_columns(
                    self, pending.list_pending(self, table), affected)
                evo.tables_dropped = self.drop_leftovers(
                    [t for t in self.list_tables((f"{STAGING_PREFIX}{table}_", SHADOW_PREFIX))
                     if t not in keep_tables and (t.startswith(STAGING_PREFIX)
                                                  or f"_{table}_" in t)], affected)
        now = self.columns(table) or {}
        evo.gens = {n: (parse_marker(c.description) or ("clear", LEGACY_GEN))[1] for n in forms
                    if (c := now.get(n.lower()))}
        return evo

    def _evolve(self, table, live, columns, forms, notes, remove, tenant,
                evo: SharedEvolution) -> tuple[dict, dict]:
        """An existing shared table: columns of the other form dropped and added again, the
        plan_evolution applied, unmarked columns adopted; returns (the live columns kept, the
        plan's drops)."""
        reform, unmarked = column_forms(live, forms)
        for name, form in unmarked.items():
            memo = (self.project, self.dataset, table, name.lower())
            if form == "clear":
                _UNMARKABLE.discard(memo)   # a clear run may write clear values: scan again
                continue        # taken as clear (LEGACY_GEN) without a DDL statement each
            if memo in _UNMARKABLE:
                evo.adopted[name] = form    # scanned by this process, its marker not settable
                continue
            if self._all_hashed(table, live[name.lower()]):
                evo.adopted[name] = form
            else:
                reform[name] = "hashed"
        kept = {k: c for k, c in live.items() if c.name not in reform}
        plan = plan_evolution(kept, columns, remove, shared=True)
        self.refuse(plan, table, tenant)
        for name, how in reform.items():
            self.sql(f"ALTER TABLE {self.ref(table)} DROP COLUMN IF EXISTS `{name}`",
                     table=table)
            evo.rehashed[name] = how
        done = self._apply(table, plan, descriptions={
            n: with_note(marker(f, new_gen()), notes.get(n)) for n, f in forms.items()})
        evo.added, evo.removed, evo.widened = done.added, done.removed, done.widened
        for name, form in evo.adopted.items():
            if (self.project, self.dataset, table, name.lower()) in _UNMARKABLE:
                continue
            text = with_note(marker(form, LEGACY_GEN), notes.get(name))
            try:
                self.sql(f"ALTER TABLE {self.ref(table)} ALTER COLUMN `{name}` SET OPTIONS("
                         f"description={bq_string(text)})", table=table)
            except LoadError as exc:
                # the marker only saves the next run this adoption's scan; a server that
                # cannot set it (the bare emulator parses no ALTER COLUMN ... SET OPTIONS)
                # leaves the column unmarked, adopted again next time
                log.warning("%s: column %s adopted as %s, its marker not set: %s", table,
                            name, form, exc)
                _UNMARKABLE.add((self.project, self.dataset, table, name.lower()))
        return kept, plan.drop

    def _all_hashed(self, table: str, col) -> bool:
        """An unmarked column to hash already holds only HMAC values (64 hex characters)? One
        scan of that column over the whole table, once: afterwards it carries a marker."""
        if col.type.name != "STRING":
            return False
        n = self.rows(f"SELECT COUNTIF(NOT REGEXP_CONTAINS(`{col.name}`, r'^[0-9a-f]{{64}}$')) "
                      f"AS n FROM {self.ref(table)}")[0]["n"]
        return int(n or 0) == 0

    def _clear_slice(self, table: str, columns: dict[str, str]) -> dict[str, str]:
        """This tenant's values of columns it no longer delivers become NULL; a cheap check of
        its own partition first, so a run with nothing to clear issues no DML."""
        if not columns:
            return {}
        names = list(columns)
        counts = self.rows("SELECT " + ", ".join(
            f"COUNTIF(T.`{n}` IS NOT NULL) AS `c{i}`" for i, n in enumerate(names))
            + f" FROM {self.ref(table)} T WHERE {self.scope}")[0]
        dirty = [n for i, n in enumerate(names) if int(counts[f"c{i}"] or 0)]
        pending.drop_columns(self, pending.list_pending(self, table, self.tenant),
                             {n.lower() for n in names})
        if dirty:
            sql = (f"UPDATE {self.ref(table)} T SET "
                   + ", ".join(f"`{n}` = NULL" for n in dirty) + f" WHERE {self.scope}")
            _on_conflict_retry(lambda: self.sql(sql, table=table),
                               f"{self.tenant}/{table} clear")
        return {n: columns[n] for n in dirty}

    def refuse(self, plan, table, tenant) -> None:
        if plan.refused:
            raise TypeChangeError(
                "incompatible column type change: " + "; ".join(plan.refused),
                tenant=tenant or self.tenant, table=table,
                hint=f"the warehouse table {self.dataset}.{table} holds every tenant's rows, so a "
                     "backfill of one tenant cannot change its type: migrate that column in "
                     "BigQuery (or drop the table and backfill every tenant); the customer's "
                     "delivery is not affected")

    def merge(self, table, files, specs, primary_key, *, extra=(), delete_scope=None,
              run_id="") -> MergeStats:
        if self.deferred:
            if delete_scope not in (None, "TRUE"):
                raise AssertionError("a pending slice is an upsert or the complete slice")
            return pending.stage(self, table, files, specs, extra,
                                 kind="upsert" if delete_scope is None else "full",
                                 run_id=run_id)
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
        if self.deferred:
            return pending.stage(self, table, files, specs, extra, kind="replace", run_id=run_id)
        stats = MergeStats()
        stg = self._load_staging(table, files, specs, f"{self.tenant}_{run_id}", stats, extra)
        try:
            json_cols = {s.bq_name for s in specs if s.bq_type == "JSON"}
            names = [s.bq_name for s in specs] + [n for n, _ in extra]
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
        (update, insert, and delete what the shadow lacks — scoped to the tenant). Under the
        table's merge lock, after dropping this tenant's pending slices: the shadow holds
        everything they do, read later, and a merge of them after the swap would bring older
        values back."""
        with self.merge_lock(table):
            for p in pending.list_pending(self, table, self.tenant):
                self.drop_table(p.name)
            return self._swap_slice(table, shadow, columns, primary_key)

    def _swap_slice(self, table: str, shadow: str, columns: list[str], primary_key: list[str]
                    ) -> int:
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

    @contextlib.contextmanager
    def merge_lock(self, table: str, wait_s: float = 120.0):
        """The warehouse table's merge lock (resources/warehouse_pending), waited for."""
        end = time.monotonic() + wait_s
        while not pending.acquire(self, table):
            if time.monotonic() > end:
                raise LoadError(f"the warehouse table {table} stays locked by another merge",
                                tenant=self.tenant, table=table,
                                hint="run again later; a crashed merge's lock expires after "
                                     f"{pending.LOCK_TTL_S // 60} minutes")
            time.sleep(2.0)
        try:
            yield
        finally:
            pending.release(self, table)

    # -- the merge step (hakobu.warehouse_merge) -------------------------------------------

    def pending_tables(self, tables: list[str]) -> dict[str, list[str]]:
        """Warehouse table -> tenants with pending slices of it, in one listing."""
        tags = {pending.tag(t): t for t in tables}
        out: dict[str, set[str]] = {}
        for name in self.list_tables((pending.PENDING_PREFIX,)):
            parsed = pending.parse_name(name)
            if parsed is not None and parsed[0] in tags:
                out.setdefault(tags[parsed[0]], set()).add(parsed[3])
        return {t: sorted(v) for t, v in out.items()}

    def merge_pending(self, table: str, primary_key: list[str]) -> "pending.MergeDone":
        """Every tenant's pending slices of `table` in one MERGE, under the table's merge lock
        (waited for: a merge in flight may not have listed this run's slices)."""
        with self.merge_lock(table):
            return _on_conflict_retry(lambda: pending.merge_all(self, table, list(primary_key)),
                                      f"{table} merge of pending slices")

    def count_slice(self, table: str) -> int:
        return int(self.rows(f"SELECT COUNT(*) AS n FROM {self.ref(table)} T "
                             f"WHERE {self.scope}")[0]["n"])

    def drop_stale_staging(self) -> list[str]:
        return []   # never list-and-drop in a shared dataset; staging tables expire on their own
