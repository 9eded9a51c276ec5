"""Content verification on edge values of every delivered type: equal data compares equal (no
"different" from how the engines print a value). Schemas/datasets hk_rev_*, dropped afterwards."""

import pytest

from hakobu.canonical import Part
from hakobu.plan import col_ref
from tests.live import destination_for, source_for, sync_tenant
from hakobu.verify import compare_content
from hakobu.planning import plan_for
from resources.bigquery_client import BigQuerySettings
from resources.canonical_bigquery import bq_part, bq_text
from resources.canonical_mysql import my_part, my_text
from resources.mysql_checks import source_from


@pytest.fixture
def rschema(schema):          # tests/integration/conftest.py: created, dropped
    return schema


@pytest.fixture
def rdataset(dataset):
    return dataset


def column_diffs(source, dest, plan, table):
    """Per column: the ids whose canonical part differs between MariaDB and BigQuery."""
    out = {}
    pk = plan.primary_key[0]
    for s in plan.specs:
        p = Part(s, s.name)
        src = dict(source.checks_query(f"SELECT {col_ref(pk)}, {my_part(p)} FROM "
                                         f"{source_from(plan)}", plan))
        dst = {r["k"]: r["p"] for r in dest.rows(
            f"SELECT T.`{pk}` AS k, {bq_part(p, 'T')} AS p FROM {dest.ref(table)} T")}
        bad = sorted(k for k in set(src) | set(dst) if src.get(k) != dst.get(k))
        if bad:
            ids = ", ".join(str(int(k)) for k in bad)
            st = dict(source.checks_query(f"SELECT {col_ref(pk)}, {my_text(s)} FROM "
                                          f"{source_from(plan)} "
                                          f"WHERE {col_ref(pk)} IN ({ids})", plan))
            dt_ = {r["k"]: r["t"] for r in dest.rows(
                f"SELECT T.`{pk}` AS k, {bq_text(s, alias='T')} AS t FROM {dest.ref(table)} T "
                f"WHERE T.`{pk}` IN ({ids})")}
            out[s.name] = [(k, st.get(k), dt_.get(k)) for k in bad]
    return out


def deliver(sql, schema, dataset, make_config, ddl, inserts, table="e", extra="",
            sql_mode=None):
    sql(ddl.replace("{s}", schema))
    if sql_mode is not None:
        sql(f"SET SESSION sql_mode = '{sql_mode}'")
    for ins in inserts:
        sql(ins.replace("{s}", schema))
    sql("SET SESSION sql_mode = DEFAULT")
    config = make_config({"a": (schema, dataset, f"- name: {table}\n{extra}")})
    [r] = sync_tenant(config, "a")
    assert r.ok, r.error
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    plan = plan_for(source, tenant, tenant.table(table))
    dest = destination_for(tenant, BigQuerySettings.from_env())
    return source, dest, plan


NUMERIC_DDL = """CREATE TABLE `{s}`.e (id INT PRIMARY KEY,
  d2 DECIMAL(12,2), d9 DECIMAL(20,9), d0 DECIMAL(10,0), dw DECIMAL(30,10), d38 DECIMAL(38,0),
  u BIGINT UNSIGNED, b64 BIT(64), b1 BIT(1), b3 BIT(3), y YEAR, ti TINYINT(1), si SMALLINT)"""
