"""The MySQL → Arrow → BigQuery type contract.

Decided once per table from the reflected column types, before the first read:
- the SELECT expression (so no reader ever sees a value it cannot decode: connectorx panics on
  zero dates, wide DECIMAL, negative TIME and spatial values),
- the Arrow type every batch is cast to (the same for every reader),
- the BigQuery column type.

Every session that reads runs with time_zone = '+00:00', so TIMESTAMP values arrive as UTC.
DATETIME values are civil time in the cluster's declared time zone; by default they stay civil
(BigQuery DATETIME), or become UTC instants (BigQuery TIMESTAMP) with `datetime_as: timestamp`.
"""

import re
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from hakobu.errors import TypeContractError
from hakobu.naming import column_name
from hakobu.sqlquote import quote_ident

INT_TYPES = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"}
BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
SPATIAL_TYPES = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
                 "multipolygon", "geometrycollection", "geomcollection"}
NUMERIC_MAX_INT_DIGITS = 29  # BigQuery NUMERIC: precision 38, scale <= 9
ZERO_FLAG_PREFIX = "__hakobu_zero_"


@dataclass(frozen=True)
class ColumnInfo:
    """One column as reflected from information_schema.COLUMNS."""

    name: str
    data_type: str            # lower-case DATA_TYPE, e.g. 'bigint', 'datetime'
    column_type: str          # full COLUMN_TYPE, e.g. 'bigint(20) unsigned'
    nullable: bool
    precision: int | None = None
    scale: int | None = None
    datetime_precision: int | None = None
    is_json: bool = False

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.column_type.lower()

    @property
    def bit_width(self) -> int:
        m = re.search(r"\((\d+)\)", self.column_type)
        return int(m.group(1)) if m else 1


@dataclass(frozen=True)
class ColumnSpec:
    """How one column is read, held in Arrow and stored in BigQuery."""

    info: ColumnInfo
    arrow_type: pa.DataType
    bq_type: str              # DDL type, e.g. 'NUMERIC(12, 2)'
    select_sql: str           # expression in the chunk SELECT, aliased to the column name
    staging_bq_type: str      # type in the staging table (JSON is staged as STRING)
    zero_guarded: bool = False
    datetime_as_timestamp: bool = False
    source_timezone: str = "UTC"
    # The BigQuery column this column lands in (hakobu.naming.column_name of the MySQL name,
    # unless given): everything written for BigQuery — the staged Arrow/Parquet schema, DDL,
    # MERGE and checksum SQL — says bq_name; everything read from MySQL says name, quoted.
    bq_name: str = ""

    def __post_init__(self):
        if not self.bq_name:
            object.__setattr__(self, "bq_name", column_name(self.info.name))

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def renamed(self) -> bool:
        """The column has another name in BigQuery than in MySQL (hakobu.naming)."""
        return self.bq_name != self.info.name

    @property
    def plain_sql(self) -> str:
        """The column as stored, without the zero-date guard (see TablePlan.guard_zero_dates)."""
        q = quote_ident(self.info.name)
        return f"{q} AS {q}" if self.zero_guarded else self.select_sql


def _zero_guard(col: str, unit: str = "SECOND") -> str:
    """NULL for zero dates and zero-in-date values; the same value otherwise. Date arithmetic
    does exactly that on MariaDB/MySQL, and costs the server about a third of a CASE guard
    (bench/analysis.md); the edge-value tests hold both readers to it."""
    return f"({col} + INTERVAL 0 {unit})"


def _zero_flag(col: str) -> str:
    return f"({col} IS NOT NULL AND (MONTH({col}) = 0 OR DAYOFMONTH({col}) = 0))"


# long: the whole type contract in one place, a branch per MySQL type, read as a table
def column_spec(info: ColumnInfo, *, datetime_as: str = "datetime",
                source_timezone: str = "UTC") -> ColumnSpec:
    """The type contract for one column; raises TypeContractError for what cannot be held."""
    t = info.data_type.lower()
    q = quote_ident(info.name)
    alias = f" AS {q}"
    plain = f"{q}{alias}"

    def spec(arrow: pa.DataType, bq: str, select: str = plain, staging: str | None = None,
             **kw) -> ColumnSpec:
        return ColumnSpec(info, arrow, bq, select, staging or bq, source_timezone=source_timezone,
                          **kw)

    if info.is_json:
        return spec(pa.large_string(), "JSON", staging="STRING")
    if t in INT_TYPES:
        if t == "bigint" and info.unsigned:
            return spec(pa.decimal128(20, 0), "NUMERIC(20, 0)")
        return spec(pa.int64(), "INT64")
    if t in {"decimal", "numeric"}:
        p, s = info.precision or 10, info.scale or 0
        if s <= 9 and p - s <= NUMERIC_MAX_INT_DIGITS:
            bq = f"NUMERIC({p}, {s})" if s else f"NUMERIC({p})"
        else:
            bq = f"BIGNUMERIC({p}, {s})" if s else f"BIGNUMERIC({p})"
        arrow = pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
        # connectorx panics past 28 digits: read wide decimals as text and parse exactly in Arrow
        select = f"CAST({q} AS CHAR){alias}" if p > 28 else plain
        return spec(arrow, bq, select)
    if t == "float":
        return spec(pa.float64(), "FLOAT64", f"CAST({q} AS DOUBLE){alias}")
    if t in {"double", "real"}:
        return spec(pa.float64(), "FLOAT64")
    if t == "bit":
        if info.bit_width == 1:
            return spec(pa.bool_(), "BOOL", f"CAST({q} AS UNSIGNED){alias}")
        if info.bit_width <= 63:
            return spec(pa.int64(), "INT64", f"CAST({q} AS UNSIGNED){alias}")
        return spec(pa.decimal128(20, 0), "NUMERIC(20, 0)", f"CAST({q} AS UNSIGNED){alias}")
    if t in TEXT_TYPES:
        return spec(pa.large_string(), "STRING")
    if t in BINARY_TYPES:
        return spec(pa.large_binary(), "BYTES")
    if t == "json":
        return spec(pa.large_string(), "JSON", staging="STRING")
    if t == "year":
        return spec(pa.int64(), "INT64", f"CAST({q} AS UNSIGNED){alias}")
    if t == "date":
        return spec(pa.date32(), "DATE", f"{_zero_guard(q, 'DAY')}{alias}", zero_guarded=True)
    if t == "time":
        # BigQuery TIME holds 00:00..23:59:59; MySQL TIME spans -838:59:59..838:59:59.
        return spec(pa.large_string(), "STRING", f"CAST({q} AS CHAR){alias}")
    if t == "datetime":
        as_ts = datetime_as == "timestamp"
        return spec(pa.timestamp("us", tz="UTC") if as_ts else pa.timestamp("us"),
                    "TIMESTAMP" if as_ts else "DATETIME", f"{_zero_guard(q)}{alias}",
                    zero_guarded=True, datetime_as_timestamp=as_ts)
    if t == "timestamp":
        return spec(pa.timestamp("us", tz="UTC"), "TIMESTAMP", f"{_zero_guard(q)}{alias}",
                    zero_guarded=True)
    if t in SPATIAL_TYPES:
        # WKT text: BigQuery GEOGRAPHY only holds valid lon/lat on a sphere, MySQL geometry
        # may be planar or carry another SRID. ST_GeogFromText() in BigQuery when it fits.
        return spec(pa.large_string(), "STRING", f"ST_AsText({q}){alias}")
    raise TypeContractError(
        f"column {info.name!r} has type {info.column_type!r}, which hakobu cannot deliver exactly",
        hint="exclude the column in the tenant file (exclude: [...]) or open an issue")


