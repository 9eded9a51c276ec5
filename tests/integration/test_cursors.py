"""Cursor values that used to make deliveries diverge from the source, on the real MariaDB and the
emulator: zero-in-date and invalid cursor values (never a NULL watermark, each row in exactly one
pass), DATETIME cursors across a DST fall-back (the repeated hour is re-read), and cursor types
hakobu cannot order like MySQL does (refused by `hakobu validate` and planning).

Every test changes existing rows and compares delivered content (hakobu.reconcile.diff_table), so
the nightly key reconcile cannot hide a broken read."""

import datetime as dt
import re

import pyarrow as pa
import pytest

from hakobu.errors import SchemaError
from hakobu.planning import plan_for
from hakobu.reconcile import diff_table
from resources.bigquery_client import BigQuerySettings
from resources.mysql_source import iter_chunks
from tests.helpers import fresh_dataset, fresh_schema
from tests.live import destination_for, source_for, sync_tenant


@pytest.fixture
def cur_schema(sql):
    yield from fresh_schema(sql, "hk_cur")


@pytest.fixture
def cur_dataset(bq_client):
    yield from fresh_dataset(bq_client, "hk_cur")


def run(config, tenant="a"):
    return {r.table: r for r in sync_tenant(config, tenant)}


def diff(config, table, tenant="a"):
    t = config.tenant(tenant)
    source = source_for(config, t)
    plan = plan_for(source, t, t.table(table))
    return diff_table(source, destination_for(t, BigQuerySettings.from_env()), plan)


def watermark(config, table, tenant="a"):
    t = config.tenant(tenant)
    return destination_for(t, BigQuerySettings.from_env()).read_watermark(table)


