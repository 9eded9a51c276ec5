"""connectorx and the pure-Python reader run the same SQL and must give identical Arrow tables,
for every type of the contract, including the edges connectorx would panic on."""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from hakobu.config import Cluster, Tenant
from hakobu.planning import plan_for
from resources.mysql_source import MySQLSource, iter_chunks

EDGE_TABLE = """
CREATE TABLE `{s}`.edges (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED,
  bi BIGINT, bu BIGINT UNSIGNED, b1 BOOL,
  d12 DECIMAL(12,2), d38 DECIMAL(38,10), d65 DECIMAL(65,30),
  f FLOAT, db DOUBLE, bit1 BIT(1), bit9 BIT(9), bit64 BIT(64),
  c CHAR(3), vc VARCHAR(50), tx TEXT, lat VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(10), bl BLOB,
  en ENUM('a','b'), st SET('x','y','z'), js JSON,
  dd DATE, dt0 DATETIME, dt6 DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(6), yr YEAR,
  g GEOMETRY,
  updated_at DATETIME(6) NOT NULL, INDEX ix_u (updated_at)
) CHARACTER SET utf8mb4
"""

ROWS = [
    "(1, -128, 255, -32768, -8388608, -2147483648, 4294967295, -9223372036854775808, "
    "18446744073709551615, 1, -9999999999.99, 1234567890123456789012345678.0123456789, "
    "12345678901234567890123456789012345.123456789012345678901234567891, -1.5, "
    "2.2250738585072014e-308, b'1', b'100000001', b'1111111111111111111111111111111111111111111111111111111111111111', "
    "'ab', 'naïve 😀 日本語', REPEAT('long ', 50), 'café', X'00FF00FF', X'DEADBEEF', X'00', "
    "'b', 'x,z', '{\"k\": [1, 2, {\"e\": \"😀\"}]}', '2024-02-29', '2024-12-31 23:59:59', "
    "'1000-01-01 00:00:00.000001', '2038-01-19 03:14:07.999', '-838:59:59.000000', 2155, "
    "ST_GeomFromText('POINT(139.7 35.6)'), '2026-01-01 00:00:01')",
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, '2026-01-01 00:00:02')",
    "(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.00, 0, 0, 0, -0.0, b'0', b'0', b'0', '', '', '', '', "
    "X'00000000', '', '', 'a', '', '[]', '0000-00-00', '0000-00-00 00:00:00', "
    "'2024-00-15 10:00:00', '1970-01-01 00:00:01', '838:59:59.999999', 1901, "
    "ST_GeomFromText('LINESTRING(0 0, 1 1)'), '2026-01-01 00:00:03')",
]


def edges_plan(sql, schema, mysql_server, reader):
    sql("SET SESSION sql_mode = ''")  # permissive: zero dates and zero-in-date values allowed
    sql(EDGE_TABLE.format(s=schema))
    sql(f"INSERT INTO `{schema}`.edges VALUES " + ", ".join(ROWS))
    sql("SET SESSION sql_mode = DEFAULT")
    cluster = Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    tenant = Tenant(tenant="t", cluster="main", source={"schema": schema},
                    destination={"project": "hakobu-test", "dataset": "x"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                    tables=[{"name": "edges", "cursor": "updated_at", "chunk_rows": 2}])
    source = MySQLSource(cluster, reader=reader)
    return source, plan_for(source, tenant, tenant.tables[0])


def read_all(source, plan):
    parts = [b for b, _ in iter_chunks(source, plan, "full", None, None)]
    return pa.concat_tables(parts)


def test_readers_agree_on_every_type_edge(sql, schema, mysql_server):
    cx_source, plan = edges_plan(sql, schema, mysql_server, "connectorx")
    py_source = MySQLSource(cx_source.cluster, reader="pymysql")
    a, b = read_all(cx_source, plan), read_all(py_source, plan)
    assert a.schema == b.schema
    assert a.num_rows == b.num_rows == 3
    for name in a.column_names:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    cx_source.dispose()
    py_source.dispose()


def test_edge_values_are_exact(sql, schema, mysql_server):
    source, plan = edges_plan(sql, schema, mysql_server, "connectorx")
    rows = read_all(source, plan).to_pylist()
    r1, r2, r3 = rows
    assert r1["bu"] == Decimal(18446744073709551615)          # BIGINT UNSIGNED max, exact
    assert r1["bi"] == -9223372036854775808
    assert r1["d38"] == Decimal("1234567890123456789012345678.0123456789")
    assert r1["d65"] == Decimal("12345678901234567890123456789012345.123456789012345678901234567891")
    assert r1["bit1"] is True and r1["bit9"] == 257 and r1["bit64"] == 2**64 - 1
    assert r1["vc"] == "naïve 😀 日本語" and r1["lat"] == "café"
    assert r1["bn"] == b"\x00\xff\x00\xff" and r1["bl"] == b"\x00"
    assert r1["st"] == "x,z" and r1["en"] == "b"
    assert r1["dt6"] == dt.datetime(1000, 1, 1, 0, 0, 0, 1)
    assert r1["ts"] == dt.datetime(2038, 1, 19, 3, 14, 7, 999000, tzinfo=dt.timezone.utc)
    assert r1["tm"] == "-838:59:59.000000" and r3["tm"] == "838:59:59.999999"
    assert r1["yr"] == 2155 and r1["g"] == "POINT(139.7 35.6)"
    assert r1["f"] == -1.5
    # zero dates and zero-in-date values under the default policy: NULL, never a crash
    assert r3["dd"] is None and r3["dt0"] is None and r3["dt6"] is None
    assert r3["ts"] == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    assert all(v is None for k, v in r2.items() if k not in {"id", "updated_at"})
    source.dispose()


def test_zero_dates_fail_policy_names_the_row(sql, schema, mysql_server):
    import dataclasses

    from hakobu.errors import TypeContractError

    source, plan = edges_plan(sql, schema, mysql_server, "connectorx")
    strict = dataclasses.replace(plan, zero_dates="fail")
    with pytest.raises(TypeContractError, match=r"zero date.*'id': Decimal\('3'\)"):
        read_all(source, strict)
    source.dispose()