def zero_flag_select(spec: ColumnSpec, index: int) -> str:
    return f"{_zero_flag(quote_ident(spec.name))} AS {quote_ident(ZERO_FLAG_PREFIX + str(index))}"


def arrow_schema(specs: list[ColumnSpec]) -> pa.Schema:
    """The table's Arrow schema as read (MySQL names): what the readers produce."""
    return pa.schema([pa.field(s.name, s.arrow_type, nullable=True) for s in specs])


def dest_schema(specs: list[ColumnSpec]) -> pa.Schema:
    """The same columns under their BigQuery names: what is staged for BigQuery."""
    return pa.schema([pa.field(s.bq_name, s.arrow_type, nullable=True) for s in specs])


def to_dest(batch: pa.Table, specs: list[ColumnSpec]) -> pa.Table:
    """A batch as read (MySQL names) under the BigQuery names of `specs`, in their order."""
    return pa.Table.from_arrays([batch.column(s.name) for s in specs],
                                schema=dest_schema(specs))


def conform(raw: pa.Table, specs: list[ColumnSpec]) -> pa.Table:
    """Cast a reader's raw result to the table's Arrow schema; identical for every reader."""
    arrays = []
    for s in specs:
        col = raw.column(s.name)
        arrays.append(_conform_column(col, s))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(specs))


def _conform_column(col: pa.ChunkedArray, s: ColumnSpec) -> pa.ChunkedArray:
    target = s.arrow_type
    if col.type == target:
        return col
    if pa.types.is_timestamp(target):
        if pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = col.cast(pa.timestamp("us"))
            if s.datetime_as_timestamp:
                # civil time in the source's declared zone → UTC instant; DST gaps and folds
                # are refused rather than guessed
                return pc.assume_timezone(col, s.source_timezone, ambiguous="raise",
                                          nonexistent="raise").cast(target)
            if target.tz is not None:      # TIMESTAMP read in a UTC session
                return pc.assume_timezone(col, "UTC")
            return col
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return _from_strings(col, s)
    if pa.types.is_date(target) and pa.types.is_timestamp(col.type):
        return col.cast(pa.date32())
    if pa.types.is_boolean(target) and pa.types.is_integer(col.type):
        return pc.not_equal(col, 0)
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), target)
    if pa.types.is_decimal(target) and (pa.types.is_string(col.type)
                                        or pa.types.is_large_string(col.type)):
        return col.cast(target)
    if pa.types.is_large_string(target) and pa.types.is_binary(col.type):
        return col.cast(pa.string()).cast(target)
    return col.cast(target)


def _from_strings(col: pa.ChunkedArray, s: ColumnSpec) -> pa.ChunkedArray:
    ts = pc.strptime(col, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=False)
    return _conform_column(ts, s)


# ---------------------------------------------------------------------------------------------
# Python values of the pure-Python reader (pymysql) → the same raw Arrow shapes connectorx gives


def python_column(values: list, s: ColumnSpec) -> pa.Array:
    """Build an Arrow array from pymysql values for column spec s (before conform())."""
    target = s.arrow_type
    if pa.types.is_decimal(target):
        return pa.array([None if v is None else Decimal(v) if not isinstance(v, Decimal) else v
                         for v in values], type=target)
    if pa.types.is_boolean(target):
        return pa.array([None if v is None else bool(int(v)) for v in values], type=target)
    if pa.types.is_large_string(target):
        return pa.array([None if v is None else v.decode("utf-8") if isinstance(v, bytes) else v
                         for v in values], type=target)
    if pa.types.is_timestamp(target):
        return pa.array(values, type=pa.timestamp("us"))
    if pa.types.is_date(target):
        return pa.array(values, type=pa.date32())
    return pa.array(values, type=target)
