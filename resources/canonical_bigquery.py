"""The canonical text of hakobu/canonical.py, rendered in BigQuery SQL (the destination side).

Pure text builders over a table alias (usually `T`). Their MariaDB twins are in
resources/canonical_mysql.py; a change here needs the same change there.
"""

from hakobu.canonical import HASH_RE, LONG, Part, kind
from hakobu.types import ColumnSpec


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
    k = kind(spec)
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
    k = kind(p.spec)
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


def bq_key_hash(specs: list[ColumnSpec], alias: str = "") -> str:
    """The same 60 bits of the MD5 of a key's canonical text, as an INT64."""
    return f"CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5({bq_key_text(specs, alias)})), 1, 15)) AS INT64)"
