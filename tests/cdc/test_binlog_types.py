"""Every value the binlog reader returns, against what the nightly path SELECTs for the same row.

One table with every type of the contract (ENUM, SET, BIT, JSON, DECIMAL up to (65,30),
DATETIME(6), TIMESTAMP written from a +09:00 session, TIME with negative fractions, YEAR 0000,
BINARY with trailing zero bytes, zero dates, utf8mb4 and latin1 text, ...). Inserts, then
updates of every column, then deletes; after each phase the nightly reader (MySQLSource,
pymysql, a `full` read) reads the table. The reader's insert rows must equal the first read,
its update after-images the second, its before-images the first, its deleted rows the second.
Nothing is compared with a constant: where the binlog cannot give the nightly's value
(GEOMETRY), the value is compared with what the server SELECTs in that form.
"""

from decimal import Decimal

import pyarrow as pa
import pytest

from hakobu.binlog import ChangeKind
from hakobu.config import Tenant
from hakobu.planning import plan_for
from resources.binlog_reader import BinlogReader
from resources.binlog_server import current_checkpoint
from resources.mysql_source import MySQLSource, iter_chunks
from tests.cdc.conftest import reader_id

TABLE = """
CREATE TABLE `{s}`.types (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, bu BIGINT UNSIGNED, b1 BOOL,
  d12 DECIMAL(12,2), d38 DECIMAL(38,10), d65 DECIMAL(65,30),
  f FLOAT, db DOUBLE, bit1 BIT(1), bit9 BIT(9), bit64 BIT(64),
  c CHAR(3), vc VARCHAR(50), tx TEXT, lat VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(10), bl BLOB,
  en ENUM('a','b','c'), st SET('x','y','z'), js JSON,
  dd DATE, dt0 DATETIME, dt6 DATETIME(6), ts TIMESTAMP(3) NULL, ts0 TIMESTAMP NULL,
  tm TIME(6), tm1 TIME(1), tm3 TIME(3), tm0 TIME, yr YEAR,
  g GEOMETRY,
  updated_at DATETIME(6) NOT NULL, INDEX ix_u (updated_at)
) CHARACTER SET utf8mb4
"""
COLUMNS = ("id, ti, tu, si, mi, i, iu, bi, bu, b1, d12, d38, d65, f, db, bit1, bit9, bit64, c, "
           "vc, tx, lat, bn, vb, bl, en, st, js, dd, dt0, dt6, ts, ts0, tm, tm1, tm3, tm0, yr, g, "
           "updated_at")
INSERTS = [
    "(1, -128, 255, -32768, 16777215, -2147483648, 4294967295, -9223372036854775808, "
    "18446744073709551615, 1, -9999999999.99, 1234567890123456789012345678.0123456789, "
    "12345678901234567890123456789012345.123456789012345678901234567891, -1.1, "
    "2.2250738585072014e-308, b'1', b'100000001', "
    "b'1111111111111111111111111111111111111111111111111111111111111111', 'ab', "
    "'naïve 😀 日本語', REPEAT('long ', 50), 'café', X'00FF0000', X'DEADBEEF00', X'00', 'b', "
    "'z,x', '{\"k\": [1, 2, {\"e\": \"😀\"}], \"n\": null}', '2024-02-29', '2024-12-31 23:59:59', "
    "'1000-01-01 00:00:00.000001', '2038-01-19 12:14:07.999', '2024-06-01 09:00:00', "
    "'-838:59:59.000000', '-00:00:00.5', '-01:02:03.450', '-12:00:00', 2155, "
    "ST_GeomFromText('POINT(139.7 35.6)'), '2026-01-01 00:00:01')",
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2026-01-01 00:00:02')",
    "(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.00, 0, 0, 0, -0.0, b'0', b'0', b'0', '', '', '', '', "
    "X'00000000', '', '', 9, '', '[]', '0000-00-00', '0000-00-00 00:00:00', "
    "'2024-00-15 10:00:00', '0000-00-00 00:00:00', '1970-01-01 09:00:01', '838:59:59.999999', "
    "'00:00:00.1', '-00:00:01.001', '00:00:00', 0, ST_GeomFromText('LINESTRING(0 0, 1 1)'), "
    "'2026-01-01 00:00:03')",
]
# Every column of rows 1 and 3 changes; row 2 gets values where it had NULLs.
UPDATES = [
    "UPDATE `{s}`.types SET ti = ti + 1, tu = 7, si = 1, mi = 2, i = 3, iu = 4, bi = 5, bu = 6, "
    "b1 = 2, d12 = 0.01, d38 = -0.0000000001, d65 = -1.5, f = 3.4e38, db = -1e-300, bit1 = bit1 ^ 1, "
    "bit9 = b'111111111', bit64 = b'1', c = 'xyz', vc = '𝄞 clef', tx = 'a\\nb', lat = 'ÿ', "
    "bn = X'00000001', vb = X'01', bl = X'0000', en = 'c', st = 'x,y,z', js = '{{\"k\": 2}}', "
    "dd = '9999-12-31', dt0 = '1000-01-01 00:00:00', dt6 = '2024-07-01 12:00:00.123456', "
    "ts = '1970-01-01 09:00:01.001', ts0 = '2038-01-19 12:14:07', tm = '00:00:00.000001', "
    "tm1 = '-838:59:58.9', tm3 = '-00:00:00.001', tm0 = '838:59:59', yr = 1901, "
    "g = ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))'), "
    "updated_at = updated_at + INTERVAL 1 DAY WHERE id IN (1, 3)",
    "UPDATE `{s}`.types SET js = '{{\"only\": \"json\"}}', st = '', en = 'a', bn = X'', "
    "tm = '-00:00:00.000001', yr = 0, ts = '0000-00-00 00:00:00', "
    "updated_at = updated_at + INTERVAL 1 DAY WHERE id = 2",
]
DELETES = "DELETE FROM `{s}`.types WHERE id IN (2, 3)"


