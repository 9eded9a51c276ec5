"""The values of a row event, as the nightly path reads the same row (README "Type contract").

python-mysql-replication 1.0.17 decodes the binary row image itself, and for several types it
gives something else than a SELECT through pymysql/connectorx does (each measured against
MariaDB 10.11 in tests/cdc/test_binlog_types.py). Later parts merge binlog changes into the
tables the nightly path delivers, so one row must have one value whichever path read it;
`nightly_value` brings each library value to the nightly's form:

| type | the library gives | nightly (and this) |
|---|---|---|
| BIT(n) | a string of '0'/'1' digits | int; BIT(1) bool |
| SET | a Python set (order lost); empty set → None | 'a,c' in definition order; '' |
| TIMESTAMP | naive UTC datetime; the zero TIMESTAMP → 1970-01-01 00:00:00 | aware UTC; None |
| TIME | timedelta; negative with a fraction: wrong (-01:02:03.450 → -01:02:03.550) | the text MySQL prints, '-838:59:59.000000' with the column's digits |
| YEAR | 0000 → 1900 | 0 |
| BINARY(n) | trailing 0x00 stripped; empty → str '' | the n bytes |
| VARBINARY, BLOB | bytes; empty → str '' | b'' |

Already equal: integers (UNSIGNED from FULL metadata), DECIMAL (exact Decimal), FLOAT (float32
widened), DOUBLE, text in its column charset (utf8mb4, latin1), ENUM (the label; '' for the
invalid-value index 0), DATE and DATETIME(0..6) (civil time; zero dates and zero-in-date values
→ None, as policy `zero_dates: to_null`; policy `fail` cannot be applied to binlog values, the
library leaves nothing to tell a zero date from NULL but its `none_sources`), MariaDB JSON (its
LONGTEXT text). Not brought over: GEOMETRY stays the internal bytes (4-byte SRID + WKB; the
nightly delivers WKT); MySQL's binary JSON stays the library's decoded object (not measured
here: no MySQL server).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE

from hakobu.binlog import BinlogPosition, ChangeKind, RowChange
from hakobu.errors import BinlogNotReady

_EPOCH = dt.datetime(1970, 1, 1)
_BINARY_CHARSETS = ("binary",)


def _bit(value: str, column) -> int | bool:
    number = int(value, 2) if value else 0
    return bool(number) if column.bits == 1 else number


def _set(value, column, none_source: str | None) -> str | None:
    if value is None:
        return "" if none_source == "empty set" else None
    return ",".join(label for label in column.set_values if label in value)


def _timestamp(value: dt.datetime) -> dt.datetime | None:
    if value == _EPOCH:       # TIMESTAMP's range starts at 1970-01-01 00:00:01 UTC: the zero
        return None           # value '0000-00-00 00:00:00' is the only one stored as 0
    return value.replace(tzinfo=dt.timezone.utc)


def _time(value: dt.timedelta, column) -> str:
    micros = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if sign and micros % 1_000_000 and column.type == FIELD_TYPE.TIME2:
        # 1.0.17 reads a negative TIME2's fraction without the borrow of its two's complement:
        # -01:02:03.450 arrives as -(01:02:03 + 0.550 s). Undo it: whole part + 1 s − fraction.
        whole, frac = divmod(micros, 1_000_000)
        micros = whole * 1_000_000 + 1_000_000 - frac
    seconds, fraction = divmod(micros, 1_000_000)
    text = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    fsp = getattr(column, "fsp", 0) or 0
    return text + (f".{fraction:06d}"[: fsp + 1] if fsp else "")


def _binary(value, column) -> Any:
    if isinstance(value, str):           # the library decodes an empty value to ''
        if value or column.character_set_name not in _BINARY_CHARSETS:
            return value
        value = b""
    if column.type == FIELD_TYPE.STRING and column.character_set_name == "binary":
        return value.ljust(column.max_length, b"\x00")   # BINARY(n): the binlog strips the pad
    return value


def nightly_value(column, value: Any, none_source: str | None = None) -> Any:
    """`value` as the library decoded it for `column` (its table-map column), in the form the
    nightly path delivers."""
    kind = column.type
    if kind == FIELD_TYPE.SET:
        return _set(value, column, none_source)
    if value is None:
        return None
    if kind == FIELD_TYPE.BIT:
        return _bit(value, column)
    if kind in (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIMESTAMP2):
        return _timestamp(value)
    if kind in (FIELD_TYPE.TIME, FIELD_TYPE.TIME2):
        return _time(value, column)
    if kind == FIELD_TYPE.YEAR:
        return 0 if value == 1900 else value     # YEAR holds 0000 or 1901..2155
    if kind in (FIELD_TYPE.STRING, FIELD_TYPE.VAR_STRING, FIELD_TYPE.VARCHAR, FIELD_TYPE.BLOB):
        return _binary(value, column)
    return value


def nightly_row(columns, values: dict, none_sources: dict | None) -> dict[str, Any]:
    """A whole row image (the library's `values` by column name) in the nightly's forms."""
    sources = none_sources or {}
    return {c.name: nightly_value(c, values.get(c.name), sources.get(c.name)) for c in columns}


# -- row events into RowChanges (resources.binlog_reader) ----------------------------------

def primary_key_of(primary_key) -> tuple[str, ...]:
    if not primary_key:
        return ()
    return (primary_key,) if isinstance(primary_key, str) else tuple(primary_key)


def row_change(item: tuple, kind: ChangeKind, seq: int, position: BinlogPosition,
               committed: dt.datetime, where: str, recover: Callable) -> RowChange:
    """One row of a row event (item: event class, schema, table, columns, key, row) as a
    RowChange with the nightly's values; a partial image is refused (BinlogNotReady, with the
    `recover` command of its table)."""
    _, schema, table, columns, pk, row = item
    if kind is ChangeKind.UPDATE:
        images = [("after", row["after_values"], row.get("after_none_sources")),
                  ("before", row["before_values"], row.get("before_none_sources"))]
    else:
        images = [("row", row["values"], row.get("none_sources"))]
    for image, values, sources in images:
        missing = [c.name for c in columns if c.name not in values
                   or (sources or {}).get(c.name) == NONE_SOURCE.COLS_BITMAP]
        if missing:
            raise _partial_image(where, recover([(schema, table)]), schema, table, image,
                                 missing, position)
    after = nightly_row(columns, images[0][1], images[0][2])
    before = nightly_row(columns, images[1][1], images[1][2]) if len(images) > 1 else None
    return RowChange(schema=schema, table=table, kind=kind, row=after, before=before,
                     primary_key=pk, position=position, committed_at=committed, seq=seq)


def _partial_image(where: str, recover: str, schema: str, table: str, image: str,
                   missing: list[str], position: BinlogPosition) -> BinlogNotReady:
    """A column of the table map not in an image (or marked not sent, the library's
    COLS_BITMAP none source): a session with binlog_row_image MINIMAL or NOBLOB left out what
    it did not change; reading on would deliver those columns as NULL."""
    return BinlogNotReady(
        f"{where} logged a partial row image of {schema}.{table} (the transaction ending at "
        f"{position.file}:{position.pos}): column(s) {missing} are not in its {image} image",
        [f"a session wrote binlog_row_image=MINIMAL or NOBLOB for {schema}.{table}; the guard "
         "reads the global setting only and cannot see a session's"],
        ["binlog_row_image=FULL for every session (SET GLOBAL binlog_row_image = 'FULL' and no "
         "`SET SESSION binlog_row_image` in the application); then re-snapshot the table with "
         + recover])