NUMERIC_ROWS = [
    "INSERT INTO `{s}`.e VALUES (1, 0, 0, 0, 0, 0, 0, b'0', b'0', b'0', 0, 0, 0)",
    "INSERT INTO `{s}`.e VALUES (2, -0.00, -0.000000000, -0, -0.0, -0, 18446744073709551615, "
    "b'1111111111111111111111111111111111111111111111111111111111111111', b'1', b'111', 2155, "
    "2, -32768)",
    "INSERT INTO `{s}`.e VALUES (3, 100, 100, 100, 100, 100, 9223372036854775808, "
    "b'1000000000000000000000000000000000000000000000000000000000000000', NULL, b'100', 1901, "
    "-1, 32767)",
    "INSERT INTO `{s}`.e VALUES (4, 0.10, 0.000000001, -5, 0.0000000001, "
    "99999999999999999999999999999999999999, 1, NULL, NULL, NULL, NULL, 127, NULL)",
    "INSERT INTO `{s}`.e VALUES (5, -0.5, -0.000000001, 9999999999, -12345678901234567890.0123456789,"
    " -99999999999999999999999999999999999999, NULL, NULL, b'0', b'010', 2000, -128, 0)",
    "INSERT INTO `{s}`.e VALUES (6, 9999999999.99, 99999999999.999999999, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
]


def test_numeric_edge_values_compare_equal(sql, rschema, rdataset, make_config, bq_env):
    source, dest, plan = deliver(sql, rschema, rdataset, make_config, NUMERIC_DDL, NUMERIC_ROWS)
    cmp = compare_content(source, dest, plan, table="e")
    assert cmp.equal, (cmp.summary(), repr(column_diffs(source, dest, plan, "e")))


TEMPORAL_DDL = """CREATE TABLE `{s}`.e (id INT PRIMARY KEY,
  dd DATE, dt0 DATETIME, dt3 DATETIME(3), ts TIMESTAMP(6) NULL, ts0 TIMESTAMP NULL,
  tm TIME, tm3 TIME(3), tm6 TIME(6))"""
TEMPORAL_ROWS = [
    "INSERT INTO `{s}`.e VALUES (1, '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.001',"
    " '1970-01-01 00:00:01', '1970-01-01 00:00:01', '-838:59:59', '-838:59:58.999', "
    "'-00:00:00.000001')",
    "INSERT INTO `{s}`.e VALUES (2, '9999-12-31', '9999-12-31 23:59:59', "
    "'9999-12-31 23:59:59.999', '2038-01-19 03:14:07.999999', '2038-01-19 03:14:07', "
    "'838:59:59', '838:59:59.000', '00:00:00')",
    "INSERT INTO `{s}`.e VALUES (3, '2024-02-29', '2024-02-29 12:00:00', "
    "'2024-02-29 12:00:00.500', '2024-02-29 12:00:00.5', '2024-02-29 12:00:00', "
    "'-00:00:01', '-00:00:00.500', '12:34:56.789012')",
    "INSERT INTO `{s}`.e VALUES (4, '0000-00-00', '0000-00-00 00:00:00', "
    "'2024-00-15 00:00:00.000', '0000-00-00 00:00:00', NULL, NULL, NULL, NULL)",
    "INSERT INTO `{s}`.e VALUES (5, '2024-00-15', '2024-05-00 10:00:00', NULL, NULL, "
    "'0000-00-00 00:00:00', '00:00:00', '00:00:00.000', '-00:00:00.000000')",
    "INSERT INTO `{s}`.e VALUES (6, '0999-12-31', '0100-01-01 00:00:00', "
    "'0001-01-01 00:00:00.000', NULL, NULL, '100:00:00', '1:2:3.4', '-1:00:00')",
]


def test_temporal_edge_values_compare_equal(sql, rschema, rdataset, make_config, bq_env):
    source, dest, plan = deliver(sql, rschema, rdataset, make_config, TEMPORAL_DDL,
                                 TEMPORAL_ROWS, extra="  zero_dates: to_null\n",
                                 sql_mode="ALLOW_INVALID_DATES")
    cmp = compare_content(source, dest, plan, table="e")
    assert cmp.equal, (cmp.summary(), repr(column_diffs(source, dest, plan, "e")))


STRING_DDL = """CREATE TABLE `{s}`.e (id INT PRIMARY KEY,
  c CHAR(8), v VARCHAR(64), l1 VARCHAR(16) CHARACTER SET latin1, t TEXT, bn BINARY(4),
  vb VARBINARY(8), en ENUM('a','b','c'), st SET('x','y','z'), ch CHAR(4) CHARACTER SET ascii,
  u2 VARCHAR(8) CHARACTER SET ucs2, sj VARCHAR(8) CHARACTER SET sjis)"""