def nightly(cluster, schema) -> dict[int, dict]:
    """The table as the nightly path reads it (pymysql reader, full read), by id."""
    tenant = Tenant(tenant="t", cluster=cluster.name, source={"schema": schema},
                    destination={"project": "hakobu-test", "dataset": "x"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                    tables=[{"name": "types", "cursor": "updated_at", "chunk_rows": 2}])
    source = MySQLSource(cluster, reader="pymysql")
    try:
        plan = plan_for(source, tenant, tenant.tables[0])
        parts = [b for b, _ in iter_chunks(source, plan, "full", None, None)]
    finally:
        source.dispose()
    rows = pa.concat_tables(parts).to_pylist()
    return {r["id"]: r for r in rows}


def geometry(cdc_sql, schema) -> dict[int, bytes]:
    """The server's own bytes of GEOMETRY (4-byte SRID + WKB), which is what the binlog holds."""
    return {i: g for i, g in cdc_sql(f"SELECT id, g FROM `{schema}`.types")}


def assert_same(change_row: dict, source_row: dict, source_geometry: bytes | None, what: str):
    assert set(change_row) == set(source_row), what
    for name, value in source_row.items():
        got = change_row[name]
        if name == "g":          # the nightly delivers WKT; the binlog has the internal bytes
            assert got == source_geometry, f"{what}: g"
            continue
        # BIGINT UNSIGNED and BIT(64) are decimal128(20, 0) in the nightly's Arrow: the binlog
        # gives the same integer as an int (exact; the Arrow schema converts it)
        same_type = type(got) is type(value) or (
            isinstance(value, Decimal) and value == value.to_integral_value()
            and type(got) is int)
        assert got == value and same_type, \
            f"{what}: column {name}: binlog {got!r}, nightly {value!r}"


@pytest.fixture
def changes(binlog_server, binlog_cluster, cdc_sql, cdc_schema, cdc_conn):
    s = cdc_schema
    cdc_sql(TABLE.format(s=s))
    start = current_checkpoint(cdc_conn)
    writer = type(cdc_sql)(binlog_server, tz="+09:00")   # TIMESTAMPs written in JST
    try:
        writer("SET SESSION sql_mode = ''")      # zero dates, zero-in-date, invalid ENUM index
        writer(f"INSERT INTO `{s}`.types ({COLUMNS}) VALUES " + ", ".join(INSERTS))
        first, geo1 = nightly(binlog_cluster, s), geometry(cdc_sql, s)
        for update in UPDATES:
            writer(update.format(s=s))
        second, geo2 = nightly(binlog_cluster, s), geometry(cdc_sql, s)
        writer(DELETES.format(s=s))
    finally:
        writer.close()
    with BinlogReader(binlog_cluster, start, [(s, "types")], reader_id=reader_id()) as reader:
        got = list(reader.changes())
    return got, first, geo1, second, geo2


def test_every_value_equals_what_the_nightly_path_reads(changes):
    got, first, geo1, second, geo2 = changes
    kinds = [(c.kind, c.row["id"]) for c in got]
    assert kinds == [(ChangeKind.INSERT, 1), (ChangeKind.INSERT, 2), (ChangeKind.INSERT, 3),
                     (ChangeKind.UPDATE, 1), (ChangeKind.UPDATE, 3), (ChangeKind.UPDATE, 2),
                     (ChangeKind.DELETE, 2), (ChangeKind.DELETE, 3)]
    for c in got:
        i = c.row["id"]
        assert c.primary_key == ("id",)
        if c.kind is ChangeKind.INSERT:
            assert_same(c.row, first[i], geo1[i], f"insert {i}")
            assert c.before is None
        elif c.kind is ChangeKind.UPDATE:
            assert_same(c.row, second[i], geo2[i], f"update {i} after")
            assert_same(c.before, first[i], geo1[i], f"update {i} before")
        else:
            assert_same(c.row, second[i], geo2[i], f"delete {i}")


def test_the_rows_really_differ_between_phases(changes):
    """The comparison above would pass on a reader that always returned the first image, if
    the phases did not change every column: make sure they do."""
    _, first, _, second, _ = changes
    unchanged = [n for n in first[1] if n != "id" and first[1][n] == second[1][n]]
    assert unchanged == [], unchanged
    unchanged = [n for n in first[3] if n != "id" and first[3][n] == second[3][n]]
    assert unchanged == [], unchanged