def loose(sql, statement):
    """Write a value the default sql_mode refuses (zero dates, zero-in-date, invalid dates), as
    legacy applications and old MySQL modes do."""
    sql("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
    try:
        sql(statement)
    finally:
        sql("SET SESSION sql_mode = DEFAULT")


# -- 3. zero-in-date cursor values ---------------------------------------------------------------

EV = """\
- name: ev
  cursor: updated_at
  chunk_rows: 2
  query_rows: 4
"""


@pytest.mark.parametrize("ctype", ["DATETIME", "DATETIME(6)", "DATE"])
def test_zero_in_date_cursor_values_never_stall_a_table(sql, cur_schema, cur_dataset,
                                                        make_config, bq_env, ctype):
    """Zero-in-date values ('2026-04-00') sort between valid dates in MariaDB, so they used to
    be read by the main pass, delivered as NULL, and — at a query boundary — stored as the
    watermark (NULL, pk): nothing was delivered after it, ever. Now they are in the zeros pass
    (re-read every run) and the watermark always holds a real cursor value."""
    s = cur_schema
    sql(f"CREATE TABLE `{s}`.ev (id INT PRIMARY KEY, updated_at {ctype} NULL, "
        "note VARCHAR(20), INDEX ix_u (updated_at))")
    sql.many(f"INSERT INTO `{s}`.ev VALUES (%s, %s, 'v1')",
             [(i, dt.date(2026, 1, 1) + dt.timedelta(days=i)) for i in range(1, 13)])
    config = make_config({"a": (s, cur_dataset, EV)})
    assert run(config)["ev"].ok
    assert watermark(config, "ev").key == (dt.date(2026, 1, 13) if ctype == "DATE"
                                          else dt.datetime(2026, 1, 13), 12)
    # Above the watermark, in cursor order: 03-01 03-02 03-03 04-00 | 04-01 04-02 04-31 05-00
    # — with 4 rows per query both queries end on a value that is delivered as NULL.
    for i, v in {1: "2026-03-01", 2: "2026-03-02", 3: "2026-03-03", 4: "2026-04-00",
                 5: "2026-04-01", 6: "2026-04-02", 9: "2026-04-31", 7: "2026-05-00",
                 8: "0000-00-00", 11: "2026-00-10", 12: "0000-05-10"}.items():
        loose(sql, f"UPDATE `{s}`.ev SET updated_at = '{v}', note = 'v2' WHERE id = {i}")
    r = run(config)["ev"]
    assert r.ok, r.error
    wm = watermark(config, "ev")
    assert wm.key[0] is not None and wm.key[1:] == (6,), wm.key     # 2026-04-02, row 6
    d = diff(config, "ev")
    assert d.equal, d.summary() + f" different={d.different}"
    # later changes are delivered: a valid one, and a note on a row whose cursor stays 04-00
    sql(f"UPDATE `{s}`.ev SET updated_at = '2026-06-01', note = 'v3' WHERE id = 10")
    sql(f"UPDATE `{s}`.ev SET note = 'v3' WHERE id = 4")
    r = run(config)["ev"]
    assert r.ok, r.error
    # the zeros pass re-reads every run: 04-00 (row 4), 04-31, 05-00, 0000-00-00, 00-10, 0000-05-10
    assert r.null_cursor_rows == 6 and r.rows_read == 1 + 6
    d = diff(config, "ev")
    assert d.equal, d.summary() + f" different={d.different}"
    assert watermark(config, "ev").key[1:] == (10,)


ZOO = {  # id: (value, expected pass) — every shape a DATE/DATETIME cursor can hold
    1: ("2026-01-05 10:00:00", "main"),
    2: ("2026-00-10", "zeros"), 3: ("2026-05-00", "zeros"), 4: ("2026-00-00", "zeros"),
    5: ("0000-00-00", "zeros"), 6: ("0000-05-10", "zeros"), 7: ("2026-02-30", "zeros"),
    8: ("2026-04-31", "zeros"), 9: ("0500-01-01", "zeros"),      # valid, below 1000-01-01
    10: (None, "nulls"), 11: ("2025-12-31 23:59:59.500000", "main"),
    12: ("2026-01-01 00:00:00", "main"), 13: ("2024-02-29", "main"), 14: ("2024-02-30", "zeros"),
    15: ("9999-12-31 23:59:59", "main"), 16: ("9999-12-00", "zeros"), 17: ("1000-01-01", "main"),
    18: ("2025-12-31 23:59:59", "main"), 19: ("2026-03-00 23:59:59", "zeros"),
}


@pytest.mark.parametrize("years", ["span", "walk", "scan"])
@pytest.mark.parametrize("ctype", ["DATETIME", "DATETIME(6)", "DATE"])
def test_each_cursor_row_is_in_exactly_one_pass(sql, cur_schema, mysql_server, monkeypatch,
                                                ctype, years):
    """main + nulls + zeros read every row exactly once, whatever the cursor holds; main never
    hands on a NULL cursor; the zeros pass is an index range (gaps between months of the years
    present), or a scan of the cursor index past MAX_GAP_YEARS years."""
    import resources.mysql_sql as hp
    from hakobu.config import Cluster, Tenant
    from resources.mysql_source import MySQLSource

    s = cur_schema
    sql(f"CREATE TABLE `{s}`.ev (id INT PRIMARY KEY, updated_at {ctype} NULL, "
        "note VARCHAR(20), INDEX ix_u (updated_at))")
    zoo = {i: v for i, v in ZOO.items() if years != "span" or i not in (15, 16, 17)}
    for i, (v, _) in zoo.items():
        loose(sql, f"INSERT INTO `{s}`.ev VALUES ({i}, {'NULL' if v is None else repr(v)}, 'x')")
    sql.many(f"INSERT INTO `{s}`.ev VALUES (%s, %s, 'filler')",   # so EXPLAIN is meaningful
             [(100 + i, dt.datetime(2026, 2, 1) + dt.timedelta(minutes=i)) for i in range(400)])
    sql(f"ANALYZE TABLE `{s}`.ev")
    if years == "scan":                 # more years than the zeros pass takes ranges for
        import resources.mysql_source as ms
        monkeypatch.setattr(ms, "MAX_GAP_YEARS", 2)
    cluster = Cluster(name="main", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    tenant = Tenant(tenant="t", cluster="main", source={"schema": s},
                    destination={"project": "hakobu-test", "dataset": "x"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                    tables=[{"name": "ev", "cursor": "updated_at", "chunk_rows": 3,
                             "query_rows": 5}])
    source = MySQLSource(cluster)
    try:
        plan = plan_for(source, tenant, tenant.tables[0])
        seen: dict[str, list[int]] = {}
        for pass_ in ("main", "nulls", "zeros"):
            batches = [b for b, _ in iter_chunks(source, plan, pass_, None, None)]
            rows = pa.concat_tables(batches) if batches else None
            seen[pass_] = rows.column("id").to_pylist() if rows else []
            if pass_ == "main":
                assert None not in rows.column("updated_at").to_pylist()
        ids = [i for p in seen.values() for i in p]
        assert sorted(ids) == sorted([*zoo, *range(100, 500)]), "a row read twice or never"
        for i, (_, want) in zoo.items():
            assert i in seen[want], (i, zoo[i], {p: i in v for p, v in seen.items()})
        # a first load reads the main pass's rows in primary-key order: the same partition
        first = pa.concat_tables([b for b, _ in iter_chunks(source, plan, "initial", None, None)])
        assert sorted(first.column("id").to_pylist()) == sorted(seen["main"])
        assert None not in first.column("updated_at").to_pylist()
        assert plan.cursor_years == {"span": (2024, 2025, 2026),
                                     "walk": (1000, 2024, 2025, 2026, 9999), "scan": None}[years]
        zeros_sql = hp.chunk_sql(plan, "zeros", None, None)
        [row] = sql("EXPLAIN " + zeros_sql)
        assert row[5] == "ix_u" and row[3] in {"range", "index"}, row
        if years == "scan":                 # the whole cursor index
            assert int(row[8]) >= 400, row
        else:                               # only the month gaps: the 400 fillers are skipped
            assert int(row[8]) < 100, row
    finally:
        source.dispose()


# -- 4. DATETIME cursors across a DST fall-back -----------------------------------------------

UTC = dt.timezone.utc


@pytest.fixture
def source_clock(monkeypatch):
    """Run the source's own sessions at a given instant: `SET timestamp = <unix>` in every
    session hakobu opens (SQLAlchemy's init_command and connectorx's pre-execution query both
    use resources.mysql_source.SESSION_INIT), so NOW() — and therefore upper_bound's clock —
    returns that instant. The real code path computes the bound; only the server's clock is
    set. Sources are rebuilt for each instant (init_command runs once per connection)."""
    import resources.mysql_sql as ms
    from tests.live import live_io

    real = ms.SESSION_INIT

    def reset():
        io = live_io()
        for src in list(io._sources.values()):
            src.dispose()
        io._sources.clear()
        io._gates.clear()

    def at(instant: dt.datetime) -> None:
        reset()
        monkeypatch.setattr(ms, "SESSION_INIT", f"{real}, timestamp = {instant.timestamp():.6f}")

    yield at
    reset()


def test_dst_fall_back_rows_of_the_repeated_hour_are_delivered_the_same_night(
        sql, cur_schema, cur_dataset, make_config, bq_env, source_clock):
    """America/New_York, 2025-11-02: 01:00-02:00 EDT, then 01:00-02:00 EST again. A watermark
    taken at 01:35 EDT is above rows stamped 01:10 EST forty minutes later: they used to be
    skipped for good. The first run after the clock went back re-reads from 01:00."""
    s = cur_schema
    ny = "America/New_York"
    from zoneinfo import ZoneInfo

    def civil(utc_hm: str) -> dt.datetime:
        t = dt.datetime.fromisoformat(f"2025-11-02T{utc_hm}:00+00:00")
        return t.astimezone(ZoneInfo(ny)).replace(tzinfo=None)

    def instant(utc_hm: str) -> dt.datetime:
        return dt.datetime.fromisoformat(f"2025-11-02T{utc_hm}:00+00:00")

    def stamp(i: int, utc_hm: str, note: str) -> None:
        sql(f"UPDATE `{s}`.orders SET updated_at = %s, note = %s WHERE id = %s",
            (civil(utc_hm), note, i))

    sql(f"CREATE TABLE `{s}`.orders (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "note VARCHAR(40), INDEX ix_u (updated_at))")
    sql.many(f"INSERT INTO `{s}`.orders VALUES (%s, %s, 'v1')",
             [(i, dt.datetime(2025, 11, 1, 10, 0) + dt.timedelta(minutes=i)) for i in range(1, 21)])
    config = make_config({"a": (s, cur_dataset, "- name: orders\n  cursor: updated_at\n"
                                                "  chunk_rows: 3\n")},
                         timezone=ny, lag=0)
    source_clock(instant("04:30"))                      # 00:30 EDT: the first load
    assert run(config)["orders"].mode == "initial"
    stamp(1, "05:20", "first pass 01:20 EDT")
    stamp(2, "05:20", "first pass 01:20 EDT")
    stamp(3, "05:35", "first pass 01:35 EDT")
    source_clock(instant("05:40"))                      # 01:40 EDT
    r = run(config)["orders"]
    assert r.rows_read == 3 and "reread_from_dst_fold" not in r.bound
    assert watermark(config, "orders").key == (dt.datetime(2025, 11, 2, 1, 35), 3)
    stamp(4, "06:10", "second pass 01:10 EST")          # below the watermark in civil time
    stamp(5, "06:20", "second pass 01:20 EST")
    source_clock(instant("06:30"))                      # 01:30 EST, the same night
    r = run(config)["orders"]
    assert r.ok, r.error
    d = diff(config, "orders")
    assert d.equal, d.summary() + f" different={d.different}"
    assert r.bound.get("reread_from_dst_fold", "").startswith("2025-11-02 00:59:59.999999")
    stamp(6, "06:50", "second pass 01:50 EST")
    source_clock(instant("07:30"))                      # 02:30 EST: the repeat is over
    r = run(config)["orders"]
    assert "reread_from_dst_fold" in r.bound            # the watermark (01:20) is in the span
    d = diff(config, "orders")
    assert d.equal, d.summary() + f" different={d.different}"
    stamp(7, "07:45", "02:45 EST")
    source_clock(instant("08:00"))
    run(config)
    assert watermark(config, "orders").key == (dt.datetime(2025, 11, 2, 2, 45), 7)
    source_clock(instant("08:30"))                      # past the span: no re-read any more
    r = run(config)["orders"]
    assert r.rows_read == 0 and "reread_from_dst_fold" not in r.bound, r.bound
    d = diff(config, "orders")
    assert d.equal, d.summary()
    rows = {row[0]: row[1] for row in sql(f"SELECT id, note FROM `{s}`.orders WHERE id <= 7")}
    assert rows[4] == "second pass 01:10 EST"


# -- 5. cursor types hakobu cannot order like MySQL -------------------------------------------

REFUSED = {"c_varchar": "VARCHAR(20)", "c_char": "CHAR(8)", "c_text": "TEXT",
           "c_enum": "ENUM('b','a')", "c_set": "SET('x','y')", "c_varbinary": "VARBINARY(16)",
           "c_float": "FLOAT", "c_double": "DOUBLE", "c_time": "TIME", "c_year": "YEAR",
           "c_bit": "BIT(8)", "c_json": "JSON"}
ACCEPTED = {"c_int": "INT", "c_ubig": "BIGINT UNSIGNED", "c_dec": "DECIMAL(12,2)",
            "c_date": "DATE", "c_dt": "DATETIME(3)", "c_ts": "TIMESTAMP(6) NULL"}


def test_string_and_other_unorderable_cursors_are_refused(sql, cur_schema, cur_dataset,
                                                          make_config, bq_env, capsys):
    """MySQL compares strings by collation ('a' = 'A ' under utf8mb4_general_ci, PAD SPACE),
    Python and Arrow by code point, so a keyset or watermark on a VARCHAR could skip rows; floats
    have no exact successor. Such cursors are refused with the file, table, column and what to
    do — by `hakobu validate` before any run, and by the run's planning (the other tables
    load)."""
    from hakobu.cli import main

    s = cur_schema
    tables = ""
    for col, ctype in {**REFUSED, **ACCEPTED}.items():
        prefix = "(8)" if ctype in ("TEXT", "JSON") else ""
        sql(f"CREATE TABLE `{s}`.t_{col} (id INT PRIMARY KEY, {col} {ctype}, "
            f"INDEX ix ({col}{prefix}))")
        tables += f"- name: t_{col}\n  cursor: {col}\n"
    sql(f"INSERT INTO `{s}`.t_c_varchar VALUES (1, 'a'), (2, 'B'), (3, 'b ')")
    config = make_config({"a": (s, cur_dataset, tables)})
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    for col in REFUSED:
        with pytest.raises(SchemaError) as exc:
            plan_for(source, tenant, tenant.table(f"t_{col}"))
        e = exc.value
        assert type(e).__name__ == "CursorTypeError", (col, e)
        assert e.tenant == "a" and e.table == f"t_{col}" and f"{col!r}" in e.message
        assert "a.yaml" in e.hint and "remove `cursor:`" in e.hint, e.hint
    for col in ACCEPTED:
        assert plan_for(source, tenant, tenant.table(f"t_{col}")).cursor == col
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    for col, ctype in REFUSED.items():
        assert re.search(rf"a\.yaml:\d+: a/t_{col}: cursor column '{col}'", err), err
    assert "c_int" not in err and "c_dec" not in err
    results = {r.table: r for r in sync_tenant(config, "a", tables=["t_c_varchar", "t_c_int"])}
    assert not results["t_c_varchar"].ok and "cannot be a cursor" in results["t_c_varchar"].error
    assert results["t_c_int"].ok, results["t_c_int"].error
