"""The ports: what the engine needs from the outside world, and nothing more.

The engine (hakobu.sync, hakobu.backfill, hakobu.sinks, hakobu.warehouse, hakobu.checksums,
hakobu.verify) is written against these interfaces only. It never constructs a client, opens a
connection or reads the environment: it is handed an `IO`, which gives it, per cluster and per
tenant, a `Source`, a `ReadGate` and its `Destination`s.

Implementations:
- resources/ — the real ones: MySQL (resources.mysql_source.MySQLSource, with the cluster's
  resources.pressure.ReadGovernor) and BigQuery (resources.bigquery_dest.BigQueryDestination,
  resources.warehouse_dest.WarehouseDestination), assembled by resources.io.LiveIO and exposed
  to Dagster as ConfigurableResources (resources.dagster);
- tests/fakes — an in-memory destination and a scripted source, for the fast unit tier.

These are typing.Protocols: an implementation does not inherit from them, it only has to
answer the same calls. Planning (hakobu.planning.plan_table) is pure: a function of the reflected
table (`Reflected`, returned by Source.reflect) and the configuration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:                      # types only: the core imports no adapter at run time
    import pyarrow as pa

    from hakobu.config import Cluster, Config, Tenant
    from hakobu.plan import TablePlan
    from hakobu.types import ColumnInfo, ColumnSpec


@dataclass(frozen=True)
class Reflected:
    """A source table as the source describes it: what planning needs, nothing read yet."""

    columns: list["ColumnInfo"]
    primary_key: list[str]
    indexes: dict[str, list[str]]      # index name → columns in order
    row_bytes: int | None = None       # AVG_ROW_LENGTH (an estimate; None when unknown)
    unique: frozenset[str] = frozenset()   # names of the UNIQUE indexes (PRIMARY included)


OnChunk = Callable[[int, float], None]      # (rows, seconds) after every chunk read


@runtime_checkable
class ReadGate(Protocol):
    """The read budget of one source cluster (resources.pressure.ReadGovernor): every read
    runs inside a slot; between chunks a reader paces itself."""

    def slot(self, tenant: str = "", table: str = "") -> contextlib.AbstractContextManager: ...

    def try_slot(self, tenant: str = "", table: str = "") -> contextlib.AbstractContextManager: ...

    def pace(self, tenant: str = "", table: str = "") -> None: ...

    def throttled_seconds(self, tenant: str, table: str) -> float: ...

    def stats(self) -> dict: ...


@runtime_checkable
class Source(Protocol):
    """One source cluster. Reflects and reads; plans nothing (hakobu.planning.plan_table does)."""

    cluster: "Cluster"

    def ping(self) -> None: ...

    def reflect(self, schema: str, table: str) -> Reflected | None: ...

    def cursor_years(self, plan: "TablePlan") -> tuple[int, ...] | None: ...

    def pk_bounds(self, plan: "TablePlan") -> tuple[int, int] | None: ...

    def estimate_rows(self, plan: "TablePlan") -> int | None: ...

    def upper_bound(self, plan: "TablePlan", after: tuple | None = None) -> tuple[Any, dict]: ...

    def duplicate_key(self, plan: "TablePlan", gate: ReadGate) -> tuple | None:
        """(key values..., count) of one declared key shared by several rows, or None."""

    def chunks(self, plan: "TablePlan", pass_: str, after: tuple | None, upper: Any, *,
               on_chunk: OnChunk | None, gate: ReadGate) -> Iterator[tuple["pa.Table", tuple]]:
        """Keyset chunks of one pass ("main", "full", "nulls", "zeros"), each with its last key."""

    def initial_splits(self, plan: "TablePlan", gate: ReadGate) -> int: ...

    def parallel_chunks(self, plan: "TablePlan", pass_: str, upper: Any, parts: int,
                        on_chunk: OnChunk | None, gate: ReadGate) -> Iterator["pa.Table"]: ...

    def whole_table(self, plan: "TablePlan", gate: ReadGate) -> Iterator["pa.Table"]:
        """Every row of a keyless table (without_primary_key: replace), in batches."""

    def rows_by_keys(self, plan: "TablePlan", keys: list[tuple],
                     gate: ReadGate | None = None) -> "pa.Table": ...


class Staged(Protocol):
    """A staging file being written; close() gives its path (None when nothing was written)."""

    def write(self, batch: "pa.Table") -> None: ...

    def close(self) -> Path | None: ...


@runtime_checkable
class Destination(Protocol):
    """One BigQuery dataset (a customer's, or the warehouse's slice of one tenant)."""

    project: str
    dataset: str
    location: str

    def ensure_dataset(self, labels: dict | None = None) -> bool: ...

    def ensure_state_table(self) -> None: ...

    def drop_stale_staging(self) -> list[str]: ...

    def prefetch_watermarks(self, tables: list[str]) -> None: ...

    def columns(self, table: str) -> dict | None: ...

    def table_schema(self, table: str) -> dict[str, str] | None: ...

    def ensure_table(self, table: str, specs: list["ColumnSpec"], primary_key: list[str],
                     *args, **kwargs): ...

    def describe_columns(self, table: str, descriptions: dict[str, str]) -> None: ...

    def drop_leftovers(self, names: list[str], columns: set[str]) -> list[str]: ...

    def staging_file(self, table: str, schema: "pa.Schema"
                     ) -> contextlib.AbstractContextManager[Staged]: ...

    def merge(self, table: str, files: list[Path], specs: list["ColumnSpec"],
              primary_key: list[str], **kwargs): ...

    def replace(self, table: str, files: list[Path], specs: list["ColumnSpec"], **kwargs): ...

    def copy_table(self, source_table: str, target_table: str) -> None:
        """Replace target_table by a copy of source_table (the backfill's swap)."""

    def drop_table(self, table: str) -> None: ...

    def count(self, table: str) -> int: ...

    def read_watermark(self, table: str): ...

    def write_watermark(self, table: str, wm, previous, run_id: str): ...

    def clear_watermark(self, table: str) -> None: ...

    def read_note(self, table: str) -> dict | None: ...

    def write_note(self, table: str, note: dict, run_id: str) -> None: ...


@runtime_checkable
class IO(Protocol):
    """What a run is handed: its adapters. resources.io.LiveIO is the real one (one source and
    one governor per cluster for the life of the IO object, not of the process)."""

    def source(self, cluster: "Cluster") -> Source: ...

    def gate(self, cluster: "Cluster") -> ReadGate: ...

    def customer(self, tenant: "Tenant") -> Destination: ...

    def warehouse(self, config: "Config", tenant: "Tenant") -> Destination:
        """The warehouse's slice for one tenant (raises HakobuError when it cannot be had)."""

    def grant_new_dataset(self, config: "Config", dest: Destination) -> None:
        """Apply permissions.csv's grants to a dataset that was just created."""


# -- verification (hakobu.checksums, hakobu.verify) ----------------------------------------------
# The comparison logic is the core's; the SQL of each side is the adapter's. Appended below.
