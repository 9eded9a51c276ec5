"""Where a table's rows go: the customer's dataset and, when enabled, the internal warehouse.

One read feeds every sink. sync_table (and backfill) write each chunk they read to every sink's
own staging Parquet file — the customer's gets the batch as read, the warehouse's the converted
batch (columns dropped or HMAC-hashed, tenant_id added) — then each sink loads and MERGEs its file
and moves its own watermark by compare-and-set. The source is read once whatever the number of
sinks; a sink whose watermark is behind (a failed or newly enabled warehouse) makes the shared
read start earlier, and the other sink re-merges those rows idempotently.

The customer sink is critical: its failure fails the table. The warehouse sink is not: a failure
sets it aside for the rest of the table (its watermark stays where it was, so the next run reads
from there for both) and is reported, while the customer's delivery goes on.
"""

import contextlib
import hashlib
import logging
from pathlib import Path

import pyarrow as pa

from hakobu.config import Table
from hakobu.errors import HakobuError
from hakobu.plan import TablePlan
from hakobu.policy import ColumnPolicy, Hasher, WarehouseTable, export_plan, withheld_columns
from hakobu.types import ColumnSpec, dest_schema, to_dest
from hakobu.bqschema import CLUSTERABLE, SHADOW_PREFIX, Evolution, base_type, source_notes
from hakobu.markers import needs_refill
from hakobu.ports import Destination
from hakobu.state import MergeStats, Watermark

log = logging.getLogger("hakobu.sinks")
CUSTOMER, WAREHOUSE = "customer", "warehouse"


