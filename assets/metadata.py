"""What a customer or warehouse materialization says, in Dagster's conventions.

Every materialization carries the standard table metadata (dagster.TableMetadataSet), which the
UI shows on the asset and in the catalog:
- `dagster/table_name`: the BigQuery table, project.dataset.table;
- `dagster/column_schema`: its columns as delivered, BigQuery names and types, each described
  with its MySQL name (hakobu.naming may have renamed it);
- `dagster/row_count`: the rows in that table after the run (a warehouse table holds every
  tenant's rows; `dagster/partition_row_count` is this tenant's slice).
Numbers are typed (int, float), so rows read and merged, bytes staged, duration, throttling
plot per partition in the UI; text is text.
"""

import dagster as dg
from dagster._core.definitions.metadata import TableMetadataSet   # not re-exported by dagster

from hakobu.results import TableResult
from hakobu.sinks import CUSTOMER, WAREHOUSE

# the figures that plot (asset page → "Plots"), kept numeric even when they are zero
NUMERIC = ("rows_read", "rows_merged", "bytes_staged", "chunks", "merges", "splits",
           "null_cursor_rows", "duration_s", "throttled_s", "rows_per_s", "rows_total_estimate")


def column_schema(columns: list[tuple[str, str, str | None]]) -> dg.TableSchema:
    """(BigQuery name, BigQuery type, MySQL name or None) → a TableSchema."""
    return dg.TableSchema(columns=[
        dg.TableColumn(name, bq_type, description=(f"MySQL column {mysql}" if mysql is not None
                                                   else "added by hakobu (not a MySQL column)"))
        for name, bq_type, mysql in columns])


def typed(metadata: dict) -> dict:
    """Numbers as numbers (ints, floats), None as "-"; everything else as it is."""
    out = {}
    for k, v in metadata.items():
        if isinstance(v, bool) or isinstance(v, dg.MetadataValue):
            out[k] = v
        elif isinstance(v, int):
            out[k] = dg.MetadataValue.int(v)
        elif isinstance(v, float):
            out[k] = dg.MetadataValue.float(v)
        elif v is None:
            out[k] = "-"
        elif k in NUMERIC and isinstance(v, str):
            try:
                out[k] = dg.MetadataValue.float(float(v))
            except ValueError:
                out[k] = v
        else:
            out[k] = v
    return out


def table_metadata(r: TableResult, kind: str, row_count: int | None = None,
                   partition_row_count: int | None = None) -> dict:
    """The dagster/* entries of one sink's table (kind: "customer" or "warehouse")."""
    landed = r.landed.get(kind)
    md = TableMetadataSet(
        table_name=landed[0] if landed else None,
        column_schema=column_schema(landed[1]) if landed else None,
        row_count=row_count, partition_row_count=partition_row_count)
    return {k: v for k, v in dict(md).items() if v is not None}


def customer_metadata(tenant_id: str, r: TableResult, row_count: int | None) -> dict:
    return {"tenant": tenant_id, **typed(r.metadata()),
            **table_metadata(r, CUSTOMER, row_count=row_count)}


def warehouse_metadata(tenant_id: str, r: TableResult, row_count: int | None,
                       slice_rows: int | None) -> dict:
    return {"tenant": tenant_id, **typed(r.warehouse_metadata()),
            "throttled_s": dg.MetadataValue.float(round(r.throttled_s, 3)),
            **table_metadata(r, WAREHOUSE, row_count=row_count, partition_row_count=slice_rows)}
