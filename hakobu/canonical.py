"""One canonical text per delivered value, computed identically by MariaDB and BigQuery in SQL.

Content verification (hakobu/verify.py) and the key checksums (hakobu/checksums.py) hash what a
row *is*, on both engines, without moving the rows: each side renders every value as text in a
form both engines produce for the same delivered value, and both take MD5 of it. The rules,
per type of the source column (what the customer's BigQuery column holds is the type contract's,
hakobu/types.py):

| source type                 | text on both sides                                              |
|-----------------------------|-----------------------------------------------------------------|
| integers, YEAR, BIT(n>1)    | decimal digits (`-5`, `18446744073709551615`)                    |
| BIT(1) (BigQuery BOOL)      | `true` / `false`                                                 |
| DECIMAL(p,s)                | the value without trailing fractional zeros (`10`, `-0.5`): MariaDB |
|                             | and the emulator print the declared scale, BigQuery trims it; a |
|                             | value rounded to another scale (1.2345 vs 1.23) differs         |
| FLOAT, DOUBLE               | NULL-ness only (`F`): neither engine can print a binary float   |
|                             | the way the other does in SQL (MariaDB has no printf); the      |
|                             | values travel as IEEE doubles in Parquet, bit for bit           |
| CHAR…TEXT, ENUM, SET        | the UTF-8 text (MD5 of its bytes)                               |
| BINARY…BLOB                 | MD5 of the bytes                                                |
| JSON                        | compact JSON text (MariaDB JSON_COMPACT, BigQuery              |
|                             | TO_JSON_STRING), MD5 of it; the engines print some equal values |
|                             | differently (`"\u00e9"` / `"é"`, `1e3` / `1000.0`), so a bucket  |
|                             | that differs is settled row by row on the parsed JSON values    |
|                             | (hakobu/verify.py)                                              |
| DATE                        | `YYYY-MM-DD` (four-digit years); zero dates are NULL            |
| DATETIME, TIMESTAMP         | `YYYY-MM-DD HH:MM:SS.ffffff` in the delivered terms (civil time |
|                             | in the cluster zone, TIMESTAMP in UTC)                          |
| TIME, spatial (as WKT)      | the delivered STRING                                            |
| warehouse `hash_columns`    | `H` when the warehouse holds 64 hex digits for a non-NULL      |
|                             | source value; a clear value left behind differs. The HMAC       |
|                             | itself is not recomputed in SQL: that would put key material    |
|                             | into query texts and BigQuery's job history                     |

NULL is never text: each column contributes `N` for NULL, else `<length>:<text>` (or the 32
hex digits of the MD5 of long values), so NULL, '' and 'N' all differ and no two columns can
run into each other. A row's hash is the first 15 hex digits (60 bits) of the MD5 of its
columns' parts in order.

Everything here is pure: functions of column specs that return SQL expressions.
"""

from dataclasses import dataclass

from hakobu.plan import col_ref
from hakobu.types import BINARY_TYPES, INT_TYPES, SPATIAL_TYPES, TEXT_TYPES, ColumnSpec

FLOAT_TYPES = {"float", "double", "real"}
DECIMAL_TYPES = {"decimal", "numeric"}
HASH_RE = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class Part:
    """One delivered column as the digest sees it: the source column (its spec, read on MySQL by
    its MySQL name) and the name it has in the BigQuery table (hakobu.naming: `my col` is
    `my_col_7a2881` there); `hashed`: a warehouse hash column."""

    spec: ColumnSpec
    dest_name: str
    hashed: bool = False


def _kind(spec: ColumnSpec) -> str:
    t = spec.info.data_type
    if spec.info.is_json or t == "json":
        return "json"
    if t in INT_TYPES or t == "year":
        return "int"
    if t in DECIMAL_TYPES:
        return "decimal"
    if t in FLOAT_TYPES:
        return "float"
    if t == "bit":
        return "bool" if spec.info.bit_width == 1 else "int"
    if t in TEXT_TYPES:
        return "text"
    if t in BINARY_TYPES:
        return "binary"
    if t == "date":
        return "date"
    if t in {"datetime", "timestamp"}:
        return "datetime"
    if t == "time" or t in SPATIAL_TYPES:
        return "string"
    return "unknown"


LONG = {"text", "binary", "json", "string"}     # hashed first: unbounded length


def is_json(spec: ColumnSpec) -> bool:
    return _kind(spec) == "json"


def comparable(spec: ColumnSpec) -> bool:
    """Whether the value (not only its NULL-ness) takes part in the digest."""
    return _kind(spec) not in {"float", "unknown"}


def key_comparable(spec: ColumnSpec) -> bool:
    """Whether a key column has a canonical text both engines agree on."""
    return comparable(spec)


# -- MariaDB ------------------------------------------------------------------------------------

def _my_trim(expr: str) -> str:
    return f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {expr}))"