class Sink:
    """One destination table fed by the shared read.

    Names: `table` and `key` are BigQuery names; `specs` are the plan's column specs, whose
    `bq_name` is each column's BigQuery name (hakobu.naming). Batches arrive as read, under
    the MySQL names, and are renamed here, at the edge that writes for BigQuery (`convert`)."""

    kind = "customer"
    critical = True

    def __init__(self, dest: Destination, table: str, specs: list[ColumnSpec],
                 key: list[str], *, extra: list[tuple[str, str]] = (), tenant: str | None = None,
                 policy: ColumnPolicy | None = None, incremental: bool = False):
        self.dest, self.table, self.tenant = dest, table, tenant
        self.specs, self.key, self.extra = list(specs), list(key), list(extra)
        self.policy = policy or ColumnPolicy()
        self.incremental = incremental        # the table is read from a watermark
        self.active, self.error = True, None
        self.previous: Watermark | None = None
        self.rows_merged = self.merges = self.bytes_staged = 0
        self.columns_added: list[str] = []
        self.evolution: Evolution | None = None
        self.reread: str | None = None        # why this run reads the whole table again
        self.gens: dict[str, str] | None = None   # warehouse: column generations filled into
        self._watermark_read = False
        self._cm = self._sf = None

    # -- shape ----------------------------------------------------------------------------

    @property
    def schema(self) -> pa.Schema:
        return dest_schema(self.specs)

    @property
    def columns(self) -> list[str]:
        return [s.bq_name for s in self.specs] + [n for n, _ in self.extra]

    def convert(self, batch: pa.Table) -> pa.Table:
        return to_dest(batch, self.specs)

    def cluster_by(self) -> list[str]:
        types = {s.bq_name: s.bq_type for s in self.specs} | dict(self.extra)
        return [c for c in self.key if base_type(types[c]) in CLUSTERABLE][:4]

    def fail(self, exc: BaseException) -> None:
        self.active, self.error = False, str(exc)
        self.discard()

    # -- target and watermark -------------------------------------------------------------

    def prepare(self) -> None:
        """Create or evolve the target table before the first read (ensure_table): a column a
        policy now withholds is dropped with the values delivered before (and a leftover
        backfill shadow holding it too: staging leftovers go at the start of every tenant run);
        a column added to a table that holds rows makes this run read the table again in full
        (its watermark is cleared first, so a crash re-reads next time), else the rows
        delivered before would keep NULL there — a column back from `exclude`, a released
        credential, or a new MySQL column with a default."""
        evo = self.dest.ensure_table(self.table, self.specs, self.key, extra=self.extra,
                                     remove=self.policy.customer_removal, tenant=self.tenant)
        self.evolution, self.columns_added = evo, evo.added
        if evo.removed:
            evo.tables_dropped += self.dest.drop_leftovers(
                [self.shadow], {c.lower() for c in evo.removed})
        if self.incremental and evo.added and not evo.created:
            self.dest.clear_watermark(self.table)
            self.reread = "columns added to a table holding rows: " + ", ".join(evo.added)

    def read_watermark(self) -> Watermark | None:
        if self._watermark_read:                # prepare() read it already
            self._watermark_read = False
            return self.previous
        self.previous = self.dest.read_watermark(self.table)
        return self.previous

    def write_watermark(self, key: tuple | None, rows: int, run_id: str) -> None:
        total = (self.previous.rows_total if self.previous else 0) + rows
        self.previous = self.dest.write_watermark(self.table, self.watermark(key, total),
                                                  self.previous, run_id)

    def watermark(self, key: tuple | None, rows_total: int) -> Watermark:
        return Watermark(key, 0, rows_total, self.gens)

    def evolution_metadata(self) -> dict:
        """What this run changed in the target table, for the materialization."""
        evo = self.evolution or Evolution()
        return {**evo.metadata(), "reread": self.reread or "-"}

    # -- staging --------------------------------------------------------------------------

    def open(self) -> None:
        self.discard()
        self._cm = self.dest.staging_file(self.table, self.schema)
        self._sf = self._cm.__enter__()

    def write(self, batch: pa.Table) -> None:
        self._sf.write(self.convert(batch))

    @property
    def rows(self) -> int:
        return self._sf.rows if self._sf is not None else 0

    def take(self) -> list[Path]:
        """Close the staging file; its path (kept on disk until discard) if it holds rows."""
        path = self._sf.close() if self._sf is not None else None
        return [path] if path else []

    def discard(self) -> None:
        if self._cm is not None:
            cm, self._cm, self._sf = self._cm, None, None
            cm.__exit__(None, None, None)

    # -- loading --------------------------------------------------------------------------

    def merge(self, files: list[Path], *, delete_scope: str | None = None, run_id: str,
              into: str | None = None) -> MergeStats:
        stats = self.dest.merge(into or self.table, files, self.specs, self.key,
                                extra=self.extra, delete_scope=delete_scope, run_id=run_id)
        self._count(stats)
        return stats

    def replace(self, files: list[Path], *, run_id: str) -> MergeStats:
        stats = self.dest.replace(self.table, files, self.specs, run_id=run_id)
        self.dest.describe_columns(self.table, source_notes(self.specs))   # lost by the CTAS
        self._count(stats)
        return stats

    def _count(self, stats: MergeStats) -> None:
        self.merges += 1
        self.rows_merged += stats.dml_rows
        self.bytes_staged += stats.bytes_staged

    # -- backfill: shadow table, reconcile, swap ------------------------------------------

    @property
    def shadow(self) -> str:
        return f"{SHADOW_PREFIX}{self.table}"

    def prepare_shadow(self) -> None:
        """A fresh, empty shadow with the source's current schema (so a backfill is also the
        way through an incompatible type change)."""
        self.drop_shadow()
        self.dest.create_shadow(self.shadow, self.specs, self.key, extra=self.extra,
                                tenant=self.tenant)

    def count_shadow(self) -> int:
        return self.dest.count(self.shadow)

    def swap(self) -> None:
        """The shadow becomes the table in one statement; readers see old or new, never half."""
        self.dest.swap_in(self.table, self.shadow, self.cluster_by(), source_notes(self.specs))
        self.drop_shadow()

    def drop_shadow(self) -> None:
        self.dest.drop_table(self.shadow)


