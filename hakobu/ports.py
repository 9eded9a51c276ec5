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
from dataclasses import dataclass, field
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
    data_bytes: int | None = None      # DATA_LENGTH: the clustered index (an estimate)
    # per column (lower case), the largest index CARDINALITY of an index that starts with it:
    # the distinct values the server estimates (a shared table's tenants)
    distinct: dict[str, int] = field(default_factory=dict)


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

    def rows_up_to(self, plan: "TablePlan", cap: int) -> int: ...

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

    def table_rows(self, table: str) -> int | None: ...

    def ensure_table(self, table: str, specs: list["ColumnSpec"], primary_key: list[str],
                     *args, **kwargs): ...

    def describe_columns(self, table: str, descriptions: dict[str, str]) -> None: ...

    def drop_leftovers(self, names: list[str], columns: set[str]) -> list[str]: ...

    def staging_file(self, table: str, schema: "pa.Schema"
                     ) -> contextlib.AbstractContextManager[Staged]: ...

    def merge(self, table: str, files: list[Path], specs: list["ColumnSpec"],
              primary_key: list[str], **kwargs): ...

    def replace(self, table: str, files: list[Path], specs: list["ColumnSpec"], **kwargs): ...

    def create_shadow(self, shadow: str, specs: list["ColumnSpec"], primary_key: list[str], *,
                      extra=(), tenant: str | None = None) -> None:
        """An empty table shaped like a customer table: a backfill's shadow."""

    def swap_in(self, table: str, shadow: str, cluster: list[str],
                descriptions: dict[str, str]) -> None:
        """`table` becomes the shadow's content in one statement (the backfill's swap)."""

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
# The core (hakobu.checksums, hakobu.verify) decides the buckets (hakobu.bucketing.Bucketing),
# diffs what both sides return and decides what to repair; each side renders the same
# canonical text (hakobu.canonical) in its own SQL: resources.mysql_checks.MySQLChecks (mixed
# into MySQLSource), resources.bigquery_checks.BigQueryChecks (mixed into BigQueryDestination;
# a destination with a `scope`, the warehouse's, answers for its tenant's slice only), and
# tests/fakes/checks.py in Python. `buckets=None` means every bucket. Integers come back as
# Python ints; XORs may be signed or unsigned (the core compares them modulo 2^64).

if TYPE_CHECKING:                      # types only
    from hakobu.bucketing import Bucketing
    from hakobu.canonical import Part


@dataclass(frozen=True)
class KeyStats:
    """COUNT(*), and MIN, MAX (and COUNT(DISTINCT) when asked) of the range column, if any."""

    rows: int
    lo: Any = None
    hi: Any = None
    distinct: int | None = None


@dataclass(frozen=True)
class ContentRow:
    """One row of a drilled bucket: its bucket, the key's canonical text, the 60-bit hash of its
    non-JSON parts, each JSON part's text (settled by parsed value), and on the source side the
    raw primary-key values (tenant column included) to re-read it by."""

    bucket: int
    key_text: str
    hash: int
    json: tuple = ()
    key: tuple | None = None


@dataclass(frozen=True)
class KeyRead:
    """The source keys of some buckets (plan.primary_key columns, MySQL names), and what reading
    them cost."""

    keys: "pa.Table"
    queries: int = 0
    index_passes: int = 0      # whole covering-index passes over the tenant's keys (hash mode)


@runtime_checkable
class SourceChecks(Protocol):
    """The source side of the comparisons, over the plan's tenant's rows. Single-query calls run
    inside the caller's read slot; calls that may run several queries take the gate."""

    def key_stats(self, plan: "TablePlan", column: str | None,
                  distinct: bool = False) -> KeyStats: ...

    def key_checksums(self, plan: "TablePlan", bucketing: "Bucketing"
                      ) -> list[tuple[int, int, int, int]]:
        """Per bucket: (bucket, rows, SUM of the key ("int" mode; else 0), XOR of key or key
        hash)."""

    def content_digests(self, plan: "TablePlan", bucketing: "Bucketing", parts: list["Part"],
                        buckets: list[int] | None) -> list[tuple[int, int, int]]:
        """Per bucket: (bucket, rows, XOR of the row hashes over `parts`)."""

    def content_rows(self, plan: "TablePlan", bucketing: "Bucketing", parts: list["Part"],
                     buckets: list[int]) -> list[ContentRow]: ...

    def keys_in_buckets(self, plan: "TablePlan", bucketing: "Bucketing", buckets: list[int],
                        gate: ReadGate | None = None) -> KeyRead: ...

    # and Source.rows_by_keys(plan, keys, gate): the rows to merge again, as the sync reads them


class StagedKeys(Protocol):
    """The source's keys of some buckets, staged beside the destination table
    (DestinationChecks.staged_keys)."""

    def count_gone(self) -> int:
        """Destination rows in those buckets whose key is not staged."""

    def delete_gone(self) -> int:
        """Delete them; returns the rows deleted."""

    def missing(self) -> list[dict]:
        """The staged keys the destination lacks (by BigQuery column name)."""


@runtime_checkable
class DestinationChecks(Protocol):
    """The destination side, on table `table` (its slice, when the destination has a scope)."""

    def key_stats(self, table: str, plan: "TablePlan", column: str | None,
                  distinct: bool = False) -> KeyStats: ...

    def key_checksums(self, table: str, plan: "TablePlan", bucketing: "Bucketing"
                      ) -> list[tuple[int, int, int, int]]: ...

    def content_digests(self, table: str, plan: "TablePlan", bucketing: "Bucketing",
                        parts: list["Part"], buckets: list[int] | None
                        ) -> list[tuple[int, int, int]]: ...

    def content_rows(self, table: str, plan: "TablePlan", bucketing: "Bucketing",
                     parts: list["Part"], buckets: list[int]) -> list[ContentRow]:
        """key is None: a destination row is named by its key text."""

    def staged_keys(self, table: str, plan: "TablePlan", bucketing: "Bucketing",
                    buckets: list[int], keys: "pa.Table", tag: str
                    ) -> contextlib.AbstractContextManager[StagedKeys]:
        """Stage `keys` (hakobu.bucketing.key_columns(plan) as delivered: hakobu.types.to_dest,
        BigQuery names) against the rows of `buckets`; dropped on exit."""

    def delete_keys(self, table: str, plan: "TablePlan", key_texts: list[str]) -> int:
        """Delete every row (every copy) whose key text is one of `key_texts`."""