def my_text(spec: ColumnSpec, *, raw_binary: bool = False) -> str:
    """The canonical text of a source column in MariaDB (NULL for NULL and for zero dates)."""
    c = col_ref(spec.name)
    k = _kind(spec)
    if k == "json":
        return f"JSON_COMPACT({c})"
    if k == "int":      # BIT(n) and YEAR are delivered as CAST(c AS UNSIGNED)
        if spec.info.data_type in {"bit", "year"}:
            return f"CAST(CAST({c} AS UNSIGNED) AS CHAR)"
        return f"CAST({c} AS CHAR)"
    if k == "decimal":
        text = f"CAST({c} AS CHAR)"
        return _my_trim(text) if (spec.info.scale or 0) > 0 else text
    if k == "float":
        return f"IF({c} IS NULL, NULL, 'F')"
    if k == "bool":
        return f"IF({c} IS NULL, NULL, IF(CAST({c} AS UNSIGNED) <> 0, 'true', 'false'))"
    if k == "text":
        return f"CONVERT({c} USING utf8mb4)"
    if k == "binary":
        return c if raw_binary else f"LOWER(HEX({c}))"
    if k == "date":
        return f"DATE_FORMAT(({c} + INTERVAL 0 DAY), '%Y-%m-%d')"
    if k == "datetime":
        return f"DATE_FORMAT(({c} + INTERVAL 0 SECOND), '%Y-%m-%d %H:%i:%s.%f')"
    if spec.info.data_type in SPATIAL_TYPES:
        return f"ST_AsText({c})"
    return f"CAST({c} AS CHAR)"


def my_part(p: Part) -> str:
    if p.hashed:
        return f"IF({col_ref(p.spec.name)} IS NULL, 'N', 'H')"
    k = _kind(p.spec)
    if k in LONG:
        text = my_text(p.spec, raw_binary=True)
        return f"IFNULL(MD5({text}), 'N')"
    text = my_text(p.spec)
    return f"IFNULL(CONCAT(CHAR_LENGTH({text}), ':', {text}), 'N')"


def my_row_hash(parts: list[Part]) -> str:
    """60 bits of the MD5 of a row's parts, as an unsigned integer."""
    body = ", ".join(my_part(p) for p in parts)
    return f"CAST(CONV(LEFT(MD5(CONCAT({body})), 15), 16, 10) AS UNSIGNED)"


def my_key_text(specs: list[ColumnSpec]) -> str:
    """Canonical text of a (composite) key: length-prefixed parts, so ('a:', 'b') and
    ('a', ':b') differ."""
    parts = []
    for s in specs:
        text = f"CONVERT({my_text(s)} USING utf8mb4)"
        parts += [f"CAST(CHAR_LENGTH({text}) AS CHAR)", "':'", text]
    return f"CONCAT({', '.join(parts)})"


# -- BigQuery -----------------------------------------------------------------------------------

def bq_col(name: str, alias: str = "") -> str:
    if "`" in name or "\\" in name:
        raise ValueError(f"invalid BigQuery column name {name!r}")
    return f"{alias + '.' if alias else ''}`{name}`"


def _zone(zone: str) -> str:
    if "'" in zone or "\\" in zone:
        raise ValueError(f"invalid time zone {zone!r}")
    return zone


def bq_text(spec: ColumnSpec, name: str | None = None, alias: str = "", *,
            raw_binary: bool = False) -> str:
    """The same canonical text, of the delivered BigQuery column (`name`, by default the
    column's BigQuery name: spec.bq_name)."""
    c = bq_col(name or spec.bq_name, alias)
    k = _kind(spec)
    if k == "json":
        return f"IF({c} IS NULL, NULL, TO_JSON_STRING({c}))"
    if k == "int":
        return f"CAST({c} AS STRING)"
    if k == "decimal":
        s = f"CAST({c} AS STRING)"
        return f"IF(STRPOS({s}, '.') > 0, RTRIM(RTRIM({s}, '0'), '.'), {s})"
    if k == "float":
        return f"IF({c} IS NULL, NULL, 'F')"
    if k == "bool":
        return f"IF({c} IS NULL, NULL, IF({c}, 'true', 'false'))"
    if k == "binary":
        return c if raw_binary else f"TO_HEX({c})"
    # the date part by CAST: FORMAT's %Y prints year 999 as '999', MariaDB as '0999'
    if k == "date":
        return f"CAST({c} AS STRING)"
    if k == "datetime":
        if spec.bq_type == "DATETIME":
            return (f"CONCAT(CAST(CAST({c} AS DATE) AS STRING), ' ', "
                    f"FORMAT_DATETIME('%H:%M:%E6S', {c}))")
        zone = _zone("UTC" if spec.info.data_type == "timestamp" else spec.source_timezone)
        return (f"CONCAT(CAST(DATE({c}, '{zone}') AS STRING), ' ', "
                f"FORMAT_TIMESTAMP('%H:%M:%E6S', {c}, '{zone}'))")
    return c                                         # text, TIME and WKT: STRING as delivered


def bq_part(p: Part, alias: str = "") -> str:
    c = bq_col(p.dest_name, alias)
    if p.hashed:
        return f"IF({c} IS NULL, 'N', IF(REGEXP_CONTAINS({c}, r'{HASH_RE}'), 'H', {c}))"
    k = _kind(p.spec)
    if k in LONG:
        return f"IFNULL(TO_HEX(MD5({bq_text(p.spec, p.dest_name, alias, raw_binary=True)})), 'N')"
    text = bq_text(p.spec, p.dest_name, alias)
    return f"IFNULL(CONCAT(CAST(LENGTH({text}) AS STRING), ':', {text}), 'N')"


def bq_row_hash(parts: list[Part], alias: str = "") -> str:
    body = ", ".join(bq_part(p, alias) for p in parts)
    return f"CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5(CONCAT({body}))), 1, 15)) AS INT64)"


def bq_key_text(specs: list[ColumnSpec], alias: str = "") -> str:
    parts = []
    for s in specs:
        text = bq_text(s, alias=alias)
        parts += [f"CAST(LENGTH({text}) AS STRING)", "':'", text]
    return f"CONCAT({', '.join(parts)})"