class WarehouseSink(Sink):
    kind = "warehouse"
    critical = False

    def __init__(self, dest, wt: WarehouseTable, hasher: Hasher | None, *,
                 policy: ColumnPolicy | None = None, incremental: bool = False):
        super().__init__(dest, wt.table, list(wt.specs), list(wt.primary_key), extra=wt.extra,
                         tenant=wt.tenant, policy=policy, incremental=incremental)
        self.wt, self.hasher = wt, hasher

    @property
    def forms(self) -> dict[str, str]:
        return {s.bq_name: "hmac" if s.name in self.wt.hashed else "clear" for s in self.specs}

    def _evolve(self, swapping: bool = False) -> None:
        """The shared table takes this tenant's columns (WarehouseDestination.ensure_table): a
        column dropped by policy goes for every tenant, a newly hashed (or no longer hashed)
        one is dropped for every tenant and added again empty in its new form, a column this
        tenant excludes loses this tenant's values."""
        evo = self.dest.ensure_table(
            self.table, self.specs, self.key, extra=self.extra,
            remove=self.policy.warehouse_removal, tenant=self.wt.tenant, forms=self.forms,
            slice_remove=self.policy.warehouse_slice_removal,
            keep_tables=(self.shadow,) if swapping else ())
        self.evolution, self.columns_added, self.gens = evo, evo.added, evo.gens
        if evo.excluded and not swapping:
            # this tenant's own backfill leftover (its name is exact; no backfill of this tenant
            # runs now); staging leftovers cannot be told apart safely from other tenants' runs
            # in flight here and expire within 2 days
            evo.tables_dropped += self.dest.drop_leftovers(
                [self.shadow], {c.lower() for c in evo.excluded})

    def prepare(self) -> None:
        """Evolve the shared table, then decide whether this tenant's slice must be read again
        in full: when a column it delivers was created again since the slice was filled — by
        this run or by another tenant's (the column generations its watermark records,
        needs_refill). The watermark is cleared first, so a crash re-reads next time; the shared
        read then starts at the beginning for both sinks (the customer re-merges idempotently)."""
        self._evolve()
        if not self.incremental:
            return                        # read and merged in full every run anyway
        self.previous = self.dest.read_watermark(self.table)
        self._watermark_read = True
        why = needs_refill(self.previous, self.gens or {}, self.evolution.changed)
        if why:
            self.dest.clear_watermark(self.table)
            self.previous, self.reread = None, why

    @property
    def schema(self) -> pa.Schema:
        return self.wt.schema

    def convert(self, batch: pa.Table) -> pa.Table:
        return self.wt.convert(batch, self.hasher)

    def replace(self, files, *, run_id):
        stats = self.dest.replace_slice(self.table, files, self.specs, self.extra, run_id=run_id)
        self._count(stats)
        return stats

    @property
    def shadow(self) -> str:
        return warehouse_shadow(self.wt.tenant, self.table)

    def swap(self) -> None:
        self._evolve(swapping=True)       # the same policy changes as a nightly run's
        self.dest.swap_slice(self.table, self.shadow, self.columns, self.key)
        self.drop_shadow()


def warehouse_shadow(tenant: str, table: str) -> str:
    """A tenant's backfill shadow in the shared warehouse dataset (tenant and table in the name,
    and a hash of both, since names with underscores could otherwise collide)."""
    tag = hashlib.sha256(f"{tenant}\0{table}".encode()).hexdigest()[:8]
    return f"{SHADOW_PREFIX}{tenant}_{table}_{tag}"


def build_sinks(plan: TablePlan, table: Table, customer: Destination | None,
                warehouse=None) -> tuple[TablePlan, list[Sink], list[str], str | None]:
    """Apply the export policy, then make the sinks this table feeds.

    Returns (exported plan, sinks, withheld columns, warehouse error). Every path that writes to
    BigQuery builds its sinks here, so the credentials rule (hakobu.policy.export_plan) is applied
    to every destination. A warehouse problem (bad policy for this table, missing hash key) is
    returned, not raised: the customer's delivery does not depend on the internal warehouse.
    """
    exported = export_plan(plan, table)
    withheld = withheld_columns(plan, exported)
    sinks: list[Sink] = []
    incremental = exported.incremental
    if customer is not None:
        sinks.append(Sink(customer, plan.bq_table, list(exported.specs),
                          [exported.bq(k) for k in exported.primary_key],
                          tenant=plan.tenant, policy=ColumnPolicy.of(table),
                          incremental=incremental))
    wh_error = None
    if warehouse is not None:
        try:
            sinks.append(warehouse.sink(exported, table=table))
        except HakobuError as exc:
            wh_error = str(exc)
    return exported, sinks, withheld, wh_error


@contextlib.contextmanager
def staging(sinks: list[Sink]):
    """Open a staging file in every active sink; discard them all on the way out."""
    for s in sinks:
        if s.active:
            s.open()
    try:
        yield
    finally:
        for s in sinks:
            s.discard()
