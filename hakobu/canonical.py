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

Here: the rules' vocabulary (which kind of text a column gets, which values take part). The SQL
that renders them is the adapters': resources/canonical_mysql.py (MariaDB) and
resources/canonical_bigquery.py (BigQuery); tests/fakes/checks.py renders them in Python.
"""

from dataclasses import dataclass

from hakobu.types import BINARY_TYPES, INT_TYPES, SPATIAL_TYPES, TEXT_TYPES, ColumnSpec

FLOAT_TYPES = {"float", "double", "real"}
DECIMAL_TYPES = {"decimal", "numeric"}
HASH_RE = r"^[0-9a-f]{64}$"     # what a warehouse hash column holds


@dataclass(frozen=True)
class Part:
    """One delivered column as the digest sees it: the source column (its spec, read on MySQL by
    its MySQL name) and the name it has in the BigQuery table (hakobu.naming: `my col` is
    `my_col_7a2881` there); `hashed`: a warehouse hash column."""

    spec: ColumnSpec
    dest_name: str
    hashed: bool = False


def kind(spec: ColumnSpec) -> str:
    """The canonical text's kind of a source column (the table above)."""
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
    return kind(spec) == "json"


def comparable(spec: ColumnSpec) -> bool:
    """Whether the value (not only its NULL-ness) takes part in the digest."""
    return kind(spec) not in {"float", "unknown"}


def key_comparable(spec: ColumnSpec) -> bool:
    """Whether a key column has a canonical text both engines agree on."""
    return comparable(spec)


def split_parts(parts: list[Part]) -> tuple[list[Part], list[Part]]:
    """(the parts hashed row by row, the JSON parts compared by parsed value): the engines print
    some equal JSON values differently, so a drilled row carries each JSON part's text."""
    json_parts = [p for p in parts if is_json(p.spec) and not p.hashed]
    return [p for p in parts if p not in json_parts], json_parts