STRING_ROWS = [
    "INSERT INTO `{s}`.e VALUES (1, 'a  ', 'x\\0y', 'é€', 'line\\nnext\\r\\n', 'a', '', 'a', "
    "'x,y,z', ' ', 'é', 'あ')",
    "INSERT INTO `{s}`.e VALUES (2, '', '', '', '', '', 0x00, 'zz', '', '', '', '')",
    "INSERT INTO `{s}`.e VALUES (3, NULL, '🍣 e\u0301 \u00e9', '\u00ff\u0081', NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL)",
    "INSERT INTO `{s}`.e VALUES (4, '  x', 'trail  ', 'N', 'N', 0x20, 0x4e, 'c', 'z,x', 'N', "
    "'N', 'N')",
]


def test_string_edge_values_compare_equal(sql, rschema, rdataset, make_config, bq_env):
    source, dest, plan = deliver(sql, rschema, rdataset, make_config, STRING_DDL, STRING_ROWS,
                                 sql_mode="")
    cmp = compare_content(source, dest, plan, table="e")
    assert cmp.equal, (cmp.summary(), repr(column_diffs(source, dest, plan, "e")))


JSON_DDL = "CREATE TABLE `{s}`.e (id INT PRIMARY KEY, j JSON)"
JSON_VALUES = ['{"a": {"b": [1, 2, {"c": null}]}}', '"\\u00e9"', '1.0', '1e3', 'null', '[]',
               '{}', '{"k": "a\\"b"}', '"\\ud83c\\udf63"', '-0', '12345678901234567890',
               '0.1', '{"b": 1, "a": 2}', '"é 🍣"', 'true', '"a\\/b"', '1E+2', '-1.50',
               '{"a":1,"a":2}', '"\\n\\t"', '"\\u0000"', '1.7976931348623157e308',
               '  [1 ,  2 ]  ', '"x"', '123456789012345678901234567890']


def test_json_edge_values_compare_equal(sql, rschema, rdataset, make_config, bq_env):
    ins = [f"INSERT INTO `{{s}}`.e VALUES ({i}, '{v.replace(chr(92), chr(92) * 2)}')"
           for i, v in enumerate(JSON_VALUES, 1)]
    source, dest, plan = deliver(sql, rschema, rdataset, make_config, JSON_DDL, ins)
    cmp = compare_content(source, dest, plan, table="e")
    assert cmp.equal, (cmp.summary(), repr(column_diffs(source, dest, plan, "e")))


OTHER_DDL = """CREATE TABLE `{s}`.e (id INT PRIMARY KEY, blb LONGBLOB, g GEOMETRY, p POINT,
  f FLOAT, dbl DOUBLE)"""
OTHER_ROWS = [
    "INSERT INTO `{s}`.e VALUES (1, REPEAT(0xfe00, 600000), ST_GeomFromText('POINT(1 2)'), "
    "ST_GeomFromText('POINT(139.7 35.68)'), 1.1, 0.1)",
    "INSERT INTO `{s}`.e VALUES (2, '', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), NULL, "
    "-0.0, -0.0)",
    "INSERT INTO `{s}`.e VALUES (3, NULL, ST_GeomFromText('LINESTRING(0.1 0.2, 1e-7 12345678.9)')"
    ", ST_GeomFromText('POINT(-0.0 1e20)'), NULL, 1e308)",
]


def test_blob_spatial_float_compare_equal(sql, rschema, rdataset, make_config, bq_env):
    source, dest, plan = deliver(sql, rschema, rdataset, make_config, OTHER_DDL, OTHER_ROWS)
    cmp = compare_content(source, dest, plan, table="e")
    assert cmp.equal, (cmp.summary(), repr(column_diffs(source, dest, plan, "e")))
