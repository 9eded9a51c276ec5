"""The canonical text of hakobu/canonical.py, rendered in MariaDB SQL (the source side).

Pure text builders: functions of column specs that return SQL expressions over the alias `_src`
(hakobu.plan.SRC). Their BigQuery twins are in resources/canonical_bigquery.py; a change here
needs the same change there (tests/integration/test_verify_types.py compares them value by
value).
"""

from hakobu.canonical import LONG, Part, kind
from hakobu.plan import col_ref
from hakobu.types import SPATIAL_TYPES, ColumnSpec


def _my_trim(expr: str) -> str:
    return f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {expr}))"


def my_text(spec: ColumnSpec, *, raw_binary: bool = False) -> str:
    """The canonical text of a source column in MariaDB (NULL for NULL and for zero dates)."""
    c = col_ref(spec.name)
    k = kind(spec)
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
    k = kind(p.spec)
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




def my_key_hash(specs: list[ColumnSpec]) -> str:
    """60 bits of the MD5 of a key's canonical text, as an unsigned integer."""
    return f"CAST(CONV(LEFT(MD5({my_key_text(specs)}), 15), 16, 10) AS UNSIGNED)"
