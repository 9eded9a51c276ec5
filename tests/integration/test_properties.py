"""Property-based tests of value conversion (hypothesis), checked against the real server where
the server is the judge."""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakobu.plan import keyset_after
from hakobu.sqlquote import mysql_literal, quote_ident
from hakobu.state import Watermark
from hakobu.types import ColumnInfo, column_spec, conform, python_column

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=40)
datetimes = st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31))
decimals = st.decimals(min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"),
                       places=2, allow_nan=False, allow_infinity=False)
key_values = st.one_of(st.integers(-2**63, 2**64 - 1), decimals, datetimes, st.dates(), texts,
                       st.binary(max_size=20))
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(st.lists(key_values, min_size=1, max_size=4))
def test_watermark_round_trips_every_key_type(key):
    wm = Watermark(tuple(key), 3, 10)
    back = Watermark.from_json(wm.to_json(), 3)
    assert back.key == tuple(key) and back.rows_total == 10


@SETTINGS
@given(value=st.one_of(st.integers(-2**63, 2**63 - 1), decimals, texts, st.binary(max_size=30),
                       datetimes, st.dates()))
def test_literals_mean_exactly_their_value_to_the_server(sql, value):
    """The server reads each rendered literal back as the same value: keyset bounds compare
    exactly, and nothing in a string or byte value can escape its literal."""
    [[got]] = sql(f"SELECT {mysql_literal(value)}")
    if isinstance(value, str):
        got = got.decode("utf-8") if isinstance(got, bytes) else got
    elif isinstance(value, bytes):
        got = got.encode() if isinstance(got, str) else bytes(got)
    elif isinstance(value, dt.datetime):
        got = dt.datetime.fromisoformat(got) if isinstance(got, str) else got
    elif isinstance(value, dt.date):
        got = dt.date.fromisoformat(got) if isinstance(got, str) else got
    elif isinstance(value, Decimal):
        got = Decimal(got)
    assert got == value


@given(values=st.lists(st.one_of(st.none(), decimals), max_size=20))
def test_decimal_columns_are_exact(values):
    spec = column_spec(ColumnInfo("d", "decimal", "decimal(12,2)", True, 12, 2))
    arr = python_column(values, spec)
    out = conform(pa.table({"d": arr}), [spec]).column("d").to_pylist()
    assert out == values


@given(values=st.lists(st.one_of(st.none(), st.integers(0, 2**64 - 1)), max_size=20))
def test_bigint_unsigned_is_exact(values):
    spec = column_spec(ColumnInfo("u", "bigint", "bigint(20) unsigned", True))
    raw = pa.table({"u": pa.array(values, pa.uint64())})      # what connectorx returns
    assert conform(raw, [spec]).column("u").to_pylist() == [None if v is None else Decimal(v)
                                                            for v in values]


@given(values=st.lists(st.one_of(st.none(), datetimes), max_size=20),
       zone=st.sampled_from(["UTC", "Asia/Tokyo", "Asia/Kolkata"]))
def test_datetime_as_timestamp_is_the_instant_in_the_declared_zone(values, zone):
    from zoneinfo import ZoneInfo

    spec = column_spec(ColumnInfo("t", "datetime", "datetime(6)", True),
                       datetime_as="timestamp", source_timezone=zone)
    raw = pa.table({"t": pa.array(values, pa.timestamp("us"))})
    out = conform(raw, [spec]).column("t").to_pylist()
    want = [None if v is None else v.replace(tzinfo=ZoneInfo(zone)).astimezone(dt.timezone.utc)
            for v in values]
    assert out == want


@SETTINGS
@given(rows=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), min_size=1, max_size=40,
                     unique=True),
       after=st.tuples(st.integers(0, 5), st.integers(0, 40)))
def test_expanded_keyset_predicate_is_tuple_order(sql, schema, rows, after):
    """`c > x OR (c = x AND pk > y)` selects exactly the rows with (c, pk) > (x, y)."""
    t = f"{quote_ident(schema)}.kp"
    sql(f"CREATE TABLE IF NOT EXISTS {t} (c INT NOT NULL, pk INT NOT NULL, PRIMARY KEY (c, pk))")
    sql(f"DELETE FROM {t}")
    sql.many(f"INSERT INTO {t} VALUES (%s, %s)", rows)
    pred = keyset_after(("c", "pk"), after).replace("_src.", "")
    got = sorted(tuple(r) for r in sql(f"SELECT c, pk FROM {t} WHERE {pred}"))
    assert got == sorted(r for r in rows if r > after)
